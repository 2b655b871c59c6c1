"""Test signals and measures of what the caller heard.

One tone generator serves the project, ``gateway.devtools.audio_quality.tone``; the signals here name what
a tone stands for in a test (an agent's voice from Live, a caller's voice on the phone line).
"""

from __future__ import annotations

import numpy as np

from gateway.devtools.audio_quality import tone

AGENT_RATE = 24000  # what Live sends
LINE_RATE = 8000  # the phone line: what the caller says and hears
LINE_FRAME = 160  # samples in one 20 ms media frame


def agent_tone(seconds: float, freq: float = 440.0) -> bytes:
    """Stand-in for the agent's voice: a tone as PCM16LE at Live's output rate."""
    return tone(freq, AGENT_RATE, seconds, amplitude=0.25, phase=0.0)


def caller_tone(seconds: float, freq: float = 300.0) -> bytes:
    """Stand-in for the caller's voice: a tone as PCM16LE at the phone line's rate."""
    return tone(freq, LINE_RATE, seconds, amplitude=0.2, phase=0.0)


def room_noise(seconds: float, rate: int = 16000, seed: int = 0) -> bytes:
    """Quiet noise, as a line that is not digitally silent carries (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 20, int(seconds * rate)).astype("<i2").tobytes()


def loud_seconds(heard: bytes, threshold: int = 1000) -> float:
    """How long the caller heard something: 20 ms line frames whose peak is over `threshold`."""
    samples = np.frombuffer(heard, "<i2")
    frames = samples[: samples.size // LINE_FRAME * LINE_FRAME].reshape(-1, LINE_FRAME)
    return float((np.abs(frames).max(axis=1) > threshold).sum() * 0.02)
