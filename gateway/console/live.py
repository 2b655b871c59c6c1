"""The console's live view: the calls in progress in this process and their transcripts as they grow.

`LiveFeed` is told by the app when a call starts, says a line, and ends; each console page watching it gets
the news through a bounded queue (a page that does not keep up is dropped, and its browser reconnects and
starts again from a snapshot). With several processes on one port (WEB_CONCURRENCY) a page sees the calls of
the process that serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LINES_KEPT = 200  # per call in progress: what a page that opens mid-call is shown
QUEUE_SIZE = 1000  # news waiting for one page
KEEPALIVE_S = 15.0
CHECK_S = 1.0  # how often a quiet stream checks whether the gateway is stopping
STREAM_S = 300.0  # a stream ends after this (the browser reconnects): no connection held for ever


@dataclass
class LiveCall:
    call_sid: str
    caller: str
    called: str
    carrier: str
    started_at: datetime
    lines: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=LINES_KEPT))

    def public(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "caller": self.caller,
            "called": self.called,
            "carrier": self.carrier,
            "started_at": self.started_at.isoformat(),
            "lines": list(self.lines),
        }


class LiveFeed:
    """Calls in progress and the pages watching them."""

    def __init__(self) -> None:
        self.calls: dict[str, LiveCall] = {}
        self._watchers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        _FEEDS.add(self)

    def _tell(self, news: dict[str, Any]) -> None:
        for queue in list(self._watchers):
            try:
                queue.put_nowait(news)
            except asyncio.QueueFull:  # a page that does not keep up: dropped, it starts again
                self._watchers.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)

    def started(self, call_sid: str, caller: str, called: str, carrier: str) -> None:
        call = LiveCall(call_sid, caller, called, carrier, datetime.now(UTC))
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

    def close(self) -> None:
        """Shutdown: every page's stream ends."""
        for queue in self._watchers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._watchers.clear()

    async def stream(self, stopping: Callable[[], bool] = lambda: False) -> AsyncIterator[str]:
        """Server-sent events for one page: a snapshot of the calls, then the news as it comes. It ends when
        `stopping()` says so (checked every second: a draining gateway does not wait for its pages), after
        STREAM_S, or at shutdown; the browser reconnects by itself."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self._watchers.add(queue)
        now = time.monotonic()
        ends, quiet_since = now + STREAM_S, now
        try:
            snapshot = {"type": "snapshot", "calls": [c.public() for c in self.calls.values()]}
            yield _event(snapshot)
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
        finally:
            self._watchers.discard(queue)


_FEEDS: weakref.WeakSet[LiveFeed] = weakref.WeakSet()


def close_all() -> None:
    """The server is stopping: every feed's streams end (uvicorn would wait for them)."""
    for feed in list(_FEEDS):
        feed.close()


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
