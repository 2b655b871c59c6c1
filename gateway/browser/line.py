"""The browser softphone as a line: the second implementation of the `Call`'s line seam.

A thin asyncio layer over Starlette's WebSocket and the pure `browser.protocol` core. The page's microphone
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

import structlog
from starlette.websockets import WebSocket, WebSocketState
from websockets.frames import CloseCode

from gateway.browser import protocol as bp
from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, LineClosed, LineEvent, Played, Started
from gateway.deadline import Deadline

log = structlog.get_logger("gateway.browser")

CARRIER = "browser"
SEND_STALL_S = 10.0  # a page that has not read for this long is gone (a frozen tab): the call ends


def new_call_sid() -> str:
    """A browser call's id, shaped like a CallSid ("BR" and 32 hex digits) so records and tools take it."""
    return "BR" + secrets.token_hex(16)


class BrowserLine:
    """One softphone WebSocket from the console's phone page as the caller's line."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self.quality = bp.PHONE  # until the page's `start` says otherwise
        self.audio: LineAudio = self.quality.audio
        self.call_sid = ""
        self.bad_messages = 0
        self._ended: Ended | None = None
        self._closed = False  # the line has ended: the call sends nothing more
        self._finished = False  # the page has been told how the call ended: nothing more at all
        self._send_deadline = Deadline()
        self._sending = asyncio.Lock()  # the call's sends and the watcher's notes share one socket
        self._notes: list[str] = []
        self._notes_task: asyncio.Task[None] | None = None

    async def receive(self) -> LineEvent:
        """The page's next event; `Ended` once it hung up or the socket closed. Never raises for bad input."""
        while self._ended is None:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                self._ended = Ended("closed")
                break
            data = message.get("bytes")
            try:
                if data is not None:
                    if not self.call_sid:
                        raise bp.ProtocolError("audio before start")
                    return CallerAudio(self.quality.decode(data))
                event = bp.parse(message.get("text") or "")
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
                    await self._send(bp.pong_message(event.id))
                continue
            if self.call_sid:
                self._skipped("a second start")
                continue
            self.quality, self.audio, self.call_sid = event.quality, event.quality.audio, new_call_sid()
            parameters = {"agent": event.agent, "quality": event.quality.name}
            return Started(self.call_sid, parameters=parameters, carrier=CARRIER, caller=CARRIER)
        return self._ended

    def _skipped(self, error: str) -> None:
        self.bad_messages += 1
        if self.bad_messages <= 10 or self.bad_messages % 100 == 0:  # a flood of junk is not a flood of logs
            log.warning("browser_message_skipped", error=error, count=self.bad_messages)

    async def _send(self, message: str | bytes) -> None:
        if self._closed:
            raise LineClosed("the line has ended")
        await self._write(message)

    async def _write(self, message: str | bytes | None) -> None:
        """Send the watcher's notes still waiting, then `message`: in the order they were given."""
        try:
            async with self._sending:
                while self._notes:
                    await self._send_deadline.wait(self._ws.send_text(self._notes.pop(0)), SEND_STALL_S)
                if isinstance(message, bytes):
                    await self._send_deadline.wait(self._ws.send_bytes(message), SEND_STALL_S)
                elif message is not None:
                    await self._send_deadline.wait(self._ws.send_text(message), SEND_STALL_S)
        except TimeoutError:
            log.warning("browser_not_reading", stalled_s=SEND_STALL_S)
            raise LineClosed("the page stopped reading") from None
        except Exception as exc:  # the page is gone (uvicorn raises several kinds)
            raise LineClosed(str(exc) or exc.__class__.__name__) from None

    def started(self, agent: str) -> None:
        """Tell the page its call is up: its id, and the rates and encoding of its audio (before anything
        the call sends, which waits behind it; nothing may await between admitting a call and starting it)."""
        self._note(bp.started_message(self.call_sid, agent, self.quality))

    async def play(self, pcm: bytes) -> None:
        await self._send(self.quality.encode(pcm))

    async def mark(self, name: str) -> None:
        await self._send(bp.mark_message(name))

    async def clear(self) -> None:
        await self._send(bp.clear_message())

    async def transfer(self, target: str) -> bool:
        """A browser cannot be moved to a phone number: the page is told whom a caller would now be talking
        to, and the call ends here as transferred (its record says so)."""
        await self._send(bp.transfer_message(target))
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
        if self._ws.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(Exception):  # the page may be gone already
            async with asyncio.timeout(SEND_STALL_S):
                await self._write(None if outcome is None else bp.ended_message(outcome))
                code = CloseCode.POLICY_VIOLATION if refusal else CloseCode.NORMAL_CLOSURE
                await self._ws.close(code=code, reason=(refusal or "")[:120])

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
