"""The Twilio side of a call: a Media Streams WebSocket, speaking typed events.

A thin asyncio layer over Starlette's WebSocket and the pure `twilio_protocol` core. Bad messages are logged
and skipped here, so the Call only ever sees events it can act on.
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.websockets import WebSocket, WebSocketState

from gateway.twilio import protocol as tp

log = structlog.get_logger("gateway.twilio")

# A send waits only while the socket's write buffer is full. Twilio reads continuously (it buffers minutes of
# playout), so a peer that has not read for this long is stalled or hostile: the call ends rather than hold a
# Live session open behind it.
SEND_STALL_S = 10.0


class TwilioClosed(Exception):
    """The Twilio WebSocket is gone (the caller hung up, or Twilio dropped the stream)."""


class TwilioStream:
    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self.stream_sid = ""
        self.bad_messages = 0

    async def receive(self) -> tp.TwilioEvent | None:
        """The next event Twilio sent, or None once the socket has closed. Never raises for bad input."""
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            try:
                event = tp.parse(data)
                sid = getattr(event, "stream_sid", "")
                if sid and self.stream_sid and sid != self.stream_sid:
                    raise tp.ProtocolError("streamSid is not this stream's")
            except tp.ProtocolError as exc:
                self.bad_messages += 1
                # Every 100th after the first ten: a flood of junk must not become a flood of log lines.
                if self.bad_messages <= 10 or self.bad_messages % 100 == 0:
                    log.warning("twilio_message_skipped", error=str(exc), count=self.bad_messages)
                continue
            return event

    async def _send(self, text: str) -> None:
        try:
            async with asyncio.timeout(SEND_STALL_S):
                await self._ws.send_text(text)
        except TimeoutError:
            log.warning("twilio_peer_not_reading", stalled_s=SEND_STALL_S)
            raise TwilioClosed("the peer stopped reading") from None
        except Exception as exc:  # uvicorn raises several kinds once the peer is gone
            raise TwilioClosed(str(exc) or exc.__class__.__name__) from None

    async def send_media(self, ulaw: bytes) -> None:
        await self._send(tp.media_message(self.stream_sid, ulaw))

    async def send_mark(self, name: str) -> None:
        await self._send(tp.mark_message(self.stream_sid, name))

    async def send_clear(self) -> None:
        await self._send(tp.clear_message(self.stream_sid))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close our side; Twilio then runs the TwiML after </Connect>."""
        if self._ws.application_state == WebSocketState.CONNECTED:
            try:
                # A peer that stopped reading cannot take our close frame either: give up on it; the server's
                # keepalive then drops the connection.
                async with asyncio.timeout(SEND_STALL_S):
                    await self._ws.close(code=code, reason=reason)
            except Exception:  # already gone (or stalled): nothing left to close
                pass
