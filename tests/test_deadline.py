"""`Deadline`: a bound on a repeated wait with one timer, behaving as `asyncio.timeout` does."""

from __future__ import annotations

import asyncio

import pytest

from gateway.deadline import Deadline


async def test_waits_that_finish_in_time_return_and_one_that_does_not_raises_timeout_error():
    deadline = Deadline()
    for n in range(20):  # each wait moves the deadline on: the first timer never cancels anything
        assert await deadline.wait(asyncio.sleep(0.005, result=n), 0.05) == n
    with pytest.raises(TimeoutError):
        await deadline.wait(asyncio.Event().wait(), 0.02)
    assert await deadline.wait(asyncio.sleep(0, result="after"), 1.0) == "after"  # usable again
    deadline.close()


async def test_a_shorter_bound_than_the_armed_one_is_kept():
    deadline = Deadline()
    assert await deadline.wait(asyncio.sleep(0, result=1), 60.0) == 1
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(5):  # a safety net: the 60 s timer must not be the one that ends it
            await deadline.wait(asyncio.Event().wait(), 0.02)


async def test_a_cancellation_from_outside_is_not_taken_for_a_timeout():
    deadline = Deadline()
    task = asyncio.create_task(deadline.wait(asyncio.Event().wait(), 10.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.close()


async def test_a_second_task_waiting_meanwhile_gets_a_bound_of_its_own():
    deadline = Deadline()
    first = asyncio.create_task(deadline.wait(asyncio.sleep(0.05, result="first"), 1.0))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await deadline.wait(asyncio.Event().wait(), 0.01)
    assert await first == "first"
    deadline.close()


def test_a_deadline_waited_on_from_a_second_event_loop_still_bounds_the_wait() -> None:
    deadline = Deadline()

    async def waits(seconds: float) -> None:
        await deadline.wait(asyncio.sleep(seconds), 0.05)

    asyncio.run(waits(0))
    with pytest.raises(TimeoutError):
        asyncio.run(waits(1.0))  # a new loop: the first loop's timer cannot fire here
    asyncio.run(waits(0))
