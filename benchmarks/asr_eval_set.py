"""The recognizer's evaluation set: caller utterances as a phone line carries them, generated, never stored.

Each phrase is spoken by espeak-ng (the backend's own synthesizer, `gateway/local_live/tts.py`) in one of
several voices and speeds, band-limited to the telephone band (300-3400 Hz), optionally with line noise
(20 dB SNR, plus a little mains hum), encoded to 8 kHz G.711 mu-law as Twilio sends it, decoded and
upsampled to 16 kHz by the gateway's own path (`gateway/audio.py`'s `InboundAudio`), with the 0.3 s before
and 0.5 s after that the VAD hands the recognizer around an utterance.

Two sets that share no phrase and no voice:

- ``TEST`` is held out: the figures in BENCHMARKS.md come from it and nothing was tuned on it.
- ``TUNE`` is what parameters (language weight, insertion penalty, the domain language's weight) were
  chosen on. Its goodbyes and general sentences were extended for the third part of issue 16 (the closing
  margin and the grammar's beams): hang-ups are decided on them, and five goodbyes were too few to tell.

Each phrase is rendered in ``CONDITIONS_PER_PHRASE`` of the set's voice x speed x noise conditions, chosen
by rotation so that every condition is used about equally (``full=True``: all of them). The references are
written as espeak says them (numbers in words), lower case, no punctuation.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.signal import butter, sosfilt

from gateway.audio import InboundAudio, pcm16_to_ulaw

LINE_RATE = 8000
CONDITIONS_PER_PHRASE = 4

# The agent's intents first (what the local agent understands), then free speech.
INTENT_CATEGORIES = ("greetings", "names", "times", "goodbyes", "transfers", "yes/no", "numbers")
GENERAL = "general"

TEST: dict[str, tuple[str, ...]] = {
    "greetings": (
        "hello", "hi there", "good morning", "hello can you hear me", "hey how are you", "good afternoon",
    ),
    "names": (
        "my name is john smith", "this is sarah calling", "my name is david", "it is maria speaking",
        "my name is peter brown", "this is anna",
    ),
    "times": (
        "what time is it", "can you tell me the time", "what is the time please", "what time is it now",
        "tell me the time", "do you know what time it is",
    ),
    "goodbyes": (
        "goodbye", "please hang up", "bye bye", "hang up the call", "end the call please",
        "thank you goodbye", "that is all goodbye", "you can hang up now",
    ),
    "transfers": (
        "transfer me to an operator", "can i speak to a real person", "i want to talk to a human",
        "put me through to an agent", "connect me to someone please", "transfer my call please",
    ),
    "yes/no": ("yes", "no", "yes please", "no thank you", "that is right", "yes that is correct"),
    "numbers": (
        "one two three four", "my number is five five five one two three four", "seven", "twenty five",
        "the code is nine eight seven", "one hundred",
    ),
    GENERAL: (
        "the weather is lovely today", "i would like to book a table for two",
        "my package has not arrived yet", "i need help with my account", "the train was late this morning",
        "can you send me the invoice", "we are having a party on saturday", "the meeting starts at ten",
    ),
}  # fmt: skip

TUNE: dict[str, tuple[str, ...]] = {
    "greetings": ("hi", "hello there", "good evening", "hey"),
    "names": ("my name is michael", "this is laura", "my name is james wilson", "it is tom here"),
    "times": ("what is the time", "could you tell me what time it is", "what's the time"),
    "goodbyes": (
        "bye", "hang up please", "goodbye thank you", "end the call", "ok bye now",
        "bye now", "okay goodbye", "thanks bye", "please end the call", "hang up now", "can you hang up",
        "i am done goodbye", "hang up the phone",
    ),
    "transfers": ("can i talk to an operator", "transfer me please", "i need a human", "get me a person"),
    "yes/no": ("yeah", "nope", "yes it is", "no it is not"),
    "numbers": ("three", "eight six four two", "forty two", "my code is one one two"),
    GENERAL: (
        "i lost my credit card", "the shop closes at six", "please send a taxi to the station",
        "my daughter is coming home tonight", "the printer does not work",
        "i called about my bill", "is the store open on sunday", "can you call me back later",
        "i have a question about my order", "hold on a second", "my phone is broken",
        "i will be there by noon", "the bus was full again",
    ),
}  # fmt: skip

# (voice variant, words per minute); the demo caller and the agent use m3 and f3: neither is in a set.
TEST_VOICES = (("m1", 140), ("f2", 140), ("m7", 175), ("f4", 175), ("m5", 160))
TUNE_VOICES = (("m2", 150), ("f1", 150), ("m4", 170), ("f5", 170))
NOISES = ("clean", "line noise")


@dataclass(frozen=True, slots=True)
class Utterance:
    category: str
    text: str  # the reference
    voice: str
    wpm: int
    noise: str

    @property
    def condition(self) -> str:
        return f"{self.voice}@{self.wpm} {self.noise}"


def utterances(which: str = "test", *, full: bool = False) -> list[Utterance]:
    phrases, voices = (TEST, TEST_VOICES) if which == "test" else (TUNE, TUNE_VOICES)
    conditions = list(itertools.product(voices, NOISES))
    out = []
    k = 0
    for category, texts in phrases.items():
        for text in texts:
            chosen = conditions if full else [
                conditions[(k + i * 3) % len(conditions)] for i in range(CONDITIONS_PER_PHRASE)
            ]  # fmt: skip
            k += 1
            out += [Utterance(category, text, v, wpm, noise) for (v, wpm), noise in chosen]
    return out


@cache
def _telephone_band() -> np.ndarray:
    return butter(4, [300, 3400], btype="bandpass", fs=LINE_RATE, output="sos")


def line_audio(u: Utterance, seed: int = 0) -> bytes:
    """The utterance as the line carries it: 8 kHz PCM16 before mu-law (speech, band-limited, noise)."""
    speech = np.frombuffer(_speech(u), "<i2")
    speech = sosfilt(_telephone_band(), speech.astype(np.float64))
    rng = np.random.default_rng([seed, zlib.crc32(u.condition.encode()), zlib.crc32(u.text.encode())])
    pad_before, pad_after = int(0.3 * LINE_RATE), int(0.5 * LINE_RATE)
    signal = np.concatenate([np.zeros(pad_before), speech, np.zeros(pad_after)])
    floor = rng.normal(0, 6, signal.size)  # a line is never digitally silent
    if u.noise == "line noise":
        active = speech[np.abs(speech) > 0.05 * np.abs(speech).max()]
        rms = float(np.sqrt(np.mean(active**2))) if active.size else 1000.0
        noise = sosfilt(_telephone_band(), rng.normal(0, rms / 10 ** (20 / 20), signal.size))
        t = np.arange(signal.size) / LINE_RATE
        hum = 0.01 * rms * np.sin(2 * np.pi * 60 * t)
        floor = floor + noise + hum
    return np.clip(np.round(signal + floor), -32768, 32767).astype("<i2").tobytes()


def _speech(u: Utterance) -> bytes:
    """The utterance as espeak-ng says it at the line's rate, the same in every run (`synthesize_repeatably`:
    until this was seen, two runs of the set heard the agent's phrases 6 points apart)."""
    from gateway.local_live.tts import synthesize_repeatably

    return synthesize_repeatably(u.text, rate=LINE_RATE, variant=u.voice, wpm=u.wpm)


def phone_16k(u: Utterance, seed: int = 0) -> bytes:
    """16 kHz PCM16 as the recognizer gets it: mu-law on the wire, decoded and upsampled by the gateway."""
    ulaw = pcm16_to_ulaw(line_audio(u, seed))
    inbound = InboundAudio(16000)
    return b"".join(inbound.convert(ulaw[i : i + 160]) for i in range(0, len(ulaw), 160))
