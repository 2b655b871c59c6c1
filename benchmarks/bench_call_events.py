"""What the console's call events (gateway.call.events) add to a caller frame's CPU on the gateway's path.

Per 20 ms caller frame the `Call` now also tells `CallEvents.caller_frame` whether the caller spoke; per agent
chunk, `agent_audio`. Measured against the inbound frame's codec work (mu-law 8k -> PCM 16k, what every
frame costs at least), in the same run, interleaved: rounds alternate the path without and with the events
(speech and silence alternating every second, as in a conversation), and the ratio is of the medians.
Run: python benchmarks/bench_call_events.py
"""

from __future__ import annotations

import statistics
import time

from machine import describe

from gateway.audio import Resampler, ulaw_to_pcm16
from gateway.call.events import CallEvents

FRAMES = 5_000
ROUNDS = 9
LOUD = bytes([0x10, 0x90] * 80)  # mu-law, loud
QUIET = bytes([0xFF] * 160)  # mu-law silence


def frames() -> list[tuple[bytes, bool]]:
    return [((LOUD, True) if (i // 50) % 2 == 0 else (QUIET, False)) for i in range(FRAMES)]


def without_events(inputs: list[tuple[bytes, bool]]) -> float:
    resampler = Resampler(8000, 16000)
    began = time.perf_counter_ns()
    for ulaw, _ in inputs:
        resampler.process(ulaw_to_pcm16(ulaw))
    return (time.perf_counter_ns() - began) / len(inputs) / 1000


def with_events(inputs: list[tuple[bytes, bool]]) -> float:
    resampler = Resampler(8000, 16000)
    events = CallEvents(origin=0.0)
    began = time.perf_counter_ns()
    for i, (ulaw, loud) in enumerate(inputs):
        resampler.process(ulaw_to_pcm16(ulaw))
        now = i * 0.02
        events.caller_frame(now, loud, loud)
        if i % 100 == 75:  # an agent turn between the caller's: first chunk, then more
            events.agent_audio(now, 0.2, turn=i, first=True)
        elif i % 100 > 75:
            events.agent_audio(now, 0.02, turn=i, first=False)
    return (time.perf_counter_ns() - began) / len(inputs) / 1000


def events_alone(inputs: list[tuple[bytes, bool]]) -> float:
    events = CallEvents(origin=0.0)
    began = time.perf_counter_ns()
    for i, (_, loud) in enumerate(inputs):
        events.caller_frame(i * 0.02, loud, loud)
    return (time.perf_counter_ns() - began) / len(inputs) / 1000


def main() -> None:
    inputs = frames()
    base, added, alone = [], [], []
    for _ in range(ROUNDS):
        base.append(without_events(inputs))
        added.append(with_events(inputs))
        alone.append(events_alone(inputs))
    b, a, e = statistics.median(base), statistics.median(added), statistics.median(alone)
    print(describe())
    print(f"{FRAMES} frames x {ROUNDS} rounds, interleaved")
    print(f"codec only:         {b:6.2f} us/frame (median of rounds)")
    print(f"codec + events:     {a:6.2f} us/frame (ratio {a / b:.3f}: within the noise of the rounds)")
    print(f"caller_frame alone: {e:6.3f} us/frame ({e / b:.1%} of the codec's)")


if __name__ == "__main__":
    main()
