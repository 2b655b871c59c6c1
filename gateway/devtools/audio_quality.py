"""Measurements of streaming resamplers on synthetic signals, shared by tests/test_audio.py and
benchmarks/bench_audio.py.

A "processor" is any ``Callable[[bytes], bytes]`` taking PCM16LE at ``in_rate`` and returning PCM16LE at
``out_rate`` with state kept between calls (e.g. ``Resampler(8000, 16000).process``). Signals are fed in
20 ms frames, as on a call, and the first ``skip_ms`` of output (filter warm-up from silence) is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gateway.audio import resample_block

Processor = Callable[[bytes], bytes]

FRAME_MS = 20


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5, phase: float = 0.3) -> bytes:
    """A sine of peak `amplitude` (fraction of full scale) as PCM16LE, rounded to integers."""
    t = np.arange(round(rate * seconds)) / rate
    x = amplitude * 32767.0 * np.sin(2 * np.pi * freq * t + phase)
    return np.rint(x).astype("<i2").tobytes()


def stream(process: Processor, pcm: bytes, in_rate: int, frame_ms: int = FRAME_MS) -> bytes:
    """Feed `pcm` to `process` in frames of `frame_ms` and concatenate what comes out."""
    step = 2 * in_rate * frame_ms // 1000
    return b"".join(process(pcm[i : i + step]) for i in range(0, len(pcm), step))


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float64)


def fit_tone(y: np.ndarray, rate: int, freq: float) -> tuple[float, np.ndarray]:
    """Least-squares fit of a sine at `freq` (amplitude and phase free) to `y`: (peak amplitude, residual)."""
    t = np.arange(y.size) / rate
    basis = np.column_stack((np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)))
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(math.hypot(*coef)), y - basis @ coef


def tone_snr_db(
    process: Processor,
    in_rate: int,
    out_rate: int,
    freq: float,
    amplitude: float = 0.5,
    seconds: float = 0.5,
    skip_ms: float = 30.0,
) -> float:
    """SNR of a resampled in-band tone: the best-fitting sine at the input frequency is signal, everything
    else in the output (images, aliases, distortion, rounding, DC) is noise."""
    y = _samples(stream(process, tone(freq, in_rate, seconds, amplitude), in_rate))
    y = y[round(out_rate * skip_ms / 1000) :]
    amp, residual = fit_tone(y, out_rate, freq)
    noise = float(np.mean(residual**2))
    return math.inf if noise == 0 else 10 * math.log10(amp**2 / 2 / noise)


def image_rejection_db(
    process: Processor,
    in_rate: int,
    out_rate: int,
    freq: float,
    amplitude: float = 0.5,
    seconds: float = 0.5,
    skip_ms: float = 30.0,
) -> float:
    """Up-sampling: level of the tone at `freq` over its first image at ``in_rate - freq``, in dB."""
    y = _samples(stream(process, tone(freq, in_rate, seconds, amplitude), in_rate))
    y = y[round(out_rate * skip_ms / 1000) :]
    wanted, _ = fit_tone(y, out_rate, freq)
    image, _ = fit_tone(y, out_rate, in_rate - freq)
    return math.inf if image == 0 else 20 * math.log10(wanted / image)


def rejection_db(
    process: Processor,
    in_rate: int,
    out_rate: int,
    freq: float,
    amplitude: float = 0.9,
    seconds: float = 0.5,
    skip_ms: float = 30.0,
) -> float:
    """Down-sampling: input RMS over output RMS for a tone the output cannot represent, in dB (whatever
    comes out, aliased or not, counts)."""
    y = _samples(stream(process, tone(freq, in_rate, seconds, amplitude), in_rate))
    y = y[round(out_rate * skip_ms / 1000) :]
    rms_out = float(np.sqrt(np.mean(y**2)))
    rms_in = amplitude * 32767.0 / math.sqrt(2)
    return math.inf if rms_out == 0 else 20 * math.log10(rms_in / rms_out)


def band_limited_noise(rate: int, seconds: float, top_hz: float, seed: int = 0, rms: float = 0.15) -> bytes:
    """White noise low-passed (brick wall, in the frequency domain) to 20 Hz..`top_hz`, as PCM16LE."""
    n = round(rate * seconds)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs > top_hz) | (freqs < 20)] = 0
    x = np.fft.irfft(spectrum, n)
    x *= rms * 32767.0 / np.sqrt(np.mean(x**2))
    return np.rint(np.clip(x, -32768, 32767)).astype("<i2").tobytes()


def measured_delay_ms(
    process: Processor, in_rate: int, out_rate: int, seconds: float = 1.0, seed: int = 0, upsample: int = 32
) -> float:
    """Delay of a streaming processor, measured: lag + audio held back.

    Band-limited noise (inside every pass band) goes through `process` in 20 ms frames and through the
    zero-phase `resample_block`; the lag is the peak of their cross-correlation, interpolated `upsample`
    times (by zero-padding the cross-spectrum). Audio the processor holds back (input duration minus
    output duration at the end) is added, since the caller waits for it as well.
    """
    pcm = band_limited_noise(in_rate, seconds, 0.8 * min(in_rate, out_rate) / 2, seed)
    y = _samples(stream(process, pcm, in_rate))
    ref = _samples(resample_block(pcm, in_rate, out_rate))
    n = 2 * max(y.size, ref.size)  # zero-padded: linear, not circular, correlation
    cross = np.fft.rfft(y, n) * np.conj(np.fft.rfft(ref, n))
    corr = np.fft.irfft(cross, n * upsample)
    peak = int(np.argmax(corr))
    if peak > corr.size // 2:  # negative lag
        peak -= corr.size
    lag_s = peak / upsample / out_rate
    held_s = len(pcm) / 2 / in_rate - y.size / out_rate
    return (lag_s + held_s) * 1000.0
