"""Cost of call records: what a call pays on the event loop (queueing), and what the writer pays per call.

    python benchmarks/bench_records.py [postgres://...]   (PostgreSQL too when a URL is given)

A "call" here is one record and 20 transcript lines, the size of a few minutes' conversation.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from machine import describe

from gateway.records import CallRecord, Records, open_store

CALLS = 200
LINES = 20


async def measure(url: str) -> tuple[float, float]:
    """(event-loop microseconds per call to queue everything, writer milliseconds per call)."""
    records = Records(open_store(url))
    await records.start()
    now = datetime.now(UTC)
    enqueue: list[float] = []
    try:
        began = time.perf_counter()
        for n in range(CALLS):
            sid = f"CAbench{time.time_ns()}{n}"
            t0 = time.perf_counter()
            for i in range(LINES):
                records.transcript(sid, "caller" if i % 2 else "agent", "a line of about this length, said")
            record = CallRecord(sid, started_at=now, ended_at=now, outcome="caller_hung_up", total_tokens=900)
            records.save(record)
            enqueue.append(time.perf_counter() - t0)
        await records.flush(600)
        wall = time.perf_counter() - began
    finally:
        await records.stop()
    return statistics.median(enqueue) * 1e6, wall / CALLS * 1e3


async def main() -> None:
    urls = {"SQLite": f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}"}
    if len(sys.argv) > 1:
        urls["PostgreSQL (loopback)"] = sys.argv[1]
    print("## Call records: cost per call\n")
    print(f"Machine: {describe('asyncpg')}; {CALLS} calls of 1 record + {LINES} transcript lines.\n")
    print(
        "| database | on the event loop, queueing a call's writes (us, median) | writer time per call (ms) |"
    )
    print("|---|---|---|")
    for name, url in urls.items():
        loop_us, writer_ms = await measure(url)
        print(f"| {name} | {loop_us:.0f} | {writer_ms:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
