"""Vonage on the call path: its answer and event webhooks, its line, upgrade check and Voice API client
(see gateway.carriers).

`/vonage/answer` (GET with the call in the query, Vonage's default, or POST with it as JSON, which `gateway
vonage configure` sets) is signed by Vonage with a JWT (gateway.vonage.signing), checked before anything
else; the answer is the NCCO of gateway.vonage.answer, whose websocket endpoint carries the call's uuid,
numbers and stream token as headers and asks Vonage to sign the upgrade with the same kind of JWT. So the
media socket is refused with HTTP 403 unless Vonage signed it, and becomes a call only once its
`websocket:connected` carries a valid, unused token for its uuid.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from gateway.carriers import Carrier, UpgradeRefusal, answer_call, media_url
from gateway.config import Settings
from gateway.stream_tokens import PARAMETER as TOKEN_PARAMETER
from gateway.vonage import signing
from gateway.vonage.answer import ANSWER_PATH, EVENT_PATH, MEDIA_PATH, connect_ncco, e164
from gateway.vonage.line import VonageLine
from gateway.vonage.rest import VonageControl

if TYPE_CHECKING:
    from gateway.app import Gateway

log = structlog.get_logger("gateway.vonage")

SIGNATURE_HINT = (
    "Vonage signs with the account's signature secret: VONAGE_SIGNATURE_SECRET must be it (Dashboard > "
    "Settings), and the application must have signed callbacks on (`gateway vonage configure` turns them on)"
)
MAX_BODY_BYTES = 16 * 1024  # Vonage's answer and event bodies are well under 2 kB


def signature_refusal(gw: Gateway, authorization: str | None, body: bytes = b"") -> str | None:
    """Why a request is not Vonage's (no JWT, a bad one, a body not the one signed), or None."""
    vonage = gw.settings.vonage
    if not vonage.signature_secret:
        return (
            None
            if gw.unsigned_ok("vonage", "VONAGE_SIGNATURE_SECRET")
            else "VONAGE_SIGNATURE_SECRET is not set"
        )
    try:
        signing.verify(authorization, vonage.signature_secret, time.time(), body, api_key=vonage.api_key)
    except signing.SignatureError as exc:
        return str(exc)
    return None


async def _signed_params(gw: Gateway, request: Request, what: str) -> dict[str, Any] | Response:
    """The webhook's values (the query of a GET, the JSON body of a POST) once its JWT is checked, or the
    answer that refuses it."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return Response("body too large", status_code=413)
    if (refusal := signature_refusal(gw, request.headers.get("authorization"), body)) is not None:
        gw.refusals.refused(
            what,
            "signature",
            f"{what}_signature_rejected",
            carrier="vonage",
            why=refusal,
            hint=SIGNATURE_HINT,
        )
        return Response("invalid signature", status_code=403)
    if request.method == "GET" or not body:
        return dict(request.query_params)
    try:
        params = json.loads(body)
    except ValueError:
        return Response("the body must be JSON", status_code=400)
    return params if isinstance(params, dict) else Response("the body must be a JSON object", status_code=400)


async def answer(request: Request) -> Response:
    """Vonage's answer webhook: an NCCO that connects the call to `/vonage/media` at 16 kHz."""
    gw: Gateway = request.app.state.gateway
    params = await _signed_params(gw, request, "webhook")
    if isinstance(params, Response):
        return params
    uuid = str(params.get("uuid") or "")[:64]
    if gw.drain.active:  # shutting down: Vonage asks the fallback answer URL (configure sets it to ours)
        log.info("call_sent_elsewhere", call_sid=uuid, reason="draining", carrier="vonage")
        return Response("draining", status_code=503, headers={"Retry-After": "1"})
    if not uuid:
        return Response("uuid is required", status_code=400)
    caller, called = str(params.get("from") or "")[:64], str(params.get("to") or "")[:64]
    decided = answer_call(gw, "vonage", uuid, e164(called))
    if decided.kind == "busy":  # an NCCO with nothing to do ends the call at once
        return JSONResponse([])
    if decided.kind == "replayed":
        return Response("this call was answered already", status_code=409)
    headers = {"uuid": uuid, "from": caller, "to": called, TOKEN_PARAMETER: decided.token}
    if params.get("conversation_uuid"):
        headers["conversation_uuid"] = str(params["conversation_uuid"])[:64]
    signed = bool(gw.settings.vonage.signature_secret)
    return JSONResponse(connect_ncco(media_url(gw, request, gw.routed(MEDIA_PATH)), headers, called, signed))


async def event(request: Request) -> Response:
    """Vonage's event webhook (the call's progress): signed like the answer; logged."""
    gw: Gateway = request.app.state.gateway
    params = await _signed_params(gw, request, "event")
    if isinstance(params, Response):
        return params
    log.info(
        "vonage_call_event",
        call_sid=str(params.get("uuid", ""))[:64],
        status=str(params.get("status", ""))[:32],
    )
    return Response(status_code=204)


def upgrade_refusal(gw: Gateway, ws: WebSocket) -> UpgradeRefusal | None:
    """Vonage signs the upgrade (our NCCO asks it to, `authorization`): unsigned, it is refused."""
    refusal = signature_refusal(gw, ws.headers.get("authorization"))
    if refusal is None:
        return None
    return UpgradeRefusal("signature", "stream_signature_rejected", {"why": refusal, "hint": SIGNATURE_HINT})


def line(ws: WebSocket, gw: Gateway) -> VonageLine:
    control = gw.controls.get("vonage")
    return VonageLine(ws, control if isinstance(control, VonageControl) else None)


def control(settings: Settings) -> VonageControl | None:
    vonage = settings.vonage
    if not (vonage.application_id and vonage.private_key):
        return None
    jwt = signing.ApplicationJwt(vonage.application_id, vonage.private_key)
    return VonageControl(jwt, base_url=vonage.api_base_url)


VONAGE = Carrier(
    name="vonage",
    answer_path=ANSWER_PATH,
    answer=answer,
    media_path=MEDIA_PATH,
    line=line,
    upgrade_refusal=upgrade_refusal,
    control=control,
    routes=(
        Route(ANSWER_PATH, answer, methods=["GET"]),  # Vonage's default answer method (POST: all_routes)
        Route(EVENT_PATH, event, methods=["GET", "POST"]),
    ),
)
