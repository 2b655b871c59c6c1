"""RECORDING_NOTICE: what a caller hears before the agent speaks on a recorded call.

A text is said by the agent itself, in its own voice, as the first words of its first turn (put in front of
its greeting, word for word, the way a rendered greeting is: see gateway.outbound.variables). A value ending
in `.wav` is a pre-rendered prompt, played on the line before the agent's first audio (the carrier plays
what is queued in order, so the agent's greeting follows it).
"""

from __future__ import annotations

import numpy as np
import soundfile

from gateway.outbound.variables import speak


def is_prompt_file(notice: str) -> bool:
    """RECORDING_NOTICE names a pre-rendered prompt (a WAV file) rather than a text to say."""
    return notice.lower().endswith(".wav")


def read_prompt(path: str) -> tuple[bytes, int]:
    """A WAV prompt as PCM16LE mono and its rate (a stereo file is mixed down). Raises ValueError."""
    try:
        data, rate = soundfile.read(path, dtype="int16", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        raise ValueError(f"cannot read {path!r} as a WAV file: {exc}") from None
    mono = data.mean(axis=1).astype("<i2") if data.shape[1] > 1 else data[:, 0].astype("<i2")
    return np.ascontiguousarray(mono).tobytes(), int(rate)


def with_notice(notice: str, greeting: str) -> str:
    """The agent's first turn on a recorded call: the notice word for word, then its greeting (if any)."""
    if not greeting:
        return speak(notice)
    return f'[First say this, word for word: "{notice}" Then do what follows.] {greeting}'
