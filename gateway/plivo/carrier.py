"""Plivo on the call path: its answer URL, the transfer XML, its line, upgrade check and API client (see
gateway.carriers).

Every request Plivo makes carries its V3 signature (gateway.plivo.signing), checked against
`PUBLIC_URL` + the path (+ the query) Plivo requested, with the POST parameters. The answer's stream URL
carries the CallUUID and its stream token in its query; the upgrade is refused with HTTP 403 unless they
match (checked, not used up: the stream's `start` redeems the token) and, when Plivo signs the upgrade, unless
its signature does. The stream token exists only in an answer our signed webhook gave, so an unsigned
upgrade without one gets nothing.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from gateway.carriers import Carrier, UpgradeRefusal, answer_call, media_url
from gateway.config import Settings
from gateway.plivo import signing
from gateway.plivo.answer import (
    ANSWER_PATH,
    CALL_QUERY,
    FROM_QUERY,
    MEDIA_PATH,
    TO_QUERY,
    dial_xml,
    e164,
    hangup_xml,
    redirect_xml,
    stream_xml,
)
from gateway.plivo.line import PlivoLine
from gateway.plivo.rest import TRANSFER_PATH, PlivoControl
from gateway.stream_tokens import PARAMETER as TOKEN_PARAMETER

if TYPE_CHECKING:
    from gateway.app import Gateway

log = structlog.get_logger("gateway.plivo")

SIGNATURE_HINT = (
    "Plivo signs the URL it requested with the account's auth token: PUBLIC_URL must be the base of the "
    "application's answer URL, and PLIVO_AUTH_TOKEN the account's"
)
_E164 = re.compile(r"\+[1-9]\d{6,14}")


def _xml(document: str) -> Response:
    return Response(document, media_type="application/xml")


async def _signed_params(gw: Gateway, request: Request, what: str) -> dict[str, str] | Response:
    """The request's parameters (form and query) once its V3 signature is checked, or the 403 refusing it."""
    form = await request.form() if request.method == "POST" else {}
    params = {k: str(v) for k, v in form.items()}
    url = gw.public_base(request).rstrip("/") + request.url.path
    url += f"?{request.url.query}" if request.url.query else ""
    token = gw.settings.plivo.auth_token
    if token:
        nonce, given = (
            request.headers.get(signing.NONCE_HEADER),
            request.headers.get(signing.SIGNATURE_HEADER),
        )
        ok = signing.valid(token, request.method, url, nonce, given, params)
    else:
        ok = gw.unsigned_ok("plivo", "PLIVO_AUTH_TOKEN")
    if not ok:
        gw.refusals.refused(
            what, "signature", f"{what}_signature_rejected", carrier="plivo", url=url, hint=SIGNATURE_HINT
        )
        return Response("invalid signature", status_code=403)
    return {**dict(request.query_params), **params}


async def answer(request: Request) -> Response:
    """Plivo's answer URL: XML that streams the call to `/plivo/media` at 16 kHz, bidirectional."""
    gw: Gateway = request.app.state.gateway
    params = await _signed_params(gw, request, "webhook")
    if isinstance(params, Response):
        return params
    call_uuid = params.get("CallUUID", "")
    if gw.drain.active:  # this instance is shutting down: the call goes to another one
        log.info("call_sent_elsewhere", call_sid=call_uuid, reason="draining", carrier="plivo")
        return _xml(redirect_xml(gw.public_base(request).rstrip("/") + ANSWER_PATH))
    if not call_uuid:
        return Response("CallUUID is required", status_code=400)
    caller, called = params.get("From", "")[:64], params.get("To", "")[:64]
    decided = answer_call(gw, "plivo", call_uuid, e164(called))
    if decided.kind == "busy":
        return _xml(hangup_xml())
    if decided.kind == "replayed":
        return Response("this call was answered already", status_code=409)
    query = {CALL_QUERY: call_uuid, TOKEN_PARAMETER: decided.token, FROM_QUERY: caller, TO_QUERY: called}
    return _xml(stream_xml(media_url(gw, request, gw.routed(MEDIA_PATH), query)))


async def transfer(request: Request) -> Response:
    """The `aleg_url` of a transfer (gateway.plivo.rest): Plivo asks it, signed, what to do with the caller,
    and it answers: dial the number in its query."""
    gw: Gateway = request.app.state.gateway
    params = await _signed_params(gw, request, "webhook")
    if isinstance(params, Response):
        return params
    number = request.query_params.get("to", "")
    if not _E164.fullmatch(number):
        return Response("to must be an E.164 number", status_code=400)
    log.info("plivo_transfer_answered", call_sid=params.get("CallUUID", "")[:64])
    return _xml(dial_xml(number))


def upgrade_refusal(gw: Gateway, ws: WebSocket) -> UpgradeRefusal | None:
    """The stream URL's CallUUID and token (checked, not used up), and Plivo's signature when it sends one."""
    refusal = gw.tokens.check(ws.query_params.get(CALL_QUERY, ""), ws.query_params.get(TOKEN_PARAMETER))
    if refusal is not None:
        return UpgradeRefusal("token", "stream_token_rejected", {"detail": refusal})
    token, given = gw.settings.plivo.auth_token, ws.headers.get(signing.SIGNATURE_HEADER)
    if token and given is not None:
        url = media_url(gw, ws, ws.url.path, dict(ws.query_params))  # as requested: routed or not
        if not signing.valid(token, "GET", url, ws.headers.get(signing.NONCE_HEADER), given):
            return UpgradeRefusal(
                "signature", "stream_signature_rejected", {"url": url, "hint": SIGNATURE_HINT}
            )
    return None


def line(ws: WebSocket, gw: Gateway) -> PlivoLine:
    control = gw.controls.get("plivo")
    return PlivoLine(ws, control if isinstance(control, PlivoControl) else None, gw.public_base(ws))


def control(settings: Settings) -> PlivoControl | None:
    plivo = settings.plivo
    if not (plivo.auth_id and plivo.auth_token):
        return None
    return PlivoControl(plivo.auth_id, plivo.auth_token, base_url=plivo.api_base_url)


PLIVO = Carrier(
    name="plivo",
    answer_path=ANSWER_PATH,
    answer=answer,
    media_path=MEDIA_PATH,
    line=line,
    upgrade_refusal=upgrade_refusal,
    control=control,
    routes=(
        Route(ANSWER_PATH, answer, methods=["GET"]),  # Plivo's answer method may be GET (POST: all_routes)
        Route(TRANSFER_PATH, transfer, methods=["GET", "POST"]),
    ),
)
