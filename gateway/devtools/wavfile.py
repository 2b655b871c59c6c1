"""WAV in and out for the caller simulator: load any PCM/float WAV as 8 kHz mono PCM16LE, write recordings."""

from __future__ import annotations

import os
import wave

import numpy as np

from gateway.audio import resample_block

TELEPHONY_RATE = 8000

PathLike = str | os.PathLike[str]


def _to_float(data: np.ndarray) -> np.ndarray:
    """Samples of any WAV sample type as float64 in [-1, 1)."""
    if data.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        return (data.astype(np.float64) - 128.0) / 128.0
    if data.dtype == np.int16:
        return data.astype(np.float64) / 32768.0
    if data.dtype == np.int32:  # 24-bit files are left-justified into int32 by scipy, so this covers both
        return data.astype(np.float64) / 2147483648.0
    if data.dtype.kind == "f":
        return data.astype(np.float64)
    raise ValueError(f"unsupported WAV sample type {data.dtype}")


def load_wav(path: PathLike) -> bytes:
    """Read a WAV file (8/16/24/32-bit PCM or float, any rate and channel count) as 8 kHz mono PCM16LE."""
    return _load(path, channel=None)[0]


def load_caller_wav(path: PathLike, rate: int = TELEPHONY_RATE) -> tuple[bytes, int]:
    """The caller's side of a recording as mono PCM16LE (8 kHz, or `rate` for a wideband carrier), and the
    file's channel count: a mono file as it is, the first (left) channel of a stereo one, where `gateway
    demo` and `gateway call --record-stereo` put the caller (the right one is what the caller heard: mixed
    in, the agent would talk to itself)."""
    return _load(path, channel=0, rate=rate)


def _load(path: PathLike, channel: int | None, rate: int = TELEPHONY_RATE) -> tuple[bytes, int]:
    import scipy.io.wavfile  # its import is a tenth of a second of every process's start: only readers pay

    file_rate, data = scipy.io.wavfile.read(os.fspath(path))
    samples = _to_float(data)
    channels = samples.shape[1] if samples.ndim == 2 else 1
    if samples.ndim == 2:
        # one channel, or mixed down: the average keeps the level of a mono source duplicated to stereo
        samples = samples[:, channel] if channel is not None else samples.mean(axis=1)
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
    return resample_block(pcm, int(file_rate), rate), channels


def write_wav(path: PathLike, pcm: bytes, rate: int, channels: int = 1) -> None:
    """Write interleaved PCM16LE as a WAV file."""
    with wave.open(os.fspath(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)


def write_stereo_wav(path: PathLike, left: bytes, right: bytes, rate: int) -> None:
    """Write two mono PCM16LE tracks as one stereo WAV, padding the shorter one with silence."""
    a = np.frombuffer(left[: len(left) // 2 * 2], "<i2")
    b = np.frombuffer(right[: len(right) // 2 * 2], "<i2")
    n = max(len(a), len(b))
    stereo = np.zeros((n, 2), dtype="<i2")
    stereo[: len(a), 0] = a
    stereo[: len(b), 1] = b
    write_wav(path, stereo.tobytes(), rate, channels=2)
