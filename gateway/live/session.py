"""One WebSocket to Gemini Live (or the local backend): connect, set up, send, receive.

The protocol itself lives in `live_protocol`; this is the thin asyncio layer around a `websockets`
connection. Close codes are surfaced, not swallowed: 1007 and 1008 mean the configuration is wrong and
retrying cannot help, so they raise `LiveRejected` with the server's reason.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gateway.live import protocol as lp

log = structlog.get_logger("gateway.live")

# Gemini has been seen to answer pings only after 8 to 30 s: a tight ping timeout kills healthy sessions,
# while no pings at all would leave a dead TCP connection undetected for the whole call.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 60.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
CONFIG_CLOSE_CODES = frozenset({1007, 1008})


class LiveError(Exception):
    """The Live connection failed or closed."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason

    @property
    def is_config_error(self) -> bool:
        return self.code in CONFIG_CLOSE_CODES


class LiveSession:
    """A set-up Live session. Create with `await LiveSession.open(...)`; iterate `events()`."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @classmethod
    async def open(
        cls,
        url: str,
        setup: dict[str, Any],
        *,
        api_key: str | None = None,
        timeout_s: float = 15.0,
    ) -> LiveSession:
        """Connect, send `setup` and wait for `setupComplete`. Raises LiveError (with the close code)."""
        headers = {"x-goog-api-key": api_key} if api_key else {}
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
            raise _closed_error(exc) from None
        except TimeoutError:
            raise LiveError(f"Live setup timed out after {timeout_s:.0f}s") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise LiveError(f"Live refused the connection: HTTP {status}", code=status) from None
        except (OSError, InvalidHandshake) as exc:
            raise LiveError(f"cannot connect to Live: {exc.__class__.__name__}: {exc}") from None
        except lp.LiveProtocolError as exc:
            raise LiveError(f"Live sent something unreadable during setup: {exc}") from None

    async def send(self, message: str) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise _closed_error(exc) from None

    async def send_audio(self, pcm: bytes, rate: int) -> None:
        await self.send(lp.audio_message(pcm, rate))

    async def receive(self) -> list[lp.LiveEvent] | None:
        """The events of the next server message; None once the server has closed normally (1000).

        Any other close raises LiveError. Safe to cancel (a timer may interrupt it): no message is lost.
        """
        while True:
            try:
                data = await self._ws.recv()
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == 1000:
                    return None
                raise _closed_error(exc) from None
            try:
                return lp.parse_server_message(data)
            except lp.LiveProtocolError as exc:
                log.warning("live_message_skipped", error=str(exc))

    async def close(self) -> None:
        await self._ws.close()


def _closed_error(exc: ConnectionClosed) -> LiveError:
    frame = exc.rcvd or exc.sent
    code = frame.code if frame else 1006
    reason = frame.reason if frame else ""
    if code in CONFIG_CLOSE_CODES:
        message = f"Live rejected the session configuration (close {code}): {reason or 'no reason given'}"
    else:
        message = f"Live connection closed (close {code}{': ' + reason if reason else ''})"
    return LiveError(message, code=code, reason=reason)
