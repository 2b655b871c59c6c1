"""Time to the first greeting audio, with and without ring-time pre-warm of the Live session.

The local backend is given an artificial setup delay (its `setupComplete` comes that long after `setup`),
standing in for the Live service's connect and setup round trip; the caller simulator answers the webhook,
waits as Twilio does before opening the stream, then measures when the first agent audio arrives. Reported:
from the webhook's answer (the caller is connected and hears silence) and from the stream's `start`.
Run: python benchmarks/bench_prewarm.py [--calls 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import time

from machine import describe

from gateway.config import load_settings
from gateway.devtools.simulator import CallScript, Event, place_call
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.logs import configure_logging
from gateway.server import running_gateway

GREETING = "Greet the caller."
STREAM_DELAY_S = 0.3  # webhook answered -> Twilio opens the stream (an assumption; it varies by region)


async def first_audio(url: str) -> tuple[float, float]:
    """(from the webhook's answer, from the stream's start) to the first agent audio, in ms."""
    marks: dict[str, float] = {}

    def on_event(event: Event) -> None:
        now = time.monotonic()
        if event.kind == "webhook":
            marks.setdefault("answered", now)
        elif event.kind == "start":
            marks.setdefault("start", now)
        elif event.kind == "media":
            marks.setdefault("media", now)

    script = CallScript(audio=bytes(1600), trailing_silence_s=2.5)
    await place_call(url, script, on_event=on_event, stream_delay_s=STREAM_DELAY_S)
    if "media" not in marks:
        raise RuntimeError("no greeting audio arrived")
    return (marks["media"] - marks["answered"]) * 1000, (marks["media"] - marks["start"]) * 1000


async def measure(setup_delay_s: float, prewarm: bool, calls: int) -> tuple[list[float], list[float]]:
    async with LocalLiveServer(options=LocalLiveOptions(setup_delay_s=setup_delay_s)) as live:
        env = {
            "GEMINI_LIVE_URL": live.url(),
            "AGENT_GREETING": GREETING,
            "LIVE_PREWARM_S": "10" if prewarm else "0",
        }
        async with running_gateway(load_settings(env, env_file=None)) as url:
            await first_audio(url)  # warm-up: first synthesis, first connection
            results = [await first_audio(url) for _ in range(calls)]
    return [r[0] for r in results], [r[1] for r in results]


async def run(calls: int, delays: list[float]) -> None:
    rows = []
    with contextlib.redirect_stderr(io.StringIO()):
        configure_logging("json", "warning")
        for delay in delays:
            for prewarm in (False, True):
                answered, started = await measure(delay, prewarm, calls)
                rows.append((delay, prewarm, answered, started))
    print("## Pre-warm\n")
    print(
        f"Machine: {describe()}. Time to the first greeting audio the caller receives, median (min-max) of "
        f"{calls} calls per row after one warm-up call, against the local backend with an artificial setup "
        f"delay standing in for Live's connect and setup round trip. The simulator opens the stream "
        f"{STREAM_DELAY_S * 1000:.0f} ms after the webhook answers, as Twilio takes a moment to. "
        f'Greeting: "{GREETING}" (its first sentence is synthesised by espeak-ng in tens of ms).\n'
    )
    print("| setup delay | pre-warm | from webhook answer | from stream start |")
    print("|---|---|---|---|")
    for delay, prewarm, answered, started in rows:
        print(f"| {delay * 1000:.0f} ms | {'on' if prewarm else 'off'} | {fmt(answered)} | {fmt(started)} |")


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ms ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--delays", default="0,0.5,1.0", help="setup delays to try, in seconds")
    args = parser.parse_args()
    asyncio.run(run(args.calls, [float(d) for d in args.delays.split(",")]))


if __name__ == "__main__":
    main()
