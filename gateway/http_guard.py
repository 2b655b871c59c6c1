"""Slow and greedy HTTP clients (slowloris): deadlines, a connection budget, one log line per refusal.

uvicorn reads a request's headers and body for as long as the client cares to trickle them: it has a
keep-alive timeout between requests, but no deadline for the headers or the body of one, no bound on the
size of httptools' headers or of a body, and `limit_concurrency` is checked only once the headers are in
(and counts the media WebSockets of calls in progress too). So a few hundred clients that trickle headers
hold a few hundred file descriptors for as long as they like, and a real webhook then finds none.

`HttpGuard` closes that at the HTTP protocol, the only place that sees a request before its headers are
complete (an ASGI middleware is called after them):

- a header deadline (from the connection, or from the first byte of the next request on a keep-alive one)
  and a body deadline (from the end of the headers to the end of the body); a miss answers 408 and closes;
- a cap on the bytes of the headers (431) and of the body (413);
- a budget of HTTP connections (every connection that has not become a WebSocket). A new connection past
  it closes the oldest one that is only being read or idle (a slow client is the oldest such one: a real
  request arrives in one piece), and is itself refused (503) only when every one is busy being answered;
- one JSON line per refusal (`http_refused`, with its reason), at most `LOG_LINES_PER_S` a second and then
  one `http_refusals_suppressed` line a second with the counts, so a flood cannot flood the log drain too;
  and `gateway_http_refused_total{reason}`.

A connection leaves the guard when it becomes a WebSocket: uvicorn hands the socket to the WebSocket
protocol, so a call's media frames never run any of this code.
"""

from __future__ import annotations

import asyncio
import http
import resource
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import structlog
from prometheus_client import Counter
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.logs import RateLimitedLog

log = structlog.get_logger("gateway.http")

REFUSED = Counter(
    "gateway_http_refused",
    "HTTP connections closed by the slow-client guard, by reason (header_timeout, body_timeout, "
    "headers_too_large, body_too_large, bad_request, budget_evicted, budget_full)",
    ["reason"],
)
LOG_LINES_PER_S = 50  # refusal lines logged one by one each second; the rest are counted in one line
SCOPE_KEY = "gateway.refused"  # set in a request's ASGI scope when the guard closed its connection
FDS_RESERVED_PER_CONNECTION = 4  # the budget is at most a quarter of the process's file descriptors
MIN_CONNECTIONS = 16

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP client may take (README: `HTTP_HEADER_TIMEOUT_S`, `HTTP_BODY_TIMEOUT_S`,
    `HTTP_MAX_CONNECTIONS`). Twilio sends a webhook's headers and body at once, in a few kB."""

    header_timeout_s: float = 5.0
    body_timeout_s: float = 10.0
    max_connections: int = 256
    max_header_bytes: int = 32 * 1024
    max_body_bytes: int = 1024 * 1024
    keep_alive_s: int = 5  # idle between two requests (uvicorn's own timer)


def connection_budget(limits: HttpLimits) -> int:
    """The budget actually kept: the setting, but never more than a quarter of the file descriptors this
    process may open, so slow clients can never take the descriptors calls and real webhooks need."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return max(MIN_CONNECTIONS, min(limits.max_connections, soft // FDS_RESERVED_PER_CONNECTION))


class RefusalLog:
    """Counts each HTTP refusal and logs it: one JSON line each, up to `per_second`; past that, one
    `http_refusals_suppressed` line a second (`RateLimitedLog`)."""

    def __init__(self, per_second: int = LOG_LINES_PER_S) -> None:
        self._log = RateLimitedLog(log, "http_refusals_suppressed", per_second)

    def record(self, event: str, reason: str, **fields: Any) -> None:
        if event == "http_refused":
            REFUSED.labels(reason=reason).inc()
        self._log.warning(reason, event, reason=reason, **fields)

    def close(self) -> None:
        self._log.close()


class HttpGuard:
    """The budget and the refusal log shared by one server's HTTP connections."""

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        self.budget = connection_budget(self.limits)
        self.open: set[GuardedHttpProtocol] = set()
        # Connections only being read (headers, body) or idle between requests, oldest first: evictable.
        self.reading: dict[GuardedHttpProtocol, None] = {}
        self.refusals = RefusalLog()

    def protocol_class(self) -> type[GuardedHttpProtocol]:
        """The HTTP protocol uvicorn should run (its `http=`), bound to this guard."""
        return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"guard": self})

    def admit(self, conn: GuardedHttpProtocol) -> bool:
        if len(self.open) >= self.budget:
            victim = next(iter(self.reading), None)
            if victim is None:
                conn.refuse("budget_full", 503)
                return False
            victim.refuse("budget_evicted", 408 if victim.phase != IDLE else None)
        self.open.add(conn)
        self.reading[conn] = None
        return True

    def busy(self, conn: GuardedHttpProtocol) -> None:
        self.reading.pop(conn, None)

    def idle(self, conn: GuardedHttpProtocol) -> None:
        if conn in self.open:
            self.reading.pop(conn, None)
            self.reading[conn] = None  # to the end: the newest idle one

    def forget(self, conn: GuardedHttpProtocol) -> None:
        self.open.discard(conn)
        self.reading.pop(conn, None)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The ASGI app, with a client that leaves in the middle of its request (or whose connection the
        guard closed) logged as one line instead of raising ClientDisconnect into uvicorn's traceback."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return await app(scope, receive, send)
            try:
                await app(scope, receive, send)
            except ClientDisconnect:
                if SCOPE_KEY not in scope:  # the guard's own refusals are logged already
                    self.refusals.record(
                        "http_request_abandoned",
                        "client_disconnected",
                        peer=_peer(scope.get("client")),
                        path=str(scope.get("path", ""))[:100],
                    )

        return guarded


HEADERS, BODY, BUSY, IDLE, DONE = "headers", "body", "busy", "idle", "done"


def _peer(client: Any) -> str:
    return str(client[0]) if client else ""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, size caps and the guard's budget."""

    guard: ClassVar[HttpGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = HEADERS
        self._since = time.monotonic()  # when the current connection or request began
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # received while the headers are incomplete (a header never ended included)
        self._parsed_header_bytes = 0  # of the URL and the headers parsed so far
        self._body_bytes = 0
        self._refused: str | None = None

    # --- the connection -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.guard.admit(self):
            self._arm(self.guard.limits.header_timeout_s, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._leave()  # a WebSocket now: the call's limits apply, and none of this code runs per frame
        super().handle_websocket_upgrade()

    def shutdown(self) -> None:
        if self.phase in (HEADERS, BODY):  # a request still arriving: nothing to finish, close it now
            self._mark_refused("shutdown")
            self._leave()
            self.transport.close()
        else:
            super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self.phase in (HEADERS, IDLE):
            self._header_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if not self._refused:  # else a callback refused and stopped the parser
                self.refuse("bad_request", 400)
            return
        if self.phase == HEADERS and self._header_bytes > self.guard.limits.max_header_bytes:
            self.refuse("headers_too_large", 431)

    # --- the parser's callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._body_bytes = 0
        if self.phase != HEADERS:  # the next request on a keep-alive connection: its own header deadline
            if self.phase == IDLE:  # (a pipelined one, while the last is answered, is not evictable)
                self.guard.idle(self)
            self._enter(HEADERS)
            self._arm(self.guard.limits.header_timeout_s, "header_timeout")

    def on_url(self, url: bytes) -> None:
        self._header_bytes_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes_parsed(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _header_bytes_parsed(self, n: int) -> None:
        self._parsed_header_bytes += n
        if self._parsed_header_bytes > self.guard.limits.max_header_bytes:
            self.refuse("headers_too_large", 431)
            raise _Refused

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._header_bytes = self._parsed_header_bytes = 0
        if self.parser.should_upgrade() and self._should_upgrade():
            self._cancel()  # handle_websocket_upgrade follows
            return
        self._enter(BODY)
        self._arm(self.guard.limits.body_timeout_s, "body_timeout")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.guard.limits.max_body_bytes:
            self.refuse("body_too_large", 413)
            raise _Refused  # stops the parser (httptools raises HttpParserCallbackError in data_received)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.phase == BODY:
            self._cancel()
            self._enter(BUSY)
            self.guard.busy(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.phase == BUSY and not self.transport.is_closing():
            self._enter(IDLE)  # uvicorn's keep-alive timer bounds it; the budget may close it first
            self.guard.idle(self)

    # --- refusing -------------------------------------------------------------------------------------

    def refuse(self, reason: str, status: int | None) -> None:
        """Close this connection for `reason`, answering `status` if no response has started; one line."""
        if self._refused or self.transport.is_closing():
            return
        after_s = round(time.monotonic() - self._since, 2)
        phase = self.phase
        self._mark_refused(reason)
        self._leave()
        # In the body phase (or busy) the cycle is this request's; in the header phase, the last one's.
        answered = phase in (BODY, BUSY) and self.cycle is not None and self.cycle.response_started
        if status is not None and not answered:
            phrase = http.HTTPStatus(status).phrase
            self.transport.write(
                f"HTTP/1.1 {status} {phrase}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
            )
        self.transport.close()
        fields: dict[str, Any] = {"peer": _peer(self.client), "phase": phase, "after_s": after_s}
        if phase == BODY and self.scope is not None:
            fields["path"] = str(self.scope.get("path", ""))[:100]
            fields["body_bytes"] = self._body_bytes
        self.guard.refusals.record("http_refused", reason, **fields)

    def _mark_refused(self, reason: str) -> None:
        self._refused = reason
        if self.scope is not None:
            self.scope[SCOPE_KEY] = reason  # type: ignore[literal-required]
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app is told at once (its receive returns http.disconnect, its sends are dropped).
            cycle.disconnected = True
            cycle.message_event.set()

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self._since = time.monotonic()

    def _arm(self, delay: float, reason: str) -> None:
        self._cancel()
        self._deadline = self.loop.call_later(delay, self._expired, reason)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, reason: str) -> None:
        self._deadline = None
        self.refuse(reason, 408)

    def _leave(self) -> None:
        self._cancel()
        self.phase = DONE
        self.guard.forget(self)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request the guard has refused."""
