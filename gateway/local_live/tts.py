"""Speech synthesis with espeak-ng, driven through ctypes (the espeakng-loader wheel ships the library and
its data; nothing is downloaded).

espeak-ng keeps global state (one voice, one callback), so every synthesis holds one process-wide lock.
That costs little: it synthesises at roughly a thousand times real time here, and ctypes releases the
GIL during the call. Output is resampled from espeak's 22.05 kHz to whatever the caller asks for.
"""

from __future__ import annotations

import ctypes
import functools
import re
import threading
import zlib
from fractions import Fraction

import espeakng_loader
import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_PARAM_RATE = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# Voice names of the Live API mapped loosely onto espeak-ng variants by the voice's announced gender.
_FEMALE = {
    "kore", "aoede", "leda", "zephyr", "achernar", "autonoe", "callirrhoe", "despina", "erinome", "gacrux",
    "laomedeia", "pulcherrima", "sulafat", "vindemiatrix",
}  # fmt: skip
FEMALE_VARIANT = "f3"
MALE_VARIANT = "m3"


def variant_for(voice_name: str | None) -> str:
    return FEMALE_VARIANT if (voice_name or "").lower() in _FEMALE else MALE_VARIANT


class Espeak:
    """One instance of the espeak-ng library: the process's (`engine`), or a private copy of it
    (``library``: a copy of the file under another name, loaded apart, with its own state, until `close`)."""

    def __init__(self, library: str | None = None) -> None:
        lib = ctypes.CDLL(library or espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        self.sample_rate = rate
        self._lib = lib
        self._chunks: list[bytes] = []
        self._callback = _CALLBACK(self._on_audio)  # kept referenced: espeak calls it from C
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()
        self._voices: dict[str, str] = {}

    def seed(self, value: int) -> None:
        """Seed espeak-ng's own random numbers (some voices' breath noise; by default from the clock)."""
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(value))

    def close(self) -> None:
        """Unload a private copy (its state goes with it)."""
        import _ctypes

        self._lib.espeak_Terminate()
        _ctypes.dlclose(self._lib._handle)

    def _on_audio(self, wav: ctypes.Array, n: int, _events: int) -> int:
        if n > 0:
            self._chunks.append(ctypes.string_at(wav, n * 2))
        return 0  # 0 = go on

    def _set_voice(self, language: str, variant: str) -> None:
        # BCP-47 "pt-BR" -> espeak "pt-br", else the bare language, else US English.
        candidates = [language.lower(), language.split("-")[0].lower(), "en-us"]
        for lang in candidates:
            if self._lib.espeak_SetVoiceByName(f"{lang}+{variant}".encode()) == 0:
                return
        raise RuntimeError(f"espeak-ng has no voice for {language!r}")

    def synth(self, text: str, language: str, variant: str, wpm: int) -> np.ndarray:
        data = text.encode()
        with self.lock:
            self._chunks = []
            self._set_voice(language, variant)
            self._lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
            rc = self._lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
            )
            chunks, self._chunks = self._chunks, []
        if rc != 0:
            raise RuntimeError(f"espeak_Synth failed with {rc}")
        return np.frombuffer(b"".join(chunks), dtype="<i2")


_engine: Espeak | None = None
_engine_lock = threading.Lock()


def synthesize_repeatably(
    text: str, *, rate: int, variant: str, wpm: int = 165, seed: int | None = None
) -> bytes:
    """`synthesize`, the same in every run and process: by a fresh private copy of espeak-ng, seeded from the
    text (or `seed`). The process's engine says the same words a little differently each time: espeak-ng
    carries state from one synthesis to the next, and seeds some voices' breath noise from the clock (two runs
    of the evaluation set heard the agent's phrases 6 points apart; a test of Whisper's scores failed one run
    in a few). Loads the library each time: for evaluation sets and tests, not calls."""
    espeak = Espeak(library=_private_library())
    try:
        espeak.seed(zlib.crc32(text.encode()) if seed is None else seed)
        return synthesize(text, rate=rate, variant=variant, wpm=wpm, espeak=espeak)
    finally:
        espeak.close()


@functools.cache
def _private_library() -> str:
    """A copy of espeak-ng's library under another name, loaded apart from the process's own engine; removed
    when the process exits (a loaded library may be unlinked)."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="gateway-espeak-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return shutil.copy(espeakng_loader.get_library_path(), f"{folder}/libespeak-ng-private.so")


def engine() -> Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Espeak()
        return _engine


def synthesize(
    text: str, *, rate: int = 24000, voice_name: str | None = None, language: str | None = None,
    variant: str | None = None, wpm: int = 165, espeak: Espeak | None = None,
) -> bytes:  # fmt: skip
    """PCM16LE mono at ``rate`` Hz for ``text`` (by ``espeak``, else the process's engine). Blocking: call
    it off the event loop."""
    eng = espeak or engine()
    pcm = eng.synth(text, language or "en-US", variant or variant_for(voice_name), wpm)
    if pcm.size == 0:
        return b""
    ratio = Fraction(rate, eng.sample_rate)
    from scipy.signal import resample_poly  # a second to import: only processes that speak pay it

    out = resample_poly(pcm.astype(np.float32), ratio.numerator, ratio.denominator)
    return np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE.split(text)) if s]
