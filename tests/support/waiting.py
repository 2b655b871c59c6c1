"""Waiting for something that happens on another task or in another process, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Return once `predicate()` is true; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)
