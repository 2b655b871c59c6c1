"""Admission: what a media socket or a webhook may take before it is proven to be one of our calls.

A media stream's upgrade carries Twilio's signature, but that signature is the same for every stream (it
covers the stream URL, which has no per-call part), so whoever saw one can open as many upgrades as they
like. What proves a stream is the `start` message and its per-call stream token. So:

- A stream holds a place in `MAX_CONCURRENT_CALLS` only once its token is verified. Until then it holds a
  place in a small budget of its own (`MAX_UNVERIFIED_STREAMS`, `UnverifiedStreams`). When that budget is
  full, the stream that has waited longest for its `start` is closed to make room (code 1013): Twilio sends
  `start` within milliseconds of the upgrade, so the oldest unverified socket is the least likely to be a
  call, and a socket that never sends `start` can no longer keep a real caller out.
- Every refusal (a webhook or an upgrade refused, a stream closed before it became a call, a webhook asked
  again, a pre-warm skipped) is one JSON line with its reason, at most `LOG_LINES_PER_S` lines a second;
  past that, one `refusals_suppressed` line a second with the counts (`RefusalLog`), so a flood of refusals
  is not also a flood of log lines. Every one is counted in `gateway_admission_refused_total{entry,reason}`.
- What unverified sockets cost waits its turn (`Pacer`): accepting one, refusing one, at most
  `PACED_PER_TURN` per turn of the event loop. A burst of hundreds of hostile upgrades is spread over many
  turns and the frames of the calls in progress are served between them, instead of after the whole burst.
- Memory comes back after a burst (`MemoryReturn`). A refused socket's objects sit in reference cycles
  (uvicorn's HTTP protocol and its parser, the WebSocket protocol and its parser) that only the cycle
  collector frees, and a socket that asked for permessage-deflate carries some 45 kB of zlib state with
  them; once freed, that memory stays in the C heap, fragmented, unless the allocator is told to give it
  back. So once refusals stop for `QUIET_S`, the garbage is collected and glibc's `malloc_trim` returns the
  free pages to the system (one `memory_returned` line says how much).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import Counter

from gateway.logs import RateLimitedLog

log = structlog.get_logger("gateway.admission")

REFUSED = Counter(
    "gateway_admission_refused",
    "What was refused before it became a call, by entry point and reason: webhook (signature, busy, "
    "repeated: asked again and given the same answer, replayed), stream (signature, busy, no_start, "
    "evicted, closed_before_start, token, at_capacity), prewarm (budget)",
    ["entry", "reason"],
)
LOG_LINES_PER_S = 50  # refusal lines logged one by one each second; the rest are counted in one line
PACED_PER_TURN = 16  # unverified sockets accepted or refused per turn of the event loop; the rest wait
QUIET_S = 1.0  # refusals stopped this long: the burst is over, its memory is given back
MIN_BURST = 32  # refusals that make a burst worth giving memory back for


class RefusalLog:
    """Counts each refusal (metric, memory return) and logs it: one JSON line each, up to `per_second`;
    past that, one `refusals_suppressed` line a second (`RateLimitedLog`)."""

    def __init__(self, per_second: int = LOG_LINES_PER_S, memory: MemoryReturn | None = None) -> None:
        self.memory = memory or MemoryReturn()
        self._log = RateLimitedLog(log, "refusals_suppressed", per_second)

    def refused(self, entry: str, reason: str, event: str, **fields: Any) -> None:
        """Count the refusal and log it as `event` (with `reason` and `fields`), unless over the rate."""
        REFUSED.labels(entry=entry, reason=reason).inc()
        self.memory.refused()
        self._log.warning(f"{entry}:{reason}", event, reason=reason, **fields)

    def close(self) -> None:
        self._log.close()
        self.memory.close()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (musl, macOS: their allocators give memory back by themselves, or not)."""
    name = ctypes.util.find_library("c")
    try:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def _rss_mb() -> float:
    """This process's resident memory (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class MemoryReturn:
    """After a burst of refusals (`MIN_BURST` or more, then `QUIET_S` without one): collect the garbage the
    refused sockets left and give the freed memory back to the system. The collection runs on the event
    loop (start-up's objects are frozen, so it takes milliseconds); the trim in a thread."""

    def __init__(self, quiet_s: float = QUIET_S, min_burst: int = MIN_BURST) -> None:
        self.quiet_s = quiet_s
        self.min_burst = min_burst
        self.returns = 0  # bursts whose memory was given back
        self._count = 0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def refused(self) -> None:
        self._count += 1
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        if self._timer is None and self._count >= self.min_burst:
            self._timer = loop.call_later(self.quiet_s, self._quiet)

    def _quiet(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        if (left := self._last + self.quiet_s - loop.time()) > 0:
            self._timer = loop.call_later(left, self._quiet)  # still refusing: the burst goes on
            return
        if self._task is None or self._task.done():
            self._count = 0
            self._task = loop.create_task(self._give_back(), name="memory-return")

    async def _give_back(self) -> None:
        before, began = _rss_mb(), time.perf_counter()
        collected = gc.collect()  # start-up's objects are frozen: this scans what calls and sockets made
        collect_s = time.perf_counter() - began
        if (trim := _TRIM) is not None:
            await asyncio.to_thread(trim, 0)  # the C heap's free pages back to the system
        self.returns += 1
        log.info(
            "memory_returned",
            collected=collected,
            collect_ms=round(collect_s * 1000, 1),
            trim_ms=round((time.perf_counter() - began - collect_s) * 1000, 1),
            rss_mb_before=round(before, 1),
            rss_mb=round(_rss_mb(), 1),
            trimmed=trim is not None,
        )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()


_TRIM = _malloc_trim()


class Pacer:
    """At most `per_turn` goes ahead per turn of the event loop; the others wait, first come first served."""

    def __init__(self, per_turn: int = PACED_PER_TURN) -> None:
        self.per_turn = per_turn
        self._used = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._turn: asyncio.Handle | None = None

    async def turn(self) -> None:
        """Return when this one may go ahead."""
        if self._used < self.per_turn and not self._waiting:
            self._take()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        if self._turn is None:
            self._turn = asyncio.get_running_loop().call_soon(self._next_turn)
        await waiter

    def _take(self) -> None:
        self._used += 1
        if self._turn is None:
            self._turn = asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn = None
        self._used = 0
        while self._waiting and self._used < self.per_turn:
            waiter = self._waiting.popleft()
            if not waiter.done():  # its task was cancelled meanwhile
                waiter.set_result(None)
                self._take()


class Unverified:
    """A media socket accepted and waiting for its `start` (or having it checked)."""

    __slots__ = ("_timeout", "evicted", "since")

    def __init__(self) -> None:
        self.since = time.monotonic()
        self.evicted = False
        self._timeout: asyncio.Timeout | None = None

    def waiting(self, timeout: asyncio.Timeout | None) -> None:
        """The deadline the socket waits under (None once it stops waiting): eviction expires it now."""
        self._timeout = timeout
        if self.evicted:
            self._expire()

    def evict(self) -> None:
        self.evicted = True
        self._expire()

    def _expire(self) -> None:
        if self._timeout is not None and not self._timeout.expired():
            self._timeout.reschedule(asyncio.get_running_loop().time())


class UnverifiedStreams:
    """The budget of media sockets not yet proven to be calls: full, the oldest one makes room."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._waiting: dict[Unverified, None] = {}  # oldest first

    def __len__(self) -> int:
        return len(self._waiting)

    def enter(self) -> tuple[Unverified, Unverified | None]:
        """A place for a new socket, and the socket evicted to make room for it (if any)."""
        victim = None
        if len(self._waiting) >= self.budget:
            victim = next(iter(self._waiting))
            del self._waiting[victim]
            victim.evict()
        place = Unverified()
        self._waiting[place] = None
        return place, victim

    def leave(self, place: Unverified) -> None:
        place.waiting(None)
        self._waiting.pop(place, None)
