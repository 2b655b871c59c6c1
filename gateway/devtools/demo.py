"""`gateway demo`: the whole product on one machine with no keys.

The local Live backend and the gateway start on free loopback ports; the caller simulator dials in as
Twilio would with a caller recording synthesised offline (or a WAV you pass), and the conversation is
printed as it happens. At the end: the response latency of each turn and a stereo WAV of the call.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import time

from gateway.config import load_settings
from gateway.devtools.simulator import (
    RATE,
    CallScript,
    Event,
    load_wav,
    place_call,
    summarize,
    write_stereo_wav,
)
from gateway.local_live import LocalLiveServer
from gateway.server import running_gateway

# What the demo caller says, and how long it then waits for the agent to answer.
CALLER_LINES: tuple[tuple[str, float], ...] = (
    ("Hello, what time is it?", 8.0),
    ("Please repeat this. The weather is lovely today.", 10.0),
    ("Goodbye.", 5.0),
)
GREETING_WAIT_S = 8.0


def caller_recording() -> bytes:
    """The demo caller's audio at 8 kHz, made offline with the same synthesiser in another voice."""
    from gateway.local_live.tts import MALE_VARIANT, synthesize

    parts = []
    for text, pause_s in CALLER_LINES:
        parts.append(synthesize(text, rate=RATE, variant=MALE_VARIANT, wpm=150))
        parts.append(bytes(int(pause_s * RATE) * 2))
    return b"".join(parts)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audio", metavar="WAV", help="your own caller recording (default: synthesised lines)"
    )
    parser.add_argument(
        "--out",
        default="demo-call.wav",
        metavar="WAV",
        help="stereo recording of the call: caller left, agent right (default demo-call.wav)",
    )


async def run_demo(args: argparse.Namespace) -> int:
    audio = load_wav(args.audio) if args.audio else await asyncio.to_thread(caller_recording)
    started = time.monotonic()

    def say(who: str, text: str) -> None:
        print(f"{time.monotonic() - started:7.2f}s  {who:<7} {text}", flush=True)

    def on_event(event: Event) -> None:
        if event.kind == "clear":
            say("gateway", "(caller talked over the agent: playback cleared)")

    print("starting the local Live backend (offline VAD, recognizer and synthesizer) and the gateway...")
    async with LocalLiveServer() as live:
        # The user's settings (voice, greeting, ...) but never their Gemini key: the demo is offline.
        base = load_settings({**os.environ, "GEMINI_API_KEY": "", "GEMINI_LIVE_URL": ""})
        settings = dataclasses.replace(base, gemini_live_url=live.url())
        async with running_gateway(settings, on_transcript=lambda _sid, role, text: say(role, text)) as url:
            print(f"gateway at {url}, Live backend at {live.url()}; placing a call\n")
            started = time.monotonic()
            result = await place_call(
                url,
                CallScript(audio=audio, leading_silence_s=GREETING_WAIT_S, trailing_silence_s=2.0),
                on_event=on_event,
            )
    print()
    print(summarize(result))
    latencies = [t.response_latency for t in result.turns if t.response_latency is not None]
    if latencies:
        print(
            "end of caller speech -> first agent audio: " + ", ".join(f"{v * 1000:.0f} ms" for v in latencies)
        )
    write_stereo_wav(args.out, result.sent, result.heard, RATE)
    print(f"recording: {args.out} (caller left, agent right, 8 kHz)")
    return 0
