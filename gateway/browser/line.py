"""The browser softphone as a line: the second implementation of the `Call`'s line seam.

A thin asyncio layer over a WebSocket (the carriers' `SocketLine`: bounded sends, bad messages skipped and
counted) and the pure `browser.protocol` core. The page's microphone
frames become `CallerAudio` at the chosen quality's rate, its mark acknowledgements `Played`, its keypad
`Keypress`, its Hang up button `Ended("stop")`. The page plays the agent through a jitter buffer of its own
and acknowledges each mark when its playout reaches it, as Twilio does, so the call's rules (marks, barge-in,
hang-up after the goodbye is heard) run unchanged.

The line also watches the call (`CallWatcher`): the transcript and each turn's response latency go to the
page as they happen. Its socket outlives the `Call`: `close()` only ends the line, and the route that owns
the socket says how the call ended before closing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from starlette.websockets import WebSocket

from gateway.browser import protocol as bp
from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, LineClosed, LineEvent, Played, Started
from gateway.socket_line import SocketLine

CARRIER = "browser"


def new_call_sid() -> str:
    """A browser call's id, shaped like a CallSid ("BR" and 32 hex digits) so records and tools take it."""
    return "BR" + secrets.token_hex(16)


class BrowserLine(SocketLine):
    """One softphone WebSocket from the console's phone page as the caller's line."""

    carrier = CARRIER

    def __init__(self, ws: WebSocket) -> None:
        super().__init__(ws)
        self.quality = bp.PHONE  # until the page's `start` says otherwise
        self.audio: LineAudio = self.quality.audio
        self.call_sid = ""
        self._ended: Ended | None = None
        self._closed = False  # the line has ended: the call sends nothing more
        self._finished = False  # the page has been told how the call ended: nothing more at all
        self._sending = asyncio.Lock()  # the call's sends and the watcher's notes share one socket
        self._notes: list[str] = []
        self._notes_task: asyncio.Task[None] | None = None

    async def receive(self) -> LineEvent:
        """The page's next event; `Ended` once it hung up or the socket closed. Never raises for bad input."""
        while self._ended is None:
            message = await self._next_message()
            if message is None:
                self._ended = Ended("closed")
                break
            try:
                if isinstance(message, bytes):
                    if not self.call_sid:
                        raise bp.ProtocolError("audio before start")
                    return CallerAudio(self.quality.decode(message))
                event = bp.parse(message)
            except bp.ProtocolError as exc:
                self._skipped(str(exc))
                continue
            if isinstance(event, bp.Mark):
                return Played(event.name)
            if isinstance(event, bp.Dtmf):
                return Keypress(event.digit)
            if isinstance(event, bp.Hangup):
                self._ended = Ended("stop")
                break
            if isinstance(event, bp.Ping):
                with contextlib.suppress(LineClosed):
                    await self._deliver(bp.pong_message(event.id))
                continue
            if self.call_sid:
                self._skipped("a second start")
                continue
            self.quality, self.audio, self.call_sid = event.quality, event.quality.audio, new_call_sid()
            parameters = {"agent": event.agent, "quality": event.quality.name}
            return Started(self.call_sid, parameters=parameters, carrier=CARRIER, caller=CARRIER)
        return self._ended

    async def _deliver(self, message: str | bytes) -> None:
        if self._closed:
            raise LineClosed("the line has ended")
        await self._write(message)

    async def _write(self, message: str | bytes | None) -> None:
        """Send the watcher's notes still waiting, then `message`: in the order they were given."""
        async with self._sending:
            while self._notes:
                await self._send(self._notes.pop(0))
            if message is not None:
                await self._send(message)

    def started(self, agent: str) -> None:
        """Tell the page its call is up: its id, and the rates and encoding of its audio (before anything
        the call sends, which waits behind it; nothing may await between admitting a call and starting it)."""
        self._note(bp.started_message(self.call_sid, agent, self.quality))

    async def play(self, pcm: bytes) -> None:
        await self._deliver(self.quality.encode(pcm))

    async def mark(self, name: str) -> None:
        await self._deliver(bp.mark_message(name))

    async def clear(self) -> None:
        await self._deliver(bp.clear_message())

    async def transfer(self, target: str) -> bool:
        """A browser cannot be moved to a phone number: the page is told whom a caller would now be talking
        to, and the call ends here as transferred (its record says so)."""
        await self._deliver(bp.transfer_message(target))
        return True

    async def close(self, refusal: str | None = None) -> None:
        """End the line. The socket stays open for the route to say how the call ended (`end`); a refusal
        closes it at once with POLICY_VIOLATION and the reason."""
        self._closed = True
        if refusal is not None:
            await self.end(None, refusal)

    async def end(self, outcome: str | None, refusal: str | None = None) -> None:
        """Tell the page how the call ended (after the transcript lines still on their way), then close."""
        self._closed = True
        if self._notes_task is not None:
            await asyncio.gather(self._notes_task, return_exceptions=True)
        self._finished = True
        with contextlib.suppress(LineClosed):  # the page may be gone already
            await self._write(None if outcome is None else bp.ended_message(outcome))
        await super().close(refusal[:120] if refusal else None)

    # --- CallWatcher: what the page shows as the call goes ---

    def transcript(self, role: str, text: str) -> None:
        self._note(bp.transcript_message(role, text))

    def response(self, latency_s: float) -> None:
        self._note(bp.response_message(latency_s))

    def _note(self, message: str) -> None:
        """Called from inside the call (no await there): sent soon, in order, between the call's own sends."""
        if self._finished:
            return
        self._notes.append(message)
        if self._notes_task is None or self._notes_task.done():
            self._notes_task = asyncio.get_running_loop().create_task(self._send_notes())

    async def _send_notes(self) -> None:
        try:
            await self._write(None)
        except LineClosed:
            self._notes.clear()
