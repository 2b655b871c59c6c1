"""What recording a call costs (RECORDING=gateway): CPU per call-second, bytes per minute, memory per call.

Two parts, each interleaved, so that only ratios measured side by side are claimed (the machine drifts):

1. Through the gateway (`--calls`, default 25): the load harness and the scripted Live peer of
   bench_load.py against `gateway serve` with RECORDING=off and RECORDING=gateway (a fresh process each,
   recordings to a temporary directory), alternating which goes first, `--rounds` rounds. CPU per
   call-second and memory per call are bench_load's figures (the process's CPU, its encoder thread
   included, over the window when every call was up; steady RSS minus idle RSS over the calls); bytes per
   minute are the FLAC files' sizes over their length.
2. The format: the same minute of stereo phone audio written a second at a time as FLAC and as Ogg Opus
   through libsndfile, alternating; CPU per call-second, KiB per minute.
3. The recorder alone, in process (no sockets): a minute of a call's line events (a caller frame every
   20 ms, an agent reply queued faster than real time, a barge-in clear) fed to a `RecordingLine` over a
   line that does nothing, against the same events fed to the bare line; CPU of the process (encoder
   thread included) per call-second, and the most the recorder held at once.

Run: python benchmarks/bench_recording.py [--calls 25] [--duration 20] [--rounds 3]
Prints Markdown; each load run's report goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
from bench_load import gateway_process
from machine import describe

from gateway.call.line import CallerAudio, Ended, LineAudio, LineEvent
from gateway.devtools.load import ChildProcessPeer, Figures, LoadOptions, analyze, report, run_load
from gateway.recording.recorder import Recorder, RecordingLine

TARGET_RATIO = 1.15  # recording on costs at most 15% more CPU per call-second


# --- 1. through the gateway -----------------------------------------------------------------------------


def recordings_in(folder: Path) -> tuple[int, float]:
    """The recordings' bytes and seconds."""
    files = list(folder.glob("*/*.flac"))
    return sum(f.stat().st_size for f in files), sum(soundfile.info(str(f)).duration for f in files)


async def load_round(peer: ChildProcessPeer, mode: str, calls: int, duration: float) -> tuple[Figures, float]:
    """One load run with RECORDING=mode; (figures, bytes per minute of the recordings or nan)."""
    with tempfile.TemporaryDirectory(prefix="bench-recordings-") as folder:
        env = {"RECORDING": mode, "RECORDINGS_URL": folder}
        ramp = min(5.0, max(1.0, calls / 20))
        async with gateway_process(peer.url, extra_env=env) as (url, pid):
            options = LoadOptions(url, calls, duration_s=duration, ramp_s=ramp, gateway_pid=pid)
            figures = analyze(await run_load(options, peer))
            await asyncio.sleep(1.0)  # the last recordings are closed and renamed into place
        size, seconds = recordings_in(Path(folder))
    print(f"<!-- {mode}, {calls} calls:\n{report(figures)}\n-->", file=sys.stderr, flush=True)
    return figures, (size / (seconds / 60) if seconds else math.nan)


# --- 2. the format ---------------------------------------------------------------------------------------

FORMATS = {"FLAC": ("FLAC", "PCM_16", ".flac"), "Ogg Opus": ("OGG", "OPUS", ".ogg")}


def stereo_call(seconds: float) -> np.ndarray:
    """A call's two sides as the recorder writes them: each speaking about half the time, in turns."""
    caller = np.frombuffer(speech_like(seconds, 3), dtype="<i2")
    agent = np.roll(np.frombuffer(speech_like(seconds, 4), dtype="<i2"), 8000 * 2)
    return np.ascontiguousarray(np.stack([caller, agent], axis=1))


def formats(repeats: int) -> dict[str, tuple[list[float], float]]:
    """ms CPU per call-second of each format (runs alternating), and its KiB per minute."""
    audio = stereo_call(60.0)
    out: dict[str, tuple[list[float], float]] = {name: ([], 0.0) for name in FORMATS}
    with tempfile.TemporaryDirectory(prefix="bench-formats-") as folder:
        for r in range(repeats):
            for name in FORMATS if r % 2 == 0 else reversed(FORMATS):
                container, subtype, ext = FORMATS[name]
                path = Path(folder) / f"{r}{ext}"
                cpu = time.process_time()
                with soundfile.SoundFile(path, "w", 8000, 2, format=container, subtype=subtype) as f:
                    for i in range(0, len(audio), 8000):
                        f.write(audio[i : i + 8000])
                out[name][0].append((time.process_time() - cpu) * 1000 / 60)
                out[name] = (out[name][0], path.stat().st_size / 1024)
    return out


# --- 3. the recorder alone ------------------------------------------------------------------------------


class NullLine:
    """A line that carries nothing anywhere: what is left is the recording's own cost."""

    audio = LineAudio(8000, 8000)
    bad_messages = 0

    def __init__(self, events: list[LineEvent]) -> None:
        self._events = iter(events)

    async def receive(self) -> LineEvent:
        return next(self._events, Ended("stop"))

    async def play(self, pcm: bytes) -> None:
        pass

    async def clear(self) -> None:
        pass

    async def mark(self, name: str) -> None:
        pass

    async def transfer(self, target: str) -> bool:
        return False

    async def close(self, refusal: str | None = None) -> None:
        pass


def speech_like(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 8000)) / 8000
    x = sum(
        np.sin(2 * math.pi * f * t + rng.uniform(0, 6)) / k for k, f in enumerate((220, 470, 910, 1800), 1)
    )
    envelope = (np.sin(2 * math.pi * 0.3 * t) > 0).astype(float)  # talk, pause, talk...
    noisy = x * envelope * 5000 + rng.normal(0, 60, t.size)
    return noisy.astype("<i2").tobytes()


async def drive(line: NullLine | RecordingLine, minutes: float, clock: list[float]) -> None:
    """A call's events at 50 caller frames a second, with the clock moving 20 ms per frame: every 6 s an
    agent reply of 3 s queued in 300 ms chunks, talked over once a minute."""
    caller = speech_like(6.0, 1)
    reply = [speech_like(0.3, 2 + i) for i in range(10)]
    frames = int(minutes * 60 * 50)
    for n in range(frames):
        clock[0] = n * 20.0
        await line.receive()
        if n % 300 == 10:
            for chunk in reply:
                await line.play(chunk)
        if n % 3000 == 100:
            await line.clear()
    del caller


async def recorder_alone(minutes: float, repeats: int) -> tuple[list[float], list[float], int]:
    """ms CPU per call-second without and with the recorder, interleaved; the most the recorder held."""
    frame = speech_like(0.02, 9)
    bare_ms, recorded_ms, held = [], [], 0
    with tempfile.TemporaryDirectory(prefix="bench-recorder-") as folder:
        for r in range(repeats):
            for with_recorder in (False, True) if r % 2 == 0 else (True, False):
                events: list[LineEvent] = [CallerAudio(frame) for _ in range(int(minutes * 60 * 50))]
                line: NullLine | RecordingLine = NullLine(events)
                clock = [0.0]
                if with_recorder:
                    path = Path(folder) / f"r{r}.flac"
                    recorder = Recorder(path.name, path.as_uri(), path, NullLine.audio, 0.0)
                    line = RecordingLine(line, recorder, clock=lambda now=clock: now[0])
                cpu = time.process_time()
                await drive(line, minutes, clock)
                if isinstance(line, RecordingLine):
                    held = max(held, line.recorder.memory_bytes)
                    _, closed = line.recorder.finish(clock[0])
                    await asyncio.wrap_future(closed)
                (recorded_ms if with_recorder else bare_ms).append(
                    (time.process_time() - cpu) * 1000 / (minutes * 60)
                )
    return bare_ms, recorded_ms, held


def spread(values: list[float], fmt: str = ".3f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}} .. {max(values):{fmt}})"


async def main(args: argparse.Namespace) -> None:
    machine = describe("soundfile", "numpy", "uvicorn")
    print(f"Machine: {machine}; libsndfile {soundfile.__libsndfile_version__}\n")
    print(
        f"### The format (a minute of stereo 8 kHz speech, written a second at a time, {args.repeats} runs)\n"
    )
    print("| format | ms CPU per call-second | KiB per minute |\n|---|---:|---:|")
    for name, (cpu, size) in formats(args.repeats).items():
        print(f"| {name} | {spread(cpu)} | {size:.0f} |")
    print()
    bare, recorded, held = await recorder_alone(args.minutes, args.repeats)
    print(f"### The recorder alone ({args.minutes:g} min of line events, {args.repeats} runs interleaved)\n")
    print(
        "| ms CPU per call-second | the line alone (does nothing) | with the recorder | the recorder's own |"
    )
    print("|---|---:|---:|---:|")
    own = spread([b - a for a, b in zip(bare, recorded, strict=True)])
    print(f"| median (min .. max) | {spread(bare)} | {spread(recorded)} | {own} |")
    print(f"\nMost the recorder held at once: {held / 1024:.0f} KiB (the carrier's queue and the batch).\n")
    if args.calls == 0:
        return
    runs: dict[str, list[Figures]] = {"off": [], "gateway": []}
    sizes: list[float] = []
    async with ChildProcessPeer() as peer:
        for r in range(args.rounds):
            for mode in ("off", "gateway") if r % 2 == 0 else ("gateway", "off"):
                figures, per_minute = await load_round(peer, mode, args.calls, args.duration)
                runs[mode].append(figures)
                if mode == "gateway":
                    sizes.append(per_minute)
    cpu_off = [f.gateway_ms_per_call_s for f in runs["off"]]
    cpu_on = [f.gateway_ms_per_call_s for f in runs["gateway"]]
    ratio = [b / a for a, b in zip(cpu_off, cpu_on, strict=True)]
    kib_off = [f.rss_per_call / 1024 for f in runs["off"]]
    kib_on = [f.rss_per_call / 1024 for f in runs["gateway"]]
    what = f"{args.calls} calls of {args.duration:g} s, {args.rounds} rounds, alternating"
    print(f"### Through the gateway ({what})\n")
    print("| figure | RECORDING=off | RECORDING=gateway | gateway / off (same round) |\n|---|---:|---:|---:|")
    print(f"| ms CPU per call-second | {spread(cpu_off)} | {spread(cpu_on)} | {spread(ratio, '.2f')} |")
    more = spread([b - a for a, b in zip(kib_off, kib_on, strict=True)], "+.0f")
    print(f"| KiB RSS per call | {spread(kib_off, '.0f')} | {spread(kib_on, '.0f')} | {more} KiB |")
    print(f"| KiB of recording per minute of call | | {spread([s / 1024 for s in sizes], '.0f')} | |")
    met = statistics.median(ratio) <= TARGET_RATIO
    print(f"\nTarget: on / off CPU per call-second <= {TARGET_RATIO}: {'met' if met else '**missed**'}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=25, help="calls per load run (0: the recorder alone)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=2.0, help="the recorder alone: line events per run")
    parser.add_argument("--repeats", type=int, default=6)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
