"""CPU per 20 ms frame on the gateway's whole per-frame path, both directions, without sockets.

Inbound:  Twilio `media` JSON -> parse -> mu-law 8k -> PCM16 16k -> Live `realtimeInput` JSON.
Outbound: Live `serverContent` JSON (24 kHz PCM) -> parse -> 8k mu-law -> Twilio `media` JSON.

These are the pure cores exactly as the Call drives them; socket I/O is measured by the load harness.
Run: python benchmarks/bench_frame_path.py
"""

from __future__ import annotations

import base64
import json
import math
import statistics
import time

import numpy as np
from machine import describe

from gateway.audio import InboundAudio, OutboundAudio, pcm16_to_ulaw
from gateway.live import protocol as lp
from gateway.twilio import protocol as tp

FRAMES = 20_000


def speech_like(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * math.pi * f * t) / k for k, f in enumerate((220, 470, 910, 1800, 3100), 1))
    return (x / np.abs(x).max() * 12000).astype("<i2").tobytes()


def measure(step, inputs: list) -> tuple[float, float]:
    samples = []
    for item in inputs:
        t0 = time.perf_counter_ns()
        step(item)
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


def main() -> None:
    caller = pcm16_to_ulaw(speech_like(FRAMES * 0.02, 8000))
    sender = tp.TwilioSender("MZ" + "0" * 32)
    twilio_msgs = [sender.media(caller[i * 160 : (i + 1) * 160], i * 20) for i in range(FRAMES)]
    inbound = InboundAudio(16000)

    def inbound_step(msg: str) -> str:
        event = tp.parse(msg)
        return lp.audio_message(inbound.convert(event.payload), 16000)

    agent = speech_like(FRAMES * 0.02, 24000)
    live_msgs = [
        json.dumps(
            {
                "serverContent": {
                    "modelTurn": {
                        "parts": [
                            {
                                "inlineData": {
                                    "mimeType": "audio/pcm;rate=24000",
                                    "data": base64.b64encode(agent[i * 960 : (i + 1) * 960]).decode(),
                                }
                            }
                        ]
                    }
                }
            }
        ).encode()
        for i in range(FRAMES)
    ]
    outbound = OutboundAudio()

    def outbound_step(msg: bytes) -> None:
        for event in lp.parse_server_message(msg):
            if isinstance(event, lp.AgentAudio):
                tp.media_message("MZ" + "0" * 32, outbound.convert(event.pcm))

    measure(inbound_step, twilio_msgs[:1000])  # warm up
    measure(outbound_step, live_msgs[:1000])
    in_p50, in_p99 = measure(inbound_step, twilio_msgs)
    out_p50, out_p99 = measure(outbound_step, live_msgs)
    print("## Per-frame CPU, whole gateway path (no sockets)\n")
    print(f"Machine: {describe('numpy')}; {FRAMES} frames of 20 ms each way, one thread.\n")
    print("| direction | path | p50 (us/frame) | p99 (us/frame) |")
    print("|---|---|---|---|")
    print(
        f"| inbound | Twilio media JSON -> mu-law 8k -> PCM 16k -> Live JSON | {in_p50:.1f} | {in_p99:.1f} |"
    )
    print(
        f"| outbound | Live JSON (PCM 24k) -> mu-law 8k -> Twilio media JSON "
        f"| {out_p50:.1f} | {out_p99:.1f} |"
    )
    per_call_s = (in_p50 + out_p50) * 50 / 1000
    print(
        f"\nBoth directions at 50 frames/s: {per_call_s:.2f} ms of CPU per call-second on these cores "
        "(protocol and audio only; socket I/O and the event loop come on top)."
    )


if __name__ == "__main__":
    main()
