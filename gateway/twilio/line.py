"""Twilio Media Streams as a line: the first implementation of the `Call`'s line seam.

A thin asyncio layer over Starlette's WebSocket and the pure `twilio.protocol` core: Twilio's events become
the seam's neutral events (mu-law decoded to PCM16 at 8 kHz), the seam's actions become Twilio's `media`,
`mark` and `clear` messages, and a transfer goes through Twilio's REST API (`CallControl`), since the TwiML
after `</Connect>` is fixed when the webhook answers. Bad messages are logged and skipped here, so the Call
only ever sees events it can act on.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from gateway.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, LineEvent, Played, Started
from gateway.socket_line import SocketLine
from gateway.twilio import protocol as tp
from gateway.twilio.rest import CallControl

NARROWBAND = LineAudio(in_rate=8000, out_rate=8000, mulaw=True)  # Media Streams carry mu-law 8 kHz both ways


class TwilioLine(SocketLine):
    """One Media Streams WebSocket (bidirectional, from `<Connect><Stream>`) as the caller's line. Closing
    it (`SocketLine.close`) makes Twilio run the TwiML after </Connect>."""

    audio = NARROWBAND
    carrier = "twilio"

    def __init__(self, ws: WebSocket, control: CallControl | None = None) -> None:
        super().__init__(ws)
        self._control = control  # Twilio's REST API, for transfers; None without credentials
        self.stream_sid = ""
        self.call_sid = ""
        self._ended: Ended | None = None

    async def receive(self) -> LineEvent:
        """The next event from Twilio; `Ended` once the stream has stopped or the socket closed. Never
        raises for bad input: what cannot be read, or does not belong to this stream, is skipped."""
        while self._ended is None:
            data = await self._next_message()
            if data is None:
                self._ended = Ended("closed")
                break
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
