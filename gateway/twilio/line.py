"""Twilio Media Streams as a line: the first implementation of the `Call`'s line seam.

A thin asyncio layer over Starlette's WebSocket and the pure `twilio.protocol` core: Twilio's events become
the seam's neutral events (mu-law decoded to PCM16 at 8 kHz), the seam's actions become Twilio's `media`,
`mark` and `clear` messages, and a transfer goes through Twilio's REST API (`CallControl`), since the TwiML
after `</Connect>` is fixed when the webhook answers. Bad messages are logged and skipped here, so the Call
only ever sees events it can act on.
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.websockets import WebSocket, WebSocketState
from websockets.frames import CloseCode

from gateway.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, LineClosed, LineEvent, Played, Started
from gateway.deadline import Deadline
from gateway.twilio import protocol as tp
from gateway.twilio.rest import CallControl

log = structlog.get_logger("gateway.twilio")

# A send waits only while the socket's write buffer is full. Twilio reads continuously (it buffers minutes of
# playout), so a peer that has not read for this long is stalled or hostile: the call ends rather than hold a
# Live session open behind it.
SEND_STALL_S = 10.0
NARROWBAND = LineAudio(in_rate=8000, out_rate=8000)  # Media Streams carry mu-law 8 kHz both ways


class TwilioLine:
    """One Media Streams WebSocket (bidirectional, from `<Connect><Stream>`) as the caller's line."""

    audio = NARROWBAND

    def __init__(self, ws: WebSocket, control: CallControl | None = None) -> None:
        self._ws = ws
        self._control = control  # Twilio's REST API, for transfers; None without credentials
        self.stream_sid = ""
        self.call_sid = ""
        self.bad_messages = 0
        self._ended: Ended | None = None
        self._send_deadline = Deadline()  # bounds every send (a peer that stopped reading), one timer for all

    async def receive(self) -> LineEvent:
        """The next event from Twilio; `Ended` once the stream has stopped or the socket closed. Never
        raises for bad input: what cannot be read, or does not belong to this stream, is skipped."""
        while self._ended is None:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                self._ended = Ended("closed")
                break
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            try:
                event = tp.parse(data)
                sid = getattr(event, "stream_sid", "")
                if sid and self.stream_sid and sid != self.stream_sid:
                    raise tp.ProtocolError("streamSid is not this stream's")
            except tp.ProtocolError as exc:
                self._skipped(str(exc))
                continue
            if isinstance(event, tp.Media):
                return CallerAudio(ulaw_to_pcm16(event.payload))
            if isinstance(event, tp.Mark):
                return Played(event.name)
            if isinstance(event, tp.Dtmf):
                return Keypress(event.digit)
            if isinstance(event, tp.Stop):
                self._ended = Ended("stop")
                break
            if isinstance(event, tp.Start):
                if self.stream_sid:
                    self._skipped("a second start on the stream")
                    continue
                self.stream_sid, self.call_sid = event.stream_sid, event.call_sid
                params = event.custom_parameters  # our TwiML's <Parameter>s: From and To among them
                return Started(
                    event.call_sid,
                    event.stream_sid,
                    event.account_sid,
                    caller=params.get("From", ""),
                    called=params.get("To", ""),
                    moved=params.get("moved") == "1",
                    parameters=params,
                )
            # `connected` opens every stream and says nothing the call needs; `clear` is ours, not Twilio's.
        return self._ended

    def _skipped(self, error: str) -> None:
        self.bad_messages += 1
        # Every 100th after the first ten: a flood of junk must not become a flood of log lines.
        if self.bad_messages <= 10 or self.bad_messages % 100 == 0:
            log.warning("twilio_message_skipped", error=error, count=self.bad_messages)

    async def _send(self, text: str) -> None:
        try:
            await self._send_deadline.wait(self._ws.send_text(text), SEND_STALL_S)
        except TimeoutError:
            log.warning("twilio_peer_not_reading", stalled_s=SEND_STALL_S)
            raise LineClosed("the peer stopped reading") from None
        except Exception as exc:  # uvicorn raises several kinds once the peer is gone
            raise LineClosed(str(exc) or exc.__class__.__name__) from None

    async def play(self, pcm: bytes) -> None:
        await self._send(tp.media_message(self.stream_sid, pcm16_to_ulaw(pcm)))

    async def mark(self, name: str) -> None:
        await self._send(tp.mark_message(self.stream_sid, name))

    async def clear(self) -> None:
        await self._send(tp.clear_message(self.stream_sid))

    async def transfer(self, target: str) -> bool:
        if self._control is None:  # the toolbox refuses transfers without REST credentials: not reached
            raise RuntimeError("no Twilio REST credentials")
        return await self._control.transfer(self.call_sid, target)

    async def close(self, refusal: str | None = None) -> None:
        """Close our side; Twilio then runs the TwiML after </Connect> (a refused stream is closed with
        POLICY_VIOLATION and the reason)."""
        code = CloseCode.POLICY_VIOLATION if refusal else CloseCode.NORMAL_CLOSURE
        if self._ws.application_state == WebSocketState.CONNECTED:
            try:
                # A peer that stopped reading cannot take our close frame either: give up on it; the server's
                # keepalive then drops the connection.
                async with asyncio.timeout(SEND_STALL_S):
                    await self._ws.close(code=code, reason=refusal or "")
            except Exception:  # already gone (or stalled): nothing left to close
                pass
