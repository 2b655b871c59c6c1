"""In-memory peers for the `Call`: a line and Live connections that the test scripts, with no sockets.

The `Call` is one async story; these let a test drive it event by event in milliseconds (the way h11's
`ConnectionPair` drives its state machine), while the end-to-end tests over real sockets check the same
story with real peers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.call.line import Ended, LineAudio, LineEvent, Played, Started
from gateway.live import protocol as lp
from gateway.live.session import LiveConnectionLost, LiveError

CALL_SID = "CA" + "1" * 32


STARTED = Started(CALL_SID, "MZ" + "2" * 32, "AC" + "3" * 32, caller="+15550001111", called="+15550002222")


class MemoryLine:
    """A line whose events the test puts in and whose actions it reads back from `sent`."""

    def __init__(
        self, audio: LineAudio | None = None, *, echo_marks: bool = False, send_delay_s: float = 0.0
    ) -> None:
        self.audio = audio or LineAudio(8000, 8000)
        self.send_delay_s = send_delay_s  # each send yields this long, as a socket under backpressure does
        self.bad_messages = 0
        self.echo_marks = echo_marks  # played out at once: every mark comes back as soon as it is sent
        self.sent: list[tuple[str, object]] = []
        self.transfer_error: Exception | None = None
        self.closed: str | None = None  # the refusal, or "" once closed without one
        self._ended: Ended | None = None
        self._events: asyncio.Queue[LineEvent] = asyncio.Queue()

    def put(self, *events: LineEvent) -> None:
        for event in events:
            self._events.put_nowait(event)

    async def receive(self) -> LineEvent:
        """As a line does: `Ended` again on every call once it has ended (or once we closed it)."""
        if self._ended is None and self.closed is not None:
            self._ended = Ended("closed")
        if self._ended is not None:
            return self._ended
        event = await self._events.get()
        if isinstance(event, Ended):
            self._ended = event
        return event

    def actions(self, kind: str) -> list[object]:
        return [value for name, value in self.sent if name == kind]

    async def play(self, pcm: bytes) -> None:
        await asyncio.sleep(self.send_delay_s)
        self.sent.append(("play", pcm))

    async def clear(self) -> None:
        await asyncio.sleep(self.send_delay_s)
        self.sent.append(("clear", None))

    async def mark(self, name: str) -> None:
        await asyncio.sleep(self.send_delay_s)
        self.sent.append(("mark", name))
        if self.echo_marks:
            self.put(Played(name))

    async def transfer(self, target: str) -> bool:
        self.sent.append(("transfer", target))
        if self.transfer_error is not None:
            raise self.transfer_error
        return True

    async def close(self, refusal: str | None = None) -> None:
        if self.closed is None:
            self.closed = refusal or ""


@dataclass
class ScriptedConnection:
    """One Live connection: what the server says (`say`, `lose`), and what the client sent it."""

    handle: str | None  # the handle it was opened with
    sent: list[str] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)
    closed: bool = False
    broken: LiveError | None = None
    indices: list[tuple[str, object]] = field(default_factory=list)  # message i + 1 (setup is 0), in order
    _inbox: asyncio.Queue[list[lp.LiveEvent] | LiveError | None] = field(default_factory=asyncio.Queue)

    def say(self, *events: lp.LiveEvent) -> None:
        self._inbox.put_nowait(list(events))

    def lose(self, error: LiveError) -> None:
        """The connection breaks (the next receive raises), and sends fail from now on."""
        self._inbox.put_nowait(error)
        self.broken = error

    def end(self) -> None:
        """The server closes the session normally."""
        self._inbox.put_nowait(None)

    async def receive(self) -> list[lp.LiveEvent] | None:
        item = await self._inbox.get()
        if isinstance(item, LiveError):
            raise item
        return item

    async def send(self, message: str) -> int:
        """Returns the message's index on this connection (setup is 0), as `LiveSession.send` does."""
        if self.broken is not None:
            raise self.broken
        self.sent.append(message)
        self.indices.append(("message", message))
        return len(self.indices)

    async def send_audio(self, pcm: bytes, rate: int) -> int:
        if self.broken is not None:
            raise self.broken
        self.audio.append(pcm)
        self.indices.append(("audio", pcm))
        return len(self.indices)

    async def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.lose(LiveConnectionLost("aborted", 1006))

    aborted = False


class ScriptedLive:
    """Opens `ScriptedConnection`s for the Call; `refusals` are raised, in order, before any opens."""

    def __init__(self) -> None:
        self.connections: list[ScriptedConnection] = []
        self.refusals: list[LiveError] = []
        self.hanging = False  # accepts and never answers the setup
        self.opened = asyncio.Event()

    async def open(self, config: lp.LiveConfig, handle: str | None) -> ScriptedConnection:
        if self.hanging:
            await asyncio.Event().wait()
        if self.refusals:
            raise self.refusals.pop(0)
        connection = ScriptedConnection(handle)
        self.connections.append(connection)
        self.opened.set()
        return connection

    async def connection(self, index: int, timeout_s: float = 2.0) -> ScriptedConnection:
        """The index-th connection, once the Call has opened it."""
        async with asyncio.timeout(timeout_s):
            while len(self.connections) <= index:
                self.opened.clear()
                await self.opened.wait()
        return self.connections[index]
