"""A Telnyx media stream as the caller's line: wideband L16 at 16 kHz, marks, clear and DTMF.

A thin asyncio layer over the pure `telnyx.protocol` core. The line's audio is what the stream's `start`
announces (`media_format`): L16 at 16 kHz as our TeXML asks, so the caller's audio goes to Live without
resampling and only Live's 24 kHz is resampled (to 16 kHz, not 8); should Telnyx announce narrowband
(PCMU or PCMA at 8 kHz, L16 at 8 kHz) the line carries that instead, and the `Call` resamples as for
Twilio. Telnyx echoes our marks once the audio before them has played, and a `clear` flushes what is
queued: `end_call` and barge-in work as on Twilio. Telnyx takes RTP chunks of 20 ms or more, so audio is
sent in whole 20 ms frames; a remainder waits for the next chunk, and a mark sends it padded with silence
(a mark must follow everything queued before it). Telnyx does not promise media frames in order (each
carries its chunk number): they are taken as they arrive over the socket, since a reordering buffer would
add its depth to every turn; a frame out of order costs 20 ms of scrambled audio, not a call.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from gateway.audio import audioop, pcm16_to_ulaw, ulaw_to_pcm16
from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, LineEvent, Played, Started
from gateway.drain import MOVED_QUERY
from gateway.socket_line import SocketLine
from gateway.stream_tokens import PARAMETER as TOKEN_PARAMETER
from gateway.telnyx import protocol as tp
from gateway.telnyx.answer import ACCOUNT_QUERY, CALL_QUERY, FROM_QUERY, TO_QUERY, WIDEBAND_RATE
from gateway.telnyx.rest import TelnyxControl

WIDEBAND = LineAudio(in_rate=WIDEBAND_RATE, out_rate=WIDEBAND_RATE)
FRAME_S = 0.020


class TelnyxLine(SocketLine):
    """One Telnyx media WebSocket (bidirectional RTP, from `<Connect><Stream>`) as the caller's line."""

    carrier = "telnyx"

    def __init__(self, ws: WebSocket, control: TelnyxControl | None = None) -> None:
        super().__init__(ws)
        self._control = control  # Telnyx's TeXML REST API, for transfers; None without TELNYX_API_KEY
        self._query = dict(ws.query_params)  # what our TeXML put in the stream URL (checked at the upgrade)
        self.audio = WIDEBAND  # until `start` says otherwise
        self.encoding = "L16"
        self.stream_id = ""
        self.call_sid = ""
        self._pending = b""  # PCM less than a frame long, sent with the next chunk
        self._ended: Ended | None = None

    @property
    def _frame_bytes(self) -> int:
        return int(self.audio.out_rate * FRAME_S) * 2

    async def receive(self) -> LineEvent:
        """The next event from Telnyx; `Ended` once the stream has stopped or the socket closed. Never
        raises for bad input: what cannot be read, or does not belong to this stream, is skipped."""
        while self._ended is None:
            data = await self._next_message()
            if data is None:
                self._ended = Ended("closed")
                break
            try:
                event = tp.parse(data)
                sid = getattr(event, "stream_id", "")
                if sid and self.stream_id and sid != self.stream_id:
                    raise tp.ProtocolError("stream_id is not this stream's")
            except tp.ProtocolError as exc:
                self._skipped(str(exc))
                continue
            if isinstance(event, tp.Media):
                if event.track == "inbound":
                    return CallerAudio(self._decode(event.payload))
                continue  # the outbound track (both_tracks) is our own audio coming back
            if isinstance(event, tp.Mark):
                return Played(event.name)
            if isinstance(event, tp.Dtmf):
                return Keypress(event.digit)
            if isinstance(event, tp.Stop):
                self._ended = Ended("stop")
                break
            if isinstance(event, tp.Start):
                if self.stream_id:
                    self._skipped("a second start on the stream")
                    continue
                return self._started(event)
            if isinstance(event, tp.Error):
                self._skipped(f"Telnyx reported error {event.code}: {event.title}")
            # `connected` opens every stream and says nothing the call needs; `clear` is ours, not Telnyx's.
        return self._ended

    def _started(self, event: tp.Start) -> Started:
        self.stream_id = event.stream_id
        self.encoding = event.encoding
        self.audio = LineAudio(event.sample_rate, event.sample_rate)
        query = self._query
        # The call is the webhook's CallSid, which the token is bound to and TeXML's REST API takes.
        self.call_sid = query.get(CALL_QUERY, "") or event.call_control_id
        parameters = {k: query[k] for k in (TOKEN_PARAMETER, FROM_QUERY, TO_QUERY) if k in query}
        return Started(
            self.call_sid,
            event.stream_id,
            query.get(ACCOUNT_QUERY, ""),
            caller=event.caller or query.get(FROM_QUERY, ""),
            called=event.called or query.get(TO_QUERY, ""),
            moved=query.get(MOVED_QUERY) == "1",
            parameters=parameters,
            carrier="telnyx",
        )

    def _decode(self, payload: bytes) -> bytes:
        if self.encoding == "L16":
            return tp.l16_to_pcm16(payload)
        if self.encoding == "PCMA":
            return audioop.alaw2lin(payload, 2)
        return ulaw_to_pcm16(payload)

    def _encode(self, pcm: bytes) -> bytes:
        if self.encoding == "L16":
            return tp.pcm16_to_l16(pcm)
        if self.encoding == "PCMA":
            return audioop.lin2alaw(pcm, 2)
        return pcm16_to_ulaw(pcm)

    async def play(self, pcm: bytes) -> None:
        pcm = self._pending + pcm
        whole = len(pcm) - len(pcm) % self._frame_bytes
        self._pending = pcm[whole:]
        if whole:
            await self._send(tp.media_message(self._encode(pcm[:whole])))

    async def mark(self, name: str) -> None:
        if self._pending:  # the mark follows everything queued: the remainder goes out first, padded
            frame = self._pending + bytes(self._frame_bytes - len(self._pending))
            self._pending = b""
            await self._send(tp.media_message(self._encode(frame)))
        await self._send(tp.mark_message(name))

    async def clear(self) -> None:
        self._pending = b""
        await self._send(tp.clear_message())

    async def transfer(self, target: str) -> bool:
        if self._control is None:  # the toolbox refuses transfers without REST credentials
            raise RuntimeError("no Telnyx REST credentials (TELNYX_API_KEY)")
        return await self._control.transfer(self._query.get(ACCOUNT_QUERY, ""), self.call_sid, target)
