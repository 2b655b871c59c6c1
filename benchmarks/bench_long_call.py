"""A call of several minutes through many Live connection switches: switch time and what the caller hears.

The local backend says goAway every few seconds (and drops connections at random); the caller simulator
talks and listens throughout. Reports switch time (p50, p99), the caller frames that reached Live, and the
longest wait the caller heard (end of their speech -> first agent audio), on turns a switch fell into and on
the others. Run: python benchmarks/bench_long_call.py [--minutes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import statistics
import time
from datetime import datetime

from machine import describe

from gateway.config import load_settings
from gateway.devtools.simulator import RATE, CallScript, place_call
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.local_live.tts import MALE_VARIANT, synthesize
from gateway.logs import configure_logging
from gateway.server import running_gateway

LINES = ["hello there", "the weather is lovely today", "can you hear me", "what time is it", "see you later"]
PAUSE_S = 6.0


def caller_audio(minutes: float) -> bytes:
    silence = bytes(int(PAUSE_S * RATE) * 2)
    one = [synthesize(line, rate=RATE, variant=MALE_VARIANT, wpm=150) + silence for line in LINES]
    parts, total, i = [], 0.0, 0
    while total < minutes * 60:
        parts.append(one[i % len(one)])
        total += len(parts[-1]) / (2 * RATE)
        i += 1
    return b"".join(parts)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(minutes: float, goaway_after_s: float, drop_every_s: float) -> None:
    audio = await asyncio.to_thread(caller_audio, minutes)
    options = LocalLiveOptions(
        goaway_after_s=goaway_after_s, goaway_time_left_s=4.0, drop_rate_per_s=1 / drop_every_s
    )
    logs = io.StringIO()
    async with LocalLiveServer(options=options) as live:
        env = {"GEMINI_LIVE_URL": live.url(), "AGENT_GREETING": "none", "DEVELOPMENT_MODE": "true"}
        settings = load_settings(env, env_file=None)
        with contextlib.redirect_stderr(logs):
            configure_logging("json", "info")
            async with running_gateway(settings) as url:
                wall0 = time.time()
                result = await place_call(url, CallScript(audio=audio, leading_silence_s=1.0))
        received = live.audio_bytes_received
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    switches = [line for line in lines if line["event"] == "live_switched"]
    took = [line["took_s"] * 1000 for line in switches]
    # Switch moments on the call's own timeline (log wall clock -> seconds since the stream started).
    stream0 = wall0 + next(e.t for e in result.events if e.kind == "webhook")
    at = [
        datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00")).timestamp() - stream0 for s in switches
    ]
    straddled, clean = [], []
    for turn in result.turns:
        if turn.response_latency is None:
            continue
        hit = any(turn.speech_end <= t <= turn.speech_end + turn.response_latency for t in at)
        (straddled if hit else clean).append(turn.response_latency * 1000)
    unanswered = sum(t.response_latency is None for t in result.turns)

    print("## Long calls: Live connection switches\n")
    print(
        f"Machine: {describe()}. "
        f"One simulated call of {result.duration_s / 60:.1f} min against the local backend with goAway "
        f"{goaway_after_s:.0f} s after each connection opens (timeLeft 4 s) and a random drop every "
        f"{drop_every_s:.0f} s on average.\n"
    )
    print("| figure | value |")
    print("|---|---|")
    dropped = sum(s["reason"] == "connection_lost" for s in switches)
    print(f"| switches | {len(switches)} ({dropped} after drops, {len(switches) - dropped} after goAway) |")
    print(
        f"| switch time p50 / p99 / max | {statistics.median(took):.0f} / {pct(took, 0.99):.0f} / "
        f"{max(took):.0f} ms |"
    )
    print(
        f"| caller frames sent / reached Live | {result.media_frames_sent} / "
        f"{received // 640} (replayed audio counts twice) |"
    )
    print(
        f"| longest wait heard, turns a switch fell into | "
        f"{max(straddled):.0f} ms over {len(straddled)} turns |"
        if straddled
        else "| longest wait heard, turns a switch fell into | no turn straddled a switch |"
    )
    print(f"| longest wait heard, other turns | {max(clean):.0f} ms over {len(clean)} turns |")
    print(f"| caller utterances with no answer | {unanswered} of {len(result.turns)} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--goaway-after", type=float, default=8.0)
    parser.add_argument("--drop-every", type=float, default=45.0)
    args = parser.parse_args()
    asyncio.run(run(args.minutes, args.goaway_after, args.drop_every))


if __name__ == "__main__":
    main()
