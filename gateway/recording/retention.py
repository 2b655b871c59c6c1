"""RECORDING_RETENTION_DAYS: recordings older than that are deleted by a background job.

Each sweep lists what the storage holds from before the cutoff (a directory's files by their time, a
bucket's objects by LastModified), so a part whose record was lost is deleted too. For each, the call's
record lets go of it first (its `recording_url` is cleared), then the part is deleted, and one
`recording_deleted` line is logged; if the records database is down, the part is kept for the next sweep,
so no record ever points at a recording that was deleted while it could not be told. Every instance sweeps
(deleting what another already deleted is harmless); the clock is passed in, so the rules are tested
without waiting days.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from gateway.metrics import METRICS
from gateway.recording.storage import Storage, call_sid_of

if TYPE_CHECKING:
    from gateway.records import Records

log = structlog.get_logger("gateway.recording")

SWEEP_EVERY_S = 3600.0  # recordings live days: an hour late is nothing, and a sweep lists the whole store
FIRST_SWEEP_S = 60.0  # after start-up, give or take a random half (instances started together spread out)


def cutoff(now: datetime, days: float) -> datetime:
    """Recordings stored before this are past their retention."""
    return now.astimezone(UTC) - timedelta(days=days)


class Retention:
    def __init__(
        self,
        storage: Storage,
        records: Records,
        days: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.storage, self.records, self.days = storage, records, days
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> list[str]:
        """Delete what is past its retention now; the keys deleted."""
        now = self.clock()
        deleted = []
        for part in await self.storage.stored_before(cutoff(now, self.days)):
            call_sid = call_sid_of(part.key)
            try:
                await self.records.clear_recording(call_sid)
            except Exception as exc:  # the records database is away: keep the part for the next sweep
                log.warning("recording_kept", recording=part.key, reason="record_not_updated", error=str(exc))
                continue
            await self.storage.delete(part.key)
            age_days = round((now - part.modified).total_seconds() / 86400, 2)
            log.info("recording_deleted", recording=part.key, call_sid=call_sid, age_days=age_days)
            METRICS.recordings.labels(result="deleted").inc()
            deleted.append(part.key)
        return deleted

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recording_retention")

    async def _run(self) -> None:
        await asyncio.sleep(FIRST_SWEEP_S * random.uniform(0.5, 1.5))
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # the store is unreachable: try again at the next sweep
                log.error("recording_retention_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(SWEEP_EVERY_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
