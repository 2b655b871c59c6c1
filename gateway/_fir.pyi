# gateway/_fir.c (see its header): the resampler's blocks, the same bytes as gateway.audio._numpy_blocks.
import numpy as np

def polyphase(samples: bytes, taps: np.ndarray, up: int, down: int, /) -> bytes: ...
