"""The console's live view: the calls in progress and their transcripts as they grow.

`LiveFeed` is told by the app when a call starts, says a line, and ends; each console page watching it gets
the news through a bounded queue (a page that does not keep up is dropped, and its browser reconnects and
starts again from a snapshot). Every call and snapshot names the process that holds it.

With several processes on one port (WEB_CONCURRENCY) the process that serves a page also relays the other
processes' feeds into the page's one stream: it reads each of them as a page would, through the front door at
a path routed to that process (`/console/live/events/process-N`), signed in with a session of its own. A
process that cannot be read (it is being replaced) is shown with no calls until it answers again, and its
snapshot then replaces what the page had of it. One connection per page, whatever the number of processes:
a browser holds at most six to one host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

LINES_KEPT = 200  # per call in progress: what a page that opens mid-call is shown
QUEUE_SIZE = 1000  # news waiting for one page
KEEPALIVE_S = 15.0
CHECK_S = 1.0  # how often a quiet stream checks whether the gateway is stopping
STREAM_S = 300.0  # a stream ends after this (the browser reconnects): no connection held for ever
RETRY_S = 2.0  # another process's feed that could not be read is asked again after this

News = dict[str, Any]
Source = Callable[[], AsyncIterator[News]]  # another process's feed: its snapshot, then its news


@dataclass
class LiveCall:
    call_sid: str
    caller: str
    called: str
    carrier: str
    started_at: datetime
    process: int
    lines: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=LINES_KEPT))

    def public(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "caller": self.caller,
            "called": self.called,
            "carrier": self.carrier,
            "started_at": self.started_at.isoformat(),
            "process": self.process,
            "lines": list(self.lines),
        }


class LiveFeed:
    """Calls in progress and the pages watching them."""

    def __init__(self, process: int = 0) -> None:
        self.process = process  # this process's slot among several (0 when it is the only one)
        self.calls: dict[str, LiveCall] = {}
        self._http: httpx.AsyncClient | None = None  # for reading the other processes' feeds, made once
        self._watchers: set[asyncio.Queue[News | None]] = set()
        _FEEDS.add(self)

    def _tell(self, news: News) -> None:
        for queue in list(self._watchers):
            self._deliver(queue, news)

    def _deliver(self, queue: asyncio.Queue[News | None], news: News) -> None:
        try:
            queue.put_nowait(news)
        except asyncio.QueueFull:  # a page that does not keep up: dropped, it starts again
            self._watchers.discard(queue)
            with contextlib.suppress(asyncio.QueueFull):
                queue.get_nowait()
                queue.put_nowait(None)

    def snapshot(self) -> News:
        return {
            "type": "snapshot",
            "process": self.process,
            "calls": [c.public() for c in self.calls.values()],
        }

    def started(self, call_sid: str, caller: str, called: str, carrier: str) -> None:
        call = LiveCall(call_sid, caller, called, carrier, datetime.now(UTC), self.process)
        self.calls[call_sid] = call
        self._tell({"type": "started", "call": call.public()})

    def line(self, call_sid: str, role: str, text: str) -> None:
        call = self.calls.get(call_sid)
        if call is None:
            return
        line = {"role": role, "text": text, "at": datetime.now(UTC).isoformat()}
        call.lines.append(line)
        self._tell({"type": "line", "call_sid": call_sid, **line})

    def ended(self, call_sid: str, outcome: str) -> None:
        if self.calls.pop(call_sid, None) is not None:
            self._tell({"type": "ended", "call_sid": call_sid, "outcome": outcome})

    def http(self) -> httpx.AsyncClient:
        """The client that reads the other processes' feeds: one per process, made at first use. Plain HTTP
        on the loopback: no certificates loaded (that takes tens of milliseconds of the event loop), and no
        proxy from the environment (HTTP_PROXY would be sent the session cookie)."""
        if self._http is None:
            timeout = httpx.Timeout(5.0, read=2 * KEEPALIVE_S)  # at least a keepalive every KEEPALIVE_S
            self._http = httpx.AsyncClient(timeout=timeout, verify=False, trust_env=False)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def close(self) -> None:
        """Shutdown: every page's stream ends."""
        for queue in self._watchers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._watchers.clear()

    async def stream(
        self, stopping: Callable[[], bool] = lambda: False, others: Mapping[int, Source] | None = None
    ) -> AsyncIterator[str]:
        """Server-sent events for one page: a snapshot of the calls, then the news as it comes, this
        process's and that of `others` (process -> its feed), each relayed as it comes. It ends when
        `stopping()` says so (checked every second: a draining gateway does not wait for its pages), after
        STREAM_S, or at shutdown; the browser reconnects by itself."""
        queue: asyncio.Queue[News | None] = asyncio.Queue(QUEUE_SIZE)
        self._watchers.add(queue)
        now = time.monotonic()
        ends, quiet_since = now + STREAM_S, now
        relays = [asyncio.create_task(self._relay(queue, p, source)) for p, source in (others or {}).items()]
        try:
            yield _event(self.snapshot())
            while (left := ends - time.monotonic()) > 0 and not stopping():
                try:
                    async with asyncio.timeout(min(CHECK_S, left)):
                        news = await queue.get()
                except TimeoutError:
                    if time.monotonic() - quiet_since >= KEEPALIVE_S:
                        quiet_since = time.monotonic()
                        yield ": keepalive\n\n"
                    continue
                if news is None:
                    return
                quiet_since = time.monotonic()
                yield _event(news)
            if stopping():  # draining: the page's next stream may be long coming; it must not keep these
                for process in others or {}:
                    yield _event(absent(process))
        finally:
            self._watchers.discard(queue)
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

    async def _relay(self, queue: asyncio.Queue[News | None], process: int, source: Source) -> None:
        """Another process's feed into one page's queue, for as long as the page watches; while it cannot
        be read, the page is told that process has no calls, and it is asked again every RETRY_S."""
        while True:
            with contextlib.suppress(Exception):  # whatever befell the connection: the process is not there
                async for news in source():
                    if news.get("type") in NEWS_TYPES:
                        self._deliver(queue, news)
            self._deliver(queue, absent(process))
            await asyncio.sleep(RETRY_S)


NEWS_TYPES = frozenset({"snapshot", "started", "line", "ended"})


def absent(process: int) -> News:
    """What a page is told of a process that cannot be read: no calls, for now."""
    return {"type": "snapshot", "process": process, "calls": [], "absent": True}


def absent_stream(process: int) -> str:
    """The whole answer of a process asked for another's feed (that one is being replaced and the front door
    handed the request on): it is absent, and the browser asks again in RETRY_S."""
    return f"retry: {int(RETRY_S * 1000)}\n" + _event(absent(process))


def process_feed(client: httpx.AsyncClient, url: str, cookie: str) -> Source:
    """Another process's feed, read as a page reads it: `url` is its events' path routed to that process
    through the front door, `cookie` a console session's (one this process signed)."""

    async def news() -> AsyncIterator[News]:
        async with client.stream("GET", url, headers={"Cookie": cookie}) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    yield json.loads(line.removeprefix("data: "))

    return news


_FEEDS: weakref.WeakSet[LiveFeed] = weakref.WeakSet()


def close_all() -> None:
    """The server is stopping: every feed's streams end (uvicorn would wait for them)."""
    for feed in list(_FEEDS):
        feed.close()


def _event(data: News) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
