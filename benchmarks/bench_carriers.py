"""Carriers side by side: the audio each carrier's path delivers, and its CPU per call.

    python benchmarks/bench_carriers.py [--rounds 15] [--frames 500]

Audio quality (deterministic): the agent's 24 kHz audio through each carrier's outbound path (the `Call`'s
resampler to the line's rate, then the line's codec, then what the caller's side decodes) and the caller's
audio through the inbound path (decoded, resampled to Live's 16 kHz where the line's rate is not Live's):
in-band SNR (a tone's best fit is signal, everything else noise: gateway.devtools.audio_quality) and the
bandwidth delivered (the highest frequency up to which every tone, 50 Hz apart, comes through within 3 dB).

CPU: each carrier's real line (gateway/<carrier>/line.py) on an in-memory socket, with the resamplers the
`Call` runs for its rates: per 20 ms frame, the caller's `media` message received, parsed, decoded and
resampled to 16 kHz, and 20 ms of Live's 24 kHz resampled to the line's rate, encoded and built into the
carrier's message. The carriers run interleaved, in a rotating order, `--rounds` times; the ratio to Twilio
is taken within each round (the machine's speed drifts between rounds, not within one) and its median
reported. Sockets and the event loop are the same for every carrier and are left out (see bench_load.py).

Another carrier joins the table with one entry in `PATHS`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: make `gateway` importable

from gateway.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from gateway.call.line import CallerAudio, Started
from gateway.devtools.audio_quality import (
    fit_tone,
    measured_delay_ms,
    rejection_db,
    stream,
    tone,
    tone_snr_db,
)
from gateway.plivo import protocol as plivo
from gateway.plivo.line import PlivoLine
from gateway.signalwire.line import SignalWireLine
from gateway.telnyx import protocol as telnyx
from gateway.telnyx.line import TelnyxLine
from gateway.twilio import protocol as twilio
from gateway.twilio.line import TwilioLine
from gateway.vonage import protocol as vonage
from gateway.vonage.line import VonageLine

LIVE_IN, LIVE_OUT = 16000, 24000


class MemorySocket:
    """A Starlette WebSocket as a line uses it, in memory: it hands out `incoming` and keeps nothing sent."""

    def __init__(self, query: dict[str, str]) -> None:
        self.query_params = query
        self.incoming: list[str | bytes] = []  # text messages; bytes are binary frames (Vonage's audio)
        self.position = 0
        self.sent = 0

    async def receive(self) -> dict[str, Any]:
        message = self.incoming[self.position]
        self.position += 1
        return {"type": "websocket.receive", "bytes" if isinstance(message, bytes) else "text": message}

    async def send_text(self, text: str) -> None:
        self.sent += 1

    async def send_bytes(self, data: bytes) -> None:
        self.sent += 1


@dataclass(frozen=True)
class CarrierPath:
    """One carrier's line and the messages its stream brings: the start, then one 20 ms caller frame."""

    name: str
    audio: str  # what the table says of its audio
    make_line: Callable[[MemorySocket], Any]
    query: dict[str, str]
    start: Callable[[], str]
    frame: Callable[[bytes], str | bytes]  # caller PCM at the line's rate -> the carrier's media message
    line_rate: int
    encode: Callable[[bytes], bytes]  # the line's codec: PCM16 -> wire, and back
    decode: Callable[[bytes], bytes]


def _twilio_like(name: str, line: Callable[[MemorySocket], Any]) -> CarrierPath:
    sender = twilio.TwilioSender("MZ" + "0" * 32)
    return CarrierPath(
        name=name,
        audio="mu-law 8 kHz",
        make_line=line,
        query={},
        start=lambda: sender.start("CA" + "1" * 32, "AC" + "2" * 32, {"token": "t"}),
        frame=lambda pcm: sender.media(pcm16_to_ulaw(pcm), 0),
        line_rate=8000,
        encode=pcm16_to_ulaw,
        decode=ulaw_to_pcm16,
    )


def _telnyx() -> CarrierPath:
    sender = telnyx.TelnyxSender("32de0dea-53cb-4b21-89a4-9e1819c043bc")
    return CarrierPath(
        name="telnyx",
        audio="L16 16 kHz",
        make_line=TelnyxLine,
        query={"call": "v3:abc", "token": "t"},
        start=lambda: sender.start("v3:abc", "+15550001111", "+15550002222"),
        frame=lambda pcm: sender.media(telnyx.pcm16_to_l16(pcm), 0),
        line_rate=16000,
        encode=telnyx.pcm16_to_l16,
        decode=telnyx.l16_to_pcm16,
    )


def _vonage() -> CarrierPath:
    return CarrierPath(
        name="vonage",
        audio="L16 16 kHz, binary frames",
        make_line=VonageLine,
        query={},
        start=lambda: vonage.connected_message(
            {"uuid": "5316ec50-7a65-43b1-a2b8-b73a31002aaf", "token": "t"}
        ),
        frame=lambda pcm: pcm,  # raw PCM16LE in a binary frame
        line_rate=16000,
        encode=bytes,
        decode=bytes,
    )


def _plivo() -> CarrierPath:
    sender = plivo.PlivoSender("87654321-4321-4321-4321-cba987654321")
    return CarrierPath(
        name="plivo",
        audio="L16 16 kHz",
        make_line=PlivoLine,
        query={"call": "12345678-1234-1234-1234-123456789abc", "token": "t"},
        start=lambda: sender.start("12345678-1234-1234-1234-123456789abc", "MAXXXXXXXXXXXXXXXXXX"),
        frame=lambda pcm: sender.media(pcm, 0),
        line_rate=16000,
        encode=bytes,
        decode=bytes,
    )


PATHS: dict[str, Callable[[], CarrierPath]] = {
    "twilio": lambda: _twilio_like("twilio", TwilioLine),
    "telnyx": _telnyx,
    "signalwire": lambda: _twilio_like("signalwire", SignalWireLine),
    "vonage": _vonage,
    "plivo": _plivo,
}


# --- audio quality -----------------------------------------------------------------------------------------


def outbound(path: CarrierPath) -> Callable[[bytes], bytes]:
    """Live's 24 kHz -> the line's rate (the Call's resampler) -> the line's codec and back (the caller)."""
    resampler = Resampler(LIVE_OUT, path.line_rate)
    return lambda pcm: path.decode(path.encode(resampler.process(pcm)))


def inbound(path: CarrierPath) -> Callable[[bytes], bytes]:
    """The caller's audio at the line's rate -> codec and back -> Live's 16 kHz (resampled only if needed)."""
    resampler = Resampler(path.line_rate, LIVE_IN) if path.line_rate != LIVE_IN else None
    return lambda pcm: (resampler.process if resampler else bytes)(path.decode(path.encode(pcm)))


def bandwidth_hz(process: Callable[[bytes], bytes], in_rate: int, out_rate: int) -> float:
    """The highest frequency up to which every tone (every 50 Hz from 100 Hz) comes through within 3 dB of
    its level: each tone's own component is fitted, so images, aliases and codec noise do not count."""
    delivered = 0.0
    for freq in range(100, min(in_rate, out_rate) // 2, 50):
        y = np.frombuffer(stream(process(), tone(freq, in_rate, 0.2), in_rate), "<i2").astype(np.float64)
        amplitude, _ = fit_tone(y[out_rate // 25 :], out_rate, freq)
        if 20 * math.log10(max(amplitude, 1e-9) / (0.5 * 32767)) < -3.0:
            break
        delivered = freq
    return float(delivered)


def quality(path: CarrierPath) -> dict[str, float]:
    out_rate = path.line_rate
    phone_band = [*range(300, 3401, 100)]
    wide = [*range(300, int(0.85 * out_rate / 2) + 1, 100)]
    return {
        "out_snr_phone": min(tone_snr_db(outbound(path), LIVE_OUT, out_rate, f) for f in phone_band),
        "out_snr_band": min(tone_snr_db(outbound(path), LIVE_OUT, out_rate, f) for f in wide),
        "out_band_hz": bandwidth_hz(lambda: outbound(path), LIVE_OUT, out_rate),
        "in_snr_phone": min(tone_snr_db(inbound(path), out_rate, LIVE_IN, f) for f in phone_band),
        "in_band_hz": bandwidth_hz(lambda: inbound(path), out_rate, LIVE_IN),
    }


def resampler_bars(out_rate: int) -> dict[str, float]:
    """The bars of the one resampler a line's outbound path runs (Live's 24 kHz -> the line's rate), as
    tests/test_audio.py asserts them: stop-band rejection, in-band SNR, pass-band ripple, delay."""
    nyquist = out_rate / 2
    stop = range(int(1.125 * nyquist), 12000, 100)
    band = [*range(100, int(0.85 * nyquist) + 1, 100)]
    gains = []
    for f in band:
        y = np.frombuffer(
            stream(Resampler(LIVE_OUT, out_rate).process, tone(f, LIVE_OUT, 0.3), LIVE_OUT), "<i2"
        )
        amplitude, _ = fit_tone(y[out_rate // 50 :].astype(np.float64), out_rate, f)
        gains.append(20 * math.log10(amplitude / (0.5 * 32767)))
    return {
        "taps": Resampler(LIVE_OUT, out_rate).num_taps,
        "rejection": min(
            rejection_db(Resampler(LIVE_OUT, out_rate).process, LIVE_OUT, out_rate, f) for f in stop
        ),
        "stop_from": stop.start,
        "snr": min(tone_snr_db(Resampler(LIVE_OUT, out_rate).process, LIVE_OUT, out_rate, f) for f in band),
        "pass_to": band[-1],
        "ripple": max(gains) - min(gains),
        "delay_ms": measured_delay_ms(Resampler(LIVE_OUT, out_rate).process, LIVE_OUT, out_rate),
    }


# --- CPU per call -----------------------------------------------------------------------------------------


def speech_like(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * math.pi * f * t) / k for k, f in enumerate((220, 470, 910, 1800, 3100, 5200), 1))
    return (x / np.abs(x).max() * 12000).astype("<i2").tobytes()


async def frames_cost_ns(path: CarrierPath, frames: int) -> float:
    """CPU (process time) per 20 ms frame of one call, both ways, through the carrier's line."""
    ws = MemorySocket(path.query)
    step = path.line_rate // 50 * 2
    caller = speech_like(frames / 50, path.line_rate)
    ws.incoming = [path.start()] + [path.frame(caller[i * step : (i + 1) * step]) for i in range(frames)]
    line = path.make_line(ws)
    started = await line.receive()
    assert isinstance(started, Started), started
    rates = line.audio
    to_live = Resampler(rates.in_rate, LIVE_IN) if rates.in_rate != LIVE_IN else None
    from_live = Resampler(LIVE_OUT, rates.out_rate) if rates.out_rate != LIVE_OUT else None
    agent = speech_like(frames / 50, LIVE_OUT)
    chunk = LIVE_OUT // 50 * 2
    gc.disable()
    began = time.process_time_ns()
    for i in range(frames):
        event = await line.receive()
        assert isinstance(event, CallerAudio)
        if to_live is not None:
            to_live.process(event.pcm)
        pcm = agent[i * chunk : (i + 1) * chunk]
        await line.play(from_live.process(pcm) if from_live is not None else pcm)
    spent = time.process_time_ns() - began
    gc.enable()
    return spent / frames


async def cpu(paths: list[CarrierPath], rounds: int, frames: int) -> dict[str, dict[str, float]]:
    per_round: dict[str, list[float]] = {p.name: [] for p in paths}
    for r in range(rounds):
        order = paths[r % len(paths) :] + paths[: r % len(paths)]  # rotate: no carrier always goes first
        for path in order:
            per_round[path.name].append(await frames_cost_ns(path, frames))
    base = per_round[paths[0].name]
    result = {}
    for path in paths:
        costs = per_round[path.name]
        ratios = [c / b for c, b in zip(costs, base, strict=True)]
        result[path.name] = {
            "us_per_frame": statistics.median(costs) / 1000,
            "ratio": statistics.median(ratios),
            "ratio_lo": min(ratios),
            "ratio_hi": max(ratios),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--frames", type=int, default=500, help="20 ms frames per call and round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    paths = [make() for make in PATHS.values()]
    audio = {p.name: quality(p) for p in paths}
    costs = asyncio.run(cpu(paths, args.rounds, args.frames))
    if args.json:
        print(json.dumps({"audio": audio, "cpu": costs}, indent=2))
        return
    print(f"Machine: {describe('numpy', 'scipy')}\n")
    print("### Audio each carrier's path delivers (`benchmarks/bench_carriers.py`)\n")
    print("| carrier | line audio | agent -> caller: SNR 300-3400 Hz | SNR, whole band | bandwidth delivered "
          "| caller -> Live: SNR 300-3400 Hz | bandwidth delivered |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for p in paths:
        a = audio[p.name]
        print(
            f"| {p.name} | {p.audio} | {a['out_snr_phone']:.1f} dB | {a['out_snr_band']:.1f} dB "
            f"(to {0.85 * p.line_rate / 2 / 1000:.1f} kHz) | {a['out_band_hz'] / 1000:.2f} kHz "
            f"| {a['in_snr_phone']:.1f} dB | {a['in_band_hz'] / 1000:.2f} kHz |"
        )
    print("\n### The outbound resampler of each line rate (Live's 24 kHz -> the line's)\n")
    print("| line rate | taps | stop-band rejection | in-band SNR | pass-band ripple | delay (measured) |")
    print("|---|---|---|---|---|---|")
    for rate in sorted({p.line_rate for p in paths}):
        b = resampler_bars(rate)
        stop, band = f"{b['stop_from'] / 1000:.1f}-12 kHz", f"to {b['pass_to'] / 1000:.1f} kHz"
        print(
            f"| {rate // 1000} kHz | {b['taps']:.0f} | {b['rejection']:.1f} dB ({stop}) | {b['snr']:.1f} dB "
            f"({band}) | {b['ripple']:.3f} dB | {b['delay_ms']:.2f} ms |"
        )
    rounds = f"{args.rounds} rounds of {args.frames} frames, interleaved"
    print(f"\n### CPU per call, each carrier's path ({rounds})\n")
    print("| carrier | CPU per 20 ms frame, both ways (median) | share of one core per call | vs Twilio, "
          "same round (median, range) |")  # fmt: skip
    print("|---|---|---|---|")
    for p in paths:
        c = costs[p.name]
        print(
            f"| {p.name} | {c['us_per_frame']:.1f} us | {c['us_per_frame'] / 20000 * 100:.2f}% "
            f"| {c['ratio']:.2f}x ({c['ratio_lo']:.2f}-{c['ratio_hi']:.2f}) |"
        )


if __name__ == "__main__":
    main()
