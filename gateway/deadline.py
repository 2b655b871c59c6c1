"""A bound on a wait that is repeated every frame, for the price of a timer per bound, not per wait.

`asyncio.timeout` around each wait schedules and cancels a timer every time: about 3.5 us on this machine,
which at 50 frames a second each way is ~3% of a call's CPU. A `Deadline` keeps one timer: each wait only
writes the new deadline; the timer, when it fires early (the deadline moved on meanwhile), re-arms itself for
the new one, so a line that keeps talking costs one timer per bound (seconds), not one per frame. When the
deadline passes during a wait, the waiting task is cancelled and the wait raises `TimeoutError`, as
`asyncio.timeout` does (and an outside cancellation still comes through as `CancelledError`).

One task waits on a `Deadline` at a time; a second task that waits meanwhile gets an `asyncio.timeout` of its
own, so sharing one is never wrong, only not cheaper.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    def __init__(self) -> None:
        self._when = 0.0
        self._waiter: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._fired = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def wait(self, awaitable: Awaitable[T], timeout_s: float) -> T:
        """`await awaitable`, or raise TimeoutError once `timeout_s` has passed."""
        # The loop is asked for once (`get_running_loop` makes a system call, getpid, every time), and again
        # only if no task of it is running: the Deadline is waited on from another loop now.
        loop = self._loop
        task = None if loop is None else asyncio.current_task(loop)
        if loop is None or task is None:
            running = asyncio.get_running_loop()
            if running is not loop and self._timer is not None:  # armed on the other loop: let it go
                self._timer.cancel()
                self._timer = None
            self._loop = loop = running
            task = asyncio.current_task(loop)
        if self._waiter is not None or task is None:  # another task is waiting on this one
            async with asyncio.timeout(timeout_s):
                return await awaitable
        self._when = loop.time() + timeout_s
        if self._timer is None:
            self._timer = loop.call_at(self._when, self._due)
        elif self._when < self._timer.when():  # a shorter bound than the one armed: arm for it
            self._timer.cancel()
            self._timer = loop.call_at(self._when, self._due)
        self._waiter, self._fired = task, False
        cancelling = task.cancelling()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._fired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._waiter = None

    def _due(self) -> None:
        self._timer = None
        if self._waiter is None or self._loop is None:
            return  # nobody is waiting: the next wait arms the timer again
        loop = self._loop
        if loop.time() < self._when:  # the deadline moved on since the timer was armed
            self._timer = loop.call_at(self._when, self._due)
            return
        self._fired = True
        self._waiter.cancel()

    def close(self) -> None:
        """No more waits: the timer is let go."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
