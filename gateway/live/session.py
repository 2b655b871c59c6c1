"""One WebSocket to Gemini Live (or the local backend): connect, set up, send, receive.

The protocol itself lives in `live.protocol`; this is the thin asyncio layer around a `websockets`
connection. The session knows whether it was opening, resuming or running, so a close is raised as what it
means for the call, never as a raw code to compare:

- `LiveConfigRejected`: the setup was refused (INVALID_DATA or POLICY_VIOLATION in answer to it), or the
  server says INVALID_DATA later. No new connection can help.
- `LiveHandleRejected`: a resuming setup was refused with POLICY_VIOLATION: the handle is unknown or
  expired. A fresh session loses the context, not the call.
- `LiveUnreachable`: no connection could be made or set up (network, HTTP status, timeout).
- `LiveConnectionLost`: a set-up connection closed for any other reason (a POLICY_VIOLATION once set up
  has been seen around tool calls: worth a new connection).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode
from websockets.protocol import State

from gateway.live import protocol as lp
from gateway.ws_frames import MaskKeys, masked_text_frame

log = structlog.get_logger("gateway.live")

# Gemini has been seen to answer pings only after 8 to 30 s: a tight ping timeout kills healthy sessions,
# while no pings at all would leave a dead TCP connection undetected for the whole call.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 60.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A peer that stops reading is seen only once the buffers between us fill: the kernel's send buffer is kept
# small (autotuning would let it grow to megabytes: minutes of caller audio), and a send that then waits for
# the peer longer than this gives the connection up.
SEND_BUFFER_BYTES = 64 * 1024  # about 3 s of caller audio on the wire
SEND_STALL_S = 2.0
CLOSE_TIMEOUT_S = 2.0  # a graceful close waits this long for the server's answer, then the socket goes
SETUP_REFUSALS = frozenset({CloseCode.INVALID_DATA, CloseCode.POLICY_VIOLATION})


class LiveError(Exception):
    """The Live connection failed or closed; `code` is the close code (or HTTP status) when there was one."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class LiveConfigRejected(LiveError):
    """Live refused the session's configuration: retrying the same setup cannot help."""


class LiveHandleRejected(LiveError):
    """Live refused the resumption handle (unknown or expired): a fresh session can carry on the call."""


class LiveUnreachable(LiveError):
    """No Live connection could be made or set up: the network, an HTTP refusal or a timeout."""


class LiveConnectionLost(LiveError):
    """A set-up Live connection closed or broke: a new connection resuming the session may carry on."""


class LiveSession:
    """A set-up Live session. Create with `await LiveSession.open(...)`; read with `receive()`."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        # Client messages sent on this connection, setup included (it is message 0): the index the next one
        # gets, as transparent resumption's `lastConsumedClientMessageIndex` counts them.
        self.next_index = 1
        self._keys = MaskKeys()
        transport = ws.transport
        self._high_water = transport.get_write_buffer_limits()[1]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)

    @classmethod
    async def open(
        cls,
        url: str,
        setup: dict[str, Any],
        *,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 15.0,
    ) -> LiveSession:
        """Connect, send `setup` and wait for `setupComplete`.

        Raises `LiveConfigRejected`, `LiveHandleRejected` (only when the setup resumes a session from a
        handle) or `LiveUnreachable`.
        """
        resuming = bool(setup.get("setup", {}).get("sessionResumption", {}).get("handle"))
        # The Developer API takes the key in a header; Vertex AI a bearer token (`headers`, from VertexAuth).
        headers = {**({"x-goog-api-key": api_key} if api_key else {}), **(headers or {})}
        try:
            async with asyncio.timeout(timeout_s):
                ws = await connect(
                    url,
                    additional_headers=headers,
                    ping_interval=PING_INTERVAL_S,
                    ping_timeout=PING_TIMEOUT_S,
                    max_size=MAX_MESSAGE_BYTES,
                    compression=None,  # audio does not deflate; compression would only cost CPU
                    open_timeout=timeout_s,
                    close_timeout=CLOSE_TIMEOUT_S,
                )
                session = cls(ws)
                try:
                    await ws.send(json.dumps(setup))
                    while True:
                        events = lp.parse_server_message(await ws.recv())
                        if any(isinstance(e, lp.SetupComplete) for e in events):
                            return session
                except BaseException:
                    await session.close()
                    raise
        except ConnectionClosed as exc:
            raise _setup_error(exc, resuming) from None
        except TimeoutError:
            raise LiveUnreachable(f"Live setup timed out after {timeout_s:.0f}s") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise LiveUnreachable(f"Live refused the connection: HTTP {status}", code=status) from None
        except (OSError, InvalidHandshake) as exc:
            raise LiveUnreachable(f"cannot connect to Live: {exc.__class__.__name__}: {exc}") from None
        except lp.LiveProtocolError as exc:
            raise LiveUnreachable(f"Live sent something unreadable during setup: {exc}") from None

    async def send(self, message: str) -> int:
        """Send one client message; returns its index on this connection. Raises `LiveConnectionLost` or
        `LiveConfigRejected` once closed, and `LiveConnectionLost` when the peer has stopped reading (the
        connection is then aborted)."""
        try:
            # Nothing is left in our buffer while the kernel takes every write: then a small message cannot
            # make the send wait, and no deadline is armed (the usual case, every frame of a healthy call).
            ws = self._ws
            if not ws.transport.get_write_buffer_size() and len(message) < self._high_water // 2:
                if (
                    ws.protocol.state is State.OPEN
                    and ws.send_in_progress is None
                    and not ws.protocol.extensions
                ):
                    # What `send` does for an open connection, without its context manager and websockets'
                    # frame object (`gateway.ws_frames`; sends are a call's largest item): a whole text frame
                    # straight to the socket. Once closing or closed, `send` below raises as it should.
                    try:
                        ws.transport.write(masked_text_frame(message.encode(), self._keys.next()))
                    except Exception as exc:  # the transport failed under us: as `send` would, lost
                        self.abort()
                        raise LiveConnectionLost(f"Live send failed: {exc!r}") from None
                else:
                    await ws.send(message)
            else:
                try:
                    async with asyncio.timeout(SEND_STALL_S):
                        await self._ws.send(message)
                except TimeoutError:
                    self.abort()
                    raise LiveConnectionLost(
                        f"Live stopped reading: a send waited {SEND_STALL_S:.0f}s"
                    ) from None
        except ConnectionClosed as exc:
            raise _running_error(exc) from None
        self.next_index += 1
        return self.next_index - 1

    async def send_audio(self, pcm: bytes, rate: int) -> int:
        return await self.send(lp.audio_message(pcm, rate))

    async def receive(self) -> list[lp.LiveEvent] | None:
        """The events of the next server message; None once the server has closed normally.

        Any other close raises `LiveConnectionLost` (or `LiveConfigRejected` for INVALID_DATA). Safe to
        cancel (a timer may interrupt it): no message is lost.
        """
        while True:
            try:
                data = await self._ws.recv()
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == CloseCode.NORMAL_CLOSURE:
                    return None
                raise _running_error(exc) from None
            try:
                return lp.parse_server_message(data)
            except lp.LiveProtocolError as exc:
                log.warning("live_message_skipped", error=str(exc))

    async def close(self) -> None:
        """Close gracefully; a server that does not answer within CLOSE_TIMEOUT_S is cut off."""
        await self._ws.close()

    def abort(self) -> None:
        """Drop the connection now (a peer that stopped reading cannot take a close frame either): whatever
        waits on it (a send, a receive) raises `LiveConnectionLost`."""
        self._ws.transport.abort()


def _close_of(exc: ConnectionClosed) -> tuple[int, str]:
    frame = exc.rcvd or exc.sent
    return (frame.code, frame.reason) if frame else (CloseCode.ABNORMAL_CLOSURE, "")


def _setup_error(exc: ConnectionClosed, resuming: bool) -> LiveError:
    """What a close in answer to a setup means."""
    code, reason = _close_of(exc)
    if resuming and code == CloseCode.POLICY_VIOLATION:
        return LiveHandleRejected(
            f"Live refused the resumption handle: {reason or 'no reason given'}", code, reason
        )
    if code in SETUP_REFUSALS:
        message = f"Live rejected the session configuration (close {code}): {reason or 'no reason given'}"
        return LiveConfigRejected(message, code, reason)
    return LiveUnreachable(
        f"Live closed during setup (close {code}{': ' + reason if reason else ''})", code, reason
    )


def _running_error(exc: ConnectionClosed) -> LiveError:
    """What a close of a set-up connection means: INVALID_DATA mid-call is the configuration (or an expired
    key), anything else is a break that a new connection may get over."""
    code, reason = _close_of(exc)
    if code == CloseCode.INVALID_DATA:
        message = f"Live rejected the session configuration (close {code}): {reason or 'no reason given'}"
        return LiveConfigRejected(message, code, reason)
    return LiveConnectionLost(
        f"Live connection closed (close {code}{': ' + reason if reason else ''})", code, reason
    )
