"""Audio codec for the phone leg: G.711 mu-law <-> PCM16LE and streaming anti-aliased resampling.

Every 20 ms frame of every call passes through here twice (caller -> Live, Live -> caller), so the hot
path is a handful of numpy calls on tables designed once per ratio and shared by all calls.

Resampler design (chosen by measurement, see benchmarks/bench_audio.py):

* Linear-phase equiripple (Parks-McClellan) low-pass FIR at the rate ``L * in_rate`` for the ratio
  ``L/M``, applied polyphase: each block of ``M`` input samples yields ``L`` output samples from one
  ``(blocks, width) @ (width, L)`` product, so the output comes out already interleaved.
  Pass band to 0.85 of the lower Nyquist rate (3.4 kHz at 8 kHz), stop band from 1.125x (down: a
  4.5 kHz tone would alias to 3.5 kHz) or 1.15x (up: the image of 3.4 kHz) of it; tap count is the
  smallest that reaches 70 dB and <= 0.05 dB ripple (measured on the quantised taps), which gives
  45 taps (8k->16k, 1.375 ms of delay) and 75 taps (24k->8k, 1.458 ms).
* Taps are integers scaled by 2**24 and samples are int16, held in float64: every product and every
  partial sum is an integer below 2**53, so the dot products are exact whatever order BLAS sums them
  in. Hence streaming output is bit-identical to one-shot output for any chunking (no clicks at frame
  boundaries by construction), and on any machine.
* Per-instance state is only the input history (``width - M`` samples) and a partial block
  (< ``M`` samples, never with 20 ms frames) plus an odd trailing byte.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gateway.filter_taps import SHIPPED_TAPS

_Blocks = Callable[[bytes, np.ndarray, int, int], bytes]
_compiled_blocks: _Blocks | None
try:  # the FIR compiled at install (setup.py); the same bytes as the numpy below, a fraction of the CPU
    from gateway._fir import polyphase as _compiled_blocks
except ImportError:  # pragma: no cover - installed where no C compiler was at hand
    _compiled_blocks = None

with warnings.catch_warnings():  # stdlib audioop is deprecated on 3.11/3.12; audioop-lts provides it on 3.13+
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop as audioop  # re-exported: the rest of the package imports it from here, warning-free

__all__ = [
    "ULAW_SILENCE",
    "InboundAudio",
    "OutboundAudio",
    "Resampler",
    "design_taps",
    "pcm16_to_ulaw",
    "resample_block",
    "ulaw_to_pcm16",
]

ULAW_SILENCE = b"\xff"
"""One mu-law byte of silence (decodes to PCM 0)."""

_BIG_ENDIAN = sys.byteorder == "big"  # audioop works in native byte order; the wire format is little-endian


def ulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 mu-law bytes -> PCM16LE (two bytes per input byte)."""
    pcm = audioop.ulaw2lin(data, 2)
    return audioop.byteswap(pcm, 2) if _BIG_ENDIAN else pcm


def pcm16_to_ulaw(data: bytes) -> bytes:
    """PCM16LE -> G.711 mu-law bytes (one byte per sample)."""
    if _BIG_ENDIAN:
        data = audioop.byteswap(data, 2)
    return audioop.lin2ulaw(data, 2)


# ---------------------------------------------------------------------------------------------------
# Filter design (once per ratio, cached and shared between instances)

_TAP_BITS = 24  # taps are integers * 2**-24: exact float64 sums (see module docstring), noise floor < -140 dB
_TARGET_ATTENUATION_DB = 70.0  # design target; the bar is 60 dB, the margin covers measurement and rounding
_MAX_RIPPLE_DB = 0.05  # peak-to-peak pass-band ripple
_PASS_FRACTION = 0.85  # of the lower Nyquist rate: 3.4 kHz at 8 kHz
_STOP_FRACTION_DOWN = 1.125  # 4.5 kHz at 8 kHz: anything above folds to <= 3.5 kHz, just outside the band
_STOP_FRACTION_UP = 1.15  # 4.6 kHz: the image of the 3.4 kHz pass-band edge
_MAX_FACTOR = 16  # L and M of the reduced ratio; beyond this use resample_block


@dataclass(frozen=True)
class _Plan:
    """Everything a Resampler needs for one ratio; shared, read-only."""

    up: int  # L
    down: int  # M
    # (L, width) float64, C-contiguous: phase r's taps, column i for input sample e - width + 1 + i (oldest
    # first, as a block's window has them). Integers times 2**-_TAP_BITS: still exact (a power of two), and
    # the sum comes out scaled. Every partial sum is an exact multiple of 2**-_TAP_BITS, so any chunking and
    # any order of the sums (numpy's BLAS, gateway/_fir.c) agree.
    phases: np.ndarray
    width: int  # input samples seen by one block of M inputs
    history: int  # samples kept between calls: width - M
    num_taps: int  # of the prototype filter at L * in_rate
    delay_ms: float  # signal delay of the output (group delay minus the block alignment, see _design)
    pass_hz: float
    stop_hz: float
    attenuation_db: float  # designed stop-band attenuation (from the quantised taps)
    ripple_db: float  # designed pass-band ripple, peak to peak


def _response_db(h: np.ndarray, fs: float, pass_hz: float, stop_hz: float) -> tuple[float, float]:
    """(stop-band attenuation, pass-band ripple) of filter h in dB, from a dense FFT grid."""
    n_fft = 1 << 15
    mag = np.abs(np.fft.rfft(h, n_fft))
    freqs = np.arange(mag.size) * fs / n_fft
    passband = mag[freqs <= pass_hz]
    stopband = mag[freqs >= stop_hz]
    gain = passband.mean()
    attenuation = -20.0 * math.log10(max(stopband.max() / gain, 1e-12))
    ripple = 20.0 * math.log10(passband.max() / passband.min())
    return attenuation, ripple


def _band(in_rate: int, out_rate: int) -> tuple[int, int, float, float, float]:
    """(L, M, the filter rate, pass edge, stop edge) of the streaming ratio in_rate -> out_rate."""
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    if max(up, down) > _MAX_FACTOR:
        raise ValueError(f"streaming ratio {in_rate}->{out_rate} is too fine; use resample_block")
    nyquist = min(in_rate, out_rate) / 2
    stop = (_STOP_FRACTION_DOWN if out_rate < in_rate else _STOP_FRACTION_UP) * nyquist
    return up, down, float(in_rate * up), _PASS_FRACTION * nyquist, stop


def design_taps(in_rate: int, out_rate: int) -> np.ndarray:
    """The quantised taps (integers, in float64) of the shortest equiripple filter that meets the spec for
    in_rate -> out_rate. Slow (scipy.signal takes a second to import): the ratios every call uses ship
    designed, in gateway.filter_taps (tests/test_audio.py designs them again and compares)."""
    from scipy.signal import remez

    up, _down, fs, pass_hz, stop_hz = _band(in_rate, out_rate)
    # Start below the usual equiripple length estimate and grow until the quantised taps meet the spec.
    estimate = (_TARGET_ATTENUATION_DB - 13.0) / (14.6 * (stop_hz - pass_hz) / fs)
    num_taps = max(int(estimate * 0.8) | 1, 9)
    while True:
        if num_taps > 4000:  # pragma: no cover - would mean the spec above is broken
            raise RuntimeError(f"no FIR meets the spec for {in_rate}->{out_rate}")
        try:
            h = remez(num_taps, [0, pass_hz, stop_hz, fs / 2], [1, 0], weight=[1, 10], fs=fs, maxiter=200)
        except ValueError:  # pragma: no cover - remez did not converge at this length; try the next one
            num_taps += 2
            continue
        # gain L makes up for the zeros stuffed between inputs
        hq: np.ndarray = np.round(h * up * 2.0**_TAP_BITS)
        attenuation, ripple = _response_db(hq, fs, pass_hz, stop_hz)
        if attenuation >= _TARGET_ATTENUATION_DB and ripple <= _MAX_RIPPLE_DB:
            return hq
        num_taps += 2  # odd lengths only: integer group delay at L * in_rate


@functools.cache
def _design(in_rate: int, out_rate: int) -> _Plan:
    up, down, fs, pass_hz, stop_hz = _band(in_rate, out_rate)
    shipped = SHIPPED_TAPS.get((in_rate, out_rate))
    hq = np.array(shipped, dtype=np.float64) if shipped is not None else design_taps(in_rate, out_rate)
    attenuation, ripple = _response_db(hq, fs, pass_hz, stop_hz)
    if attenuation < _TARGET_ATTENUATION_DB or ripple > _MAX_RIPPLE_DB:  # shipped taps edited by hand
        raise RuntimeError(
            f"the taps for {in_rate}->{out_rate} miss the spec: {attenuation:.1f} dB, {ripple} dB"
        )
    num_taps = hq.size

    # Block q (inputs q*M .. q*M+M-1, the last one e) yields outputs m = q*L + r, r < L. Output m is the
    # filter output at intermediate index t = (m+1)*M - 1, the latest one computable from the block, so
    # a block's outputs are ready as soon as it is complete and nothing else is held back. Input e - j
    # sits at t' = L*(e - j), i.e. tap index t - t' = (r+1)*M - 1 - L*(M-1) + L*j.
    offsets = [(r + 1) * down - 1 - up * (down - 1) for r in range(up)]
    width = max(-(-(num_taps - o) // up) for o in offsets)
    table = np.zeros((width, up))
    for r, o in enumerate(offsets):
        for j in range(width):
            k = o + up * j
            if 0 <= k < num_taps:
                table[width - 1 - j, r] = hq[k]  # row order = oldest input first, as the window view has it
    if width < down:  # pragma: no cover - no designable ratio comes near: a window spans 26+ blocks
        raise RuntimeError(f"the filter for {in_rate}->{out_rate} is shorter than a block of {down} inputs")
    bound = np.abs(table).sum(axis=0).max() * 32768.0
    assert bound < 2.0**53, "tap scale too large for exact float64 accumulation"
    # Output m holds the signal at t - D (D = (N-1)/2 group delay) but is stamped m*M: delay D - (M-1).
    delay_ms = ((num_taps - 1) / 2 - (down - 1)) / fs * 1000.0
    phases = np.ascontiguousarray(table.T) * 2.0**-_TAP_BITS
    phases.setflags(write=False)
    return _Plan(
        up=up,
        down=down,
        phases=phases,
        width=width,
        history=max(width - down, 0),
        num_taps=num_taps,
        delay_ms=delay_ms,
        pass_hz=pass_hz,
        stop_hz=stop_hz,
        attenuation_db=attenuation,
        ripple_db=ripple,
    )


# The two ratios every narrowband call uses, and the one a wideband (16 kHz) line needs out: design them at
# import, not on the first frame of the first call.
_design(8000, 16000)
_design(24000, 8000)
_design(24000, 16000)


def _numpy_blocks(samples: bytes, phases: np.ndarray, up: int, down: int) -> bytes:
    """The resampler's blocks in numpy: `samples` (PCM16LE) are the history and then whole blocks of `down`
    new samples; each block's window times `phases` (L, width) gives its L outputs. gateway/_fir.c computes
    the same bytes (the sums are exact, see the module's docstring) and is what runs where it was compiled."""
    width = phases.shape[1]
    buf = np.frombuffer(samples, "<i2").astype(np.float64)
    blocks = (buf.size - width) // down + 1
    # Overlapping windows, one row per block, without copying (the ndarray constructor is far cheaper than
    # as_strided / sliding_window_view); np.dot copies them once and hands them to BLAS.
    windows = np.ndarray((blocks, width), np.float64, buf, 0, (8 * down, 8))
    acc: np.ndarray = np.dot(windows, phases.T)
    np.rint(acc, out=acc)
    np.maximum(acc, -32768.0, out=acc)  # two ufuncs: half the overhead of np.clip
    np.minimum(acc, 32767.0, out=acc)
    return acc.astype("<i2").tobytes()


_blocks: _Blocks = _numpy_blocks if _compiled_blocks is None else _compiled_blocks
COMPILED_FIR = _compiled_blocks is not None
"""Is the compiled FIR running (start-up logs it; without it every call costs more CPU, nothing else)?"""


class Resampler:
    """Streaming, stateful, anti-aliased PCM16LE mono resampler for a rational ratio.

    ``process`` accepts any byte count; an odd trailing byte and an incomplete block of M input samples
    are kept for the next call. Output is bit-identical however the input is chunked.
    """

    __slots__ = ("_block_bytes", "_hist", "_hist_bytes", "_pending", "_plan", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._plan: _Plan | None = None if in_rate == out_rate else _design(in_rate, out_rate)
        down = self._plan.down if self._plan else 1
        self._block_bytes = 2 * down
        self._hist_bytes = 2 * self._plan.history if self._plan else 0
        self.reset()

    def reset(self) -> None:
        """Back to the initial state: silent history, nothing pending."""
        self._pending = b""
        self._hist = bytes(self._hist_bytes)  # PCM16LE: the last input samples the next block's windows see

    @property
    def delay_ms(self) -> float:
        """Signal delay from input to output (0 for pass-through).

        Group delay of the filter net of the block alignment; this is what cross-correlating input and
        output measures. Nothing else is held back when every call brings whole blocks of M samples (all
        20 ms frames do); otherwise the incomplete block (< M input samples) waits for the next call.
        """
        return self._plan.delay_ms if self._plan else 0.0

    @property
    def num_taps(self) -> int:
        """Length of the prototype FIR (0 for pass-through)."""
        return self._plan.num_taps if self._plan else 0

    def process(self, pcm: bytes) -> bytes:
        """Resample the next chunk; returns every output sample the input so far determines."""
        if self._pending:
            pcm = self._pending + pcm
        usable = len(pcm) - len(pcm) % self._block_bytes
        self._pending = pcm[usable:]
        plan = self._plan
        if plan is None:
            return pcm[:usable]
        if not usable:
            return b""
        samples = self._hist + pcm[:usable]
        self._hist = samples[len(samples) - self._hist_bytes :]
        return _blocks(samples, plan.phases, plan.up, plan.down)

    def flush(self) -> bytes:
        """Emit what the filter still holds (partial block, then the ring-out of the group delay) and reset.

        For the end of a stream (e.g. the end of an agent turn): without it the last ~1.5 ms are lost.
        """
        if self._plan is None:
            out = self._pending[: len(self._pending) & ~1]
            self.reset()
            return out
        down = self._plan.down
        pending_samples = len(self._pending) // 2
        delay_in = math.ceil(self._plan.delay_ms * self.in_rate / 1000.0)
        zeros = (-pending_samples) % down + down * -(-delay_in // down)
        self._pending = self._pending[: pending_samples * 2]
        out = self.process(bytes(2 * zeros))
        self.reset()
        return out


class InboundAudio:
    """Caller audio: mu-law 8 kHz bytes (Twilio) -> PCM16LE at `rate`.

    16000 by default; 8000 skips the resampler (decode only).
    """

    __slots__ = ("_resampler", "rate")

    def __init__(self, rate: int = 16000) -> None:
        self.rate = rate
        self._resampler = None if rate == 8000 else Resampler(8000, rate)

    def convert(self, ulaw: bytes) -> bytes:
        """One Twilio media payload (any length) -> PCM16LE at `rate`."""
        pcm = audioop.ulaw2lin(ulaw, 2)
        if _BIG_ENDIAN:
            pcm = audioop.byteswap(pcm, 2)
        return pcm if self._resampler is None else self._resampler.process(pcm)

    @property
    def delay_ms(self) -> float:
        return 0.0 if self._resampler is None else self._resampler.delay_ms

    def reset(self) -> None:
        if self._resampler is not None:
            self._resampler.reset()


class OutboundAudio:
    """Agent audio: PCM16LE 24 kHz (Live) -> mu-law 8 kHz bytes (Twilio)."""

    __slots__ = ("_resampler", "in_rate")

    def __init__(self, in_rate: int = 24000) -> None:
        self.in_rate = in_rate
        self._resampler = Resampler(in_rate, 8000)

    def convert(self, pcm: bytes) -> bytes:
        """One chunk of Live audio (any length) -> mu-law at 8 kHz (may be empty for tiny chunks)."""
        out = self._resampler.process(pcm)
        if _BIG_ENDIAN:
            out = audioop.byteswap(out, 2)
        return audioop.lin2ulaw(out, 2)

    def flush(self) -> bytes:
        """End of a turn: the mu-law of what the resampler still holds, then a clean state."""
        out = self._resampler.flush()
        if _BIG_ENDIAN:
            out = audioop.byteswap(out, 2)
        return audioop.lin2ulaw(out, 2)

    def reset(self) -> None:
        """Barge-in: drop filter history and leftovers so the next turn starts clean."""
        self._resampler.reset()

    @property
    def delay_ms(self) -> float:
        return self._resampler.delay_ms


def resample_block(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """One-shot, zero-delay resampling of a whole PCM16LE signal, any rational ratio (quality over speed).

    For offline use (caller simulator, WAV files): scipy's polyphase filter compensates its own delay, so
    the output is time-aligned with the input and has ``ceil(n * out_rate / in_rate)`` samples.
    """
    if len(pcm) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    if in_rate == out_rate or not pcm:
        return bytes(pcm)
    from scipy.signal import firwin, resample_poly

    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    # Much longer than resample_poly's default (10 zero crossings a side), so the transition band is narrow:
    # flat to ~0.87 and >= 90 dB down from ~1.03 of the lower Nyquist rate.
    half_len = 40 * max(up, down)
    h = firwin(2 * half_len + 1, 0.95 / max(up, down), window=("kaiser", 9.0))
    y: np.ndarray = resample_poly(np.frombuffer(pcm, "<i2").astype(np.float64), up, down, window=h)
    out: np.ndarray = np.clip(np.rint(y), -32768, 32767)
    return out.astype("<i2").tobytes()
