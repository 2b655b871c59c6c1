"""Carriers: what each phone carrier brings to the one call path, and the media story they share.

Every carrier tells the same story (see `media_endpoint`): its answer webhook says "stream the call to us"
with a stream token; its media WebSocket upgrade is authenticated the carrier's way (or refused with HTTP
403 before anything is spent); the socket holds an unverified place until the carrier's start event; the
stream token is redeemed; then `Gateway.run_call(line, start)` carries the call. A carrier supplies only
what differs, in a `Carrier`: its answer route, its media route, its line class and its upgrade check,
and the REST client that hangs up and transfers its calls.

Twilio's description is built in `gateway.app` (its webhook lives there); the others live beside their
protocol cores, one package per carrier (`gateway/telnyx/`, `gateway/signalwire/`, ...), and are listed
in `more_carriers`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlencode, urlsplit

import structlog
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway import dispatch
from gateway.call.line import Line

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.config import Settings

log = structlog.get_logger("gateway.carriers")


@dataclass(frozen=True, slots=True)
class UpgradeRefusal:
    """Why a media upgrade is refused: the `reason` label of the refusal metric, the log line's event, and
    what the log line says besides (never a secret)."""

    reason: str
    event: str
    fields: dict[str, str] = field(default_factory=dict)


class CallControl(Protocol):
    """A carrier's REST client for calls in progress (hang-up, transfer), opened at start-up and closed at
    shutdown. Each carrier's line calls its own client's methods, with the ids that carrier's API takes."""

    async def close(self) -> None: ...


class CarrierLine(Line, Protocol):
    """A carrier's line: the `Line` the `Call` sees, made for one accepted media socket."""


LineFactory = Callable[[WebSocket, "Gateway"], CarrierLine]
UpgradeCheck = Callable[["Gateway", WebSocket], UpgradeRefusal | None]
ControlFactory = Callable[["Settings"], CallControl | None]
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Carrier:
    """One carrier on the call path.

    name: `Started.carrier`, the `carrier` of call records, the prefix of its routes and settings.
    answer_path, answer: the webhook the carrier asks what to do with a call (returns the carrier's markup).
    media_path: the WebSocket the carrier streams the call on.
    line: makes the line of one media socket (before its start event; the line reads the start).
    upgrade_refusal: the carrier's authentication of the upgrade, checked before it is accepted.
    control: the carrier's REST client for hang-up and transfer, None without credentials.
    routes: any other HTTP routes the carrier needs (status callbacks, ...).
    answer_methods: the HTTP methods of the answer webhook (POST; GET too for a carrier that fetches so).
    """

    name: str
    answer_path: str
    answer: Endpoint
    media_path: str
    line: LineFactory
    upgrade_refusal: UpgradeCheck
    control: ControlFactory = lambda _settings: None
    routes: tuple[BaseRoute, ...] = ()
    answer_methods: tuple[str, ...] = ("POST",)  # a carrier that fetches its answer with GET says so

    def all_routes(self) -> list[BaseRoute]:
        routes = [
            Route(self.answer_path, self.answer, methods=list(self.answer_methods)),
            WebSocketRoute(self.media_path, media_endpoint(self)),
            *self.routes,
        ]
        return routes + [dispatch.routed_route(route) for route in routes]


def media_endpoint(carrier: Carrier) -> Callable[[WebSocket], Awaitable[None]]:
    """The media WebSocket of `carrier`: a call once its start carries a valid stream token."""

    async def media(ws: WebSocket) -> None:
        gw: Gateway = ws.app.state.gateway
        settings = gw.settings
        # Both refusals come before accept, so the upgrade is answered with HTTP 403 and nothing is spent.
        if (refusal := carrier.upgrade_refusal(gw, ws)) is not None:
            await gw.refuse_upgrade(ws, refusal.reason, refusal.event, carrier=carrier.name, **refusal.fields)
            return
        if gw.calls_in_progress() >= settings.max_concurrent_calls:  # no stream could become a call now
            await gw.refuse_upgrade(
                ws, "busy", "stream_rejected_busy", max_calls=settings.max_concurrent_calls
            )
            return
        # Until its start is checked the socket holds a place among the unverified ones, not among the calls.
        line = carrier.line(ws, gw)
        start = await gw.receive_start(ws, line)
        if isinstance(start, str):
            await gw.refuse_stream(ws, line, start)
            return
        if (admission := gw.admit_stream(start)) is not None:
            await gw.refuse_stream(ws, line, *admission)
            return
        if start.carrier != carrier.name:  # the record says which carrier carried the call, whatever the line
            start = dataclasses.replace(start, carrier=carrier.name)
        await gw.run_call(line, start)

    media.__name__ = f"{carrier.name}_media"
    return media


def more_carriers() -> tuple[Carrier, ...]:
    """The carriers beside Twilio, each in its own package (imported here, so a carrier's module is loaded
    only by the app)."""
    from gateway.plivo.carrier import PLIVO
    from gateway.signalwire.carrier import SIGNALWIRE
    from gateway.telnyx.carrier import TELNYX
    from gateway.vonage.carrier import VONAGE

    return (TELNYX, SIGNALWIRE, VONAGE, PLIVO)


# --- what every carrier's answer webhook decides alike ---


@dataclass(frozen=True, slots=True)
class Answer:
    """What a webhook answers a call: `stream` it to us with `token`, or refuse it: `busy` (the call limit;
    the caller hears a busy tone) or `replayed` (this CallSid's answer was used already: HTTP 409)."""

    kind: Literal["stream", "busy", "replayed"]
    token: str = ""


def answer_call(gw: Gateway, carrier: str, call_sid: str, called: str, moved: bool = False) -> Answer:
    """The story of Twilio's voice webhook, for any carrier: one CallSid, one answer (a retry gets the same
    token, a replay once it was used is refused), busy at the call limit, and the agent's Live session set
    up while the phone rings."""
    previous = gw.tokens.previous(call_sid)
    if moved and previous is not None and previous.state in ("used", "expired") and not previous.moved:
        previous = None  # answered here before, its stream went to another instance, which moved it here
    if previous is not None and previous.state == "busy":
        gw.refusals.refused("webhook", "busy", "call_rejected_busy", call_sid=call_sid, repeated=True)
        return Answer("busy")
    if previous is not None and previous.state != "waiting":
        gw.refusals.refused(
            "webhook", "replayed", "webhook_replay_refused", call_sid=call_sid, state=previous.state
        )
        return Answer("replayed")
    if previous is None and gw.at_capacity(call_sid):
        gw.tokens.answered_busy(call_sid)
        max_calls = gw.settings.max_concurrent_calls
        gw.refusals.refused("webhook", "busy", "call_rejected_busy", call_sid=call_sid, max_calls=max_calls)
        return Answer("busy")
    if previous is not None:  # asked again while its stream is on the way (a retry): the same answer
        gw.refusals.refused("webhook", "repeated", "webhook_repeated", call_sid=call_sid)
        return Answer("stream", previous.token)
    token = gw.tokens.issue(call_sid, moved=moved)
    if not moved:  # a moved call resumes its own session: one set up now would not know the conversation
        gw.prewarm_call({"CallSid": call_sid, "To": called})
    log.info("call_answered", call_sid=call_sid, carrier=carrier)
    return Answer("stream", token)


def media_url(gw: Gateway, conn: HTTPConnection, path: str, query: Mapping[str, str] | None = None) -> str:
    """The wss:// URL of a carrier's media route, from PUBLIC_URL (or the request's host in development),
    with `query` (for carriers that carry per-call values in the URL)."""
    base = urlsplit(gw.public_base(conn))
    scheme = "wss" if base.scheme == "https" else "ws"
    url = f"{scheme}://{base.netloc}{base.path.rstrip('/')}{path}"
    return f"{url}?{urlencode(query)}" if query else url


def service_url(given: str | None, public_url: str | None, carrier: str) -> str:
    """The service's public base URL for a carrier's `configure` command: --url, else PUBLIC_URL. Plain
    http:// is allowed (a tunnel, a stand-in) with a warning: media streams need wss:// in production."""
    import sys

    url = given or public_url
    if not url or not url.startswith(("https://", "http://")):
        raise ValueError(
            f"give --url https://your-host (or set PUBLIC_URL): where {carrier} reaches this service"
        )
    if url.startswith("http://"):
        print(
            f"gateway: warning: {url} is not https: {carrier} would send its webhooks in clear and cannot "
            "open a wss:// media stream; give an https:// URL in production",
            file=sys.stderr,
        )
    return url
