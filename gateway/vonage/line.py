"""A Vonage Voice API WebSocket as the call's line: wideband L16 at 16 kHz both ways.

Vonage's binary frames are already PCM16LE at 16 kHz, Live's own input rate, so the caller's audio reaches
Live untouched (no 8k->16k resampler) and the agent's 24 kHz needs only 24k->16k (`LineAudio(16000, 16000)`).
The agent's audio is cut into the whole 640-byte frames Vonage plays (`protocol.Framer`); a mark is Vonage's
`notify`, a clear its `clear` (see `gateway.vonage.protocol`), so the call knows what the caller has heard
exactly as on Twilio: `end_call` waits for the goodbye's notify, and barge-in clears Vonage's buffer.

Hang-up and transfer go through the Voice API (`VonageControl`): our side ending the call hangs it up there
(then closes the socket), a transfer replaces the call's NCCO with one that dials the target.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, LineEvent, Played, Started
from gateway.socket_line import MarkedSocketLine
from gateway.vonage import protocol as vp
from gateway.vonage.answer import e164
from gateway.vonage.rest import VonageControl

WIDEBAND = LineAudio(in_rate=vp.RATE, out_rate=vp.RATE)


class VonageLine(MarkedSocketLine):
    """One Vonage media WebSocket (our NCCO's `connect` to `/vonage/media`) as the caller's line."""

    carrier = "vonage"
    audio = WIDEBAND

    def __init__(self, ws: WebSocket, control: VonageControl | None = None) -> None:
        super().__init__(ws)
        self._control = control  # the Voice API, for hang-up and transfer; None without credentials
        self.call_sid = ""  # Vonage's call uuid, from our NCCO's headers
        self.called = ""
        self._ended: Ended | None = None
        self._transferred = False
        self._framer = vp.Framer()

    async def receive(self) -> LineEvent:
        """The next event; `Ended` once the socket has closed. Bad messages are skipped, never raised."""
        while self._ended is None:
            data = await self._next_or_played()
            if isinstance(data, Played):
                return data
            if data is None:
                self._ended = Ended("closed")
                break
            try:
                event = vp.parse(data)
            except vp.ProtocolError as exc:
                self._skipped(str(exc))
                continue
            if isinstance(event, vp.Audio):
                return CallerAudio(event.pcm)
            if isinstance(event, vp.Dtmf):
                return Keypress(event.digit)
            if isinstance(event, vp.Notified):
                self._answered(event.name)
                continue
            if isinstance(event, vp.Connected):
                if self.call_sid:
                    self._skipped("a second websocket:connected")
                    continue
                if event.rate != vp.RATE:
                    self._skipped(f"audio at {event.rate} Hz (our NCCO asks for {vp.RATE})")
                    continue
                return self._started(event.headers)
            # websocket:cleared: the marks it flushed were released when we sent the clear.
        return self._ended

    def _started(self, headers: dict[str, str]) -> Started:
        """Our NCCO's headers: the call's uuid (what the token is bound to and the Voice API takes)."""
        self.call_sid, self.called = headers.get("uuid", ""), e164(headers.get("to", ""))
        return Started(
            self.call_sid,
            stream_sid=headers.get("conversation_uuid", ""),
            caller=e164(headers.get("from", "")),
            called=self.called,
            parameters=headers,
            carrier="vonage",
        )

    async def play(self, pcm: bytes) -> None:
        for frame in self._framer.frames(pcm):
            self._queued(frame)
            await self._send(frame)

    async def mark(self, name: str) -> None:
        if (frame := self._framer.flush()) is not None:  # the turn's last frame, padded: it must play too
            self._queued(frame)
            await self._send(frame)
        self._mark_sent(name)
        await self._send(vp.notify_message(name))

    async def clear(self) -> None:
        self._framer.drop()
        self._cleared()
        await self._send(vp.clear_message())

    async def transfer(self, target: str) -> bool:
        if self._control is None:  # the toolbox refuses transfers without Voice API credentials
            raise RuntimeError("no Vonage Voice API credentials (VONAGE_APPLICATION_ID, VONAGE_PRIVATE_KEY)")
        self._transferred = await self._control.transfer(self.call_sid, target, self.called)
        return self._transferred

    async def close(self, refusal: str | None = None) -> None:
        """End our side: the Voice API hangs the call up (unless the caller already left, the call was
        transferred, or the stream is refused), then the socket closes, which ends our NCCO anyway."""
        control = self._control
        if refusal is None and self._ended is None and not self._transferred and control and self.call_sid:
            await self._hang_up(lambda: control.hang_up(self.call_sid))
        await super().close(refusal)
