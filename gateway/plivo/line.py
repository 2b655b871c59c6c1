"""A Plivo audio stream as the call's line: wideband L16 at 16 kHz both ways.

Our `<Stream contentType="audio/x-l16;rate=16000">` makes Plivo's `media` PCM16LE at 16 kHz, Live's own
input rate: the caller's audio reaches Live untouched and the agent's 24 kHz needs only 24k->16k
(`LineAudio(16000, 16000)`). A mark is Plivo's `checkpoint` (answered `playedStream`), a clear its
`clearAudio`, so `end_call` and barge-in work as on Twilio (see `gateway.plivo.protocol`).

Hang-up and transfer go through Plivo's API (`PlivoControl`): our side ending the call hangs it up there (then
closes the socket), and a transfer points the call at our `/plivo/transfer` XML, which dials the target.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, LineEvent, Played, Started
from gateway.plivo import protocol as pp
from gateway.plivo.answer import CALL_QUERY, FROM_QUERY, TO_QUERY, e164
from gateway.plivo.rest import PlivoControl, transfer_url
from gateway.socket_line import MarkedSocketLine
from gateway.stream_tokens import PARAMETER as TOKEN_PARAMETER

WIDEBAND = LineAudio(in_rate=pp.RATE, out_rate=pp.RATE)


class PlivoLine(MarkedSocketLine):
    """One Plivo audio stream (`<Stream bidirectional="true">` to `/plivo/media`) as the caller's line."""

    carrier = "plivo"
    audio = WIDEBAND

    def __init__(self, ws: WebSocket, control: PlivoControl | None = None, public_base: str = "") -> None:
        super().__init__(ws)
        self._control = control  # Plivo's API, for hang-up and transfer; None without credentials
        self._public_base = public_base  # where Plivo fetches the transfer's XML
        self._query = dict(ws.query_params)  # what our XML put in the stream URL (checked at the upgrade)
        self.stream_id = ""
        self.call_sid = ""  # Plivo's CallUUID
        self._ended: Ended | None = None
        self._transferred = False

    async def receive(self) -> LineEvent:
        """The next event; `Ended` once the stream has stopped or the socket closed. Bad messages, and
        messages of another stream, are skipped, never raised."""
        while self._ended is None:
            data = await self._next_or_played()
            if isinstance(data, Played):
                return data
            if data is None:
                self._ended = Ended("closed")
                break
            try:
                event = pp.parse(data)
                stream_id = getattr(event, "stream_id", "")
                if self.stream_id and stream_id and stream_id != self.stream_id:
                    raise pp.ProtocolError("streamId is not this stream's")
            except pp.ProtocolError as exc:
                self._skipped(str(exc))
                continue
            if isinstance(event, pp.Media):
                return CallerAudio(event.payload)
            if isinstance(event, pp.Dtmf):
                return Keypress(event.digit)
            if isinstance(event, pp.PlayedStream):
                self._answered(event.name)
                continue
            if isinstance(event, pp.Stop):
                self._ended = Ended("stop")
                break
            if isinstance(event, pp.Start):
                if self.stream_id:
                    self._skipped("a second start on the stream")
                    continue
                if event.sample_rate != pp.RATE or "l16" not in event.encoding.lower():
                    self._skipped(f"audio {event.encoding} at {event.sample_rate} Hz (our XML asks for L16)")
                    continue
                return self._started(event)
            # clearedAudio: the checkpoints it flushed were released when we sent the clear.
        return self._ended

    def _started(self, event: pp.Start) -> Started:
        """The call is the answer webhook's CallUUID, which the token is bound to and the API takes."""
        query = self._query
        self.stream_id = event.stream_id
        self.call_sid = query.get(CALL_QUERY, "") or event.call_id
        parameters = {k: query[k] for k in (TOKEN_PARAMETER, FROM_QUERY, TO_QUERY) if k in query}
        return Started(
            self.call_sid,
            event.stream_id,
            event.account_id,
            caller=e164(query.get(FROM_QUERY, "")),
            called=e164(query.get(TO_QUERY, "")),
            parameters=parameters,
            carrier="plivo",
        )

    async def play(self, pcm: bytes) -> None:
        self._queued(pcm)
        await self._send(pp.play_message(pcm))

    async def mark(self, name: str) -> None:
        self._mark_sent(name)
        await self._send(pp.checkpoint_message(self.stream_id, name))

    async def clear(self) -> None:
        self._cleared()
        await self._send(pp.clear_message(self.stream_id))

    async def transfer(self, target: str) -> bool:
        if self._control is None:  # the toolbox refuses transfers without API credentials
            raise RuntimeError("no Plivo API credentials (PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN)")
        self._transferred = await self._control.transfer(
            self.call_sid, transfer_url(self._public_base, target)
        )
        return self._transferred

    async def close(self, refusal: str | None = None) -> None:
        """End our side: Plivo's API hangs the call up (unless the caller already left, the call was
        transferred, or the stream is refused), then the socket closes, which ends our XML anyway."""
        control = self._control
        if refusal is None and self._ended is None and not self._transferred and control and self.call_sid:
            await self._hang_up(lambda: control.hang_up(self.call_sid))
        await super().close(refusal)
