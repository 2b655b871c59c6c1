"""Speech recognition: Whisper tiny.en writes what the caller said (`transcriber.py`), and PocketSphinx (its
US English acoustic model ships in the wheel) listens for the agent's phrases with a grammar of them and a
phone loop beside it (`language.py` builds the grammar from what the local agent understands). Whisper
then judges between its words, the grammar's phrase and the agent's phrases nearest its words
(`choose_transcript`).

Measured on this machine: a process's first recognizer takes about 2 s to build (grammar, calibration and
Whisper's model), each further one about 0.1 s and 20 MB; the two together hear phone audio at a real-time
factor of about 0.21, Whisper about half of it (see `benchmarks/bench_asr.py`). PocketSphinx's
Python binding holds the GIL while decoding, so audio is fed in small pieces (the event loop gets the GIL
back between them) and recognizers are pooled: one serves one utterance at a time, and sessions borrow
one at start of speech and give it back at the end, when Whisper hears the utterance whole.
"""

from __future__ import annotations

import difflib
import functools
import heapq
import math
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pocketsphinx
import structlog

from . import language
from .agent import heard_goodbye
from .slots import SlotFiller
from .transcriber import MIN_SAMPLES, WINDOW_BYTES, Transcriber, Window, shared_transcriber
from .word_errors import word_errors

SAMPLE_RATE = 16000
_FEED_BYTES = 2 * 640  # 40 ms per call: the GIL is held for ~6 ms at a time

_log = structlog.get_logger("gateway.local_live")


_CALIBRATION = "Hello, thank you for calling. How can I help you today? It is a quarter past nine."
# What a decoder hears before its first caller (see new_decoder): the agent's two voices, as the phone line
# carries them. Neither voice is in the evaluation set.
CALIBRATION = (
    ("f3", _CALIBRATION),
    ("m3", "I would like to know the time, and then I will say goodbye."),
    ("f3", "My name is Robert and my number is five five five, one two three."),
    ("m3", _CALIBRATION),
)
HIGH_BAND_NOISE = 30.0  # RMS of the noise added above 4.2 kHz (see _HighBand)


class _HighBand:
    """Quiet noise above 4.2 kHz, added to everything the recognizer hears.

    Phone audio has nothing above 4 kHz; the acoustic model was trained on wide-band speech, whose upper
    filter-bank channels always carry some energy, and digital silence there throws its cepstra further
    off. A little noise in that band (-60 dB) brought the tuning set's word error rate on the agent's
    phrases from 43% to 35% (`benchmarks/bench_asr.py`); on wide-band input it is far below the speech.
    """

    def __init__(self) -> None:
        self._noise = _high_band_noise()
        self._at = 0

    def add(self, pcm: bytes) -> bytes:
        x = np.frombuffer(pcm, "<i2").astype(np.int32)
        n = self._noise
        idx = (self._at + np.arange(x.size)) % n.size
        self._at = (self._at + x.size) % n.size
        return np.clip(x + n[idx], -32768, 32767).astype("<i2").tobytes()


@functools.cache
def _high_band_noise(seconds: int = 2) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    sos = butter(6, 4200, btype="highpass", fs=SAMPLE_RATE, output="sos")
    noise = np.random.default_rng(0).normal(0, HIGH_BAND_NOISE, SAMPLE_RATE * seconds)
    return np.round(sosfilt(sos, noise)).astype(np.int32)


@functools.cache
def _grammar_words() -> frozenset[str]:
    return frozenset(word for sentence, _ in language.domain_corpus() for word in sentence.split())


def _dictionary(words: frozenset[str]) -> str:
    """The wheel's pronouncing dictionary cut down to ``words`` (with their alternative pronunciations).

    Each search loads its own dictionary, and the whole one (135,000 words) is about 23 MB of a decoder's
    memory; a search can only ever say the words of its grammar (the phone loop none).
    """
    lines = []
    with open(Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict", encoding="utf-8") as f:
        for line in f:
            if line.split(" ", 1)[0].split("(", 1)[0] in words:
                lines.append(line)
    return "".join(lines)


def _phone_speech(text: str, variant: str = "m3") -> bytes:
    """Speech as a phone call brings it to the recognizer: 8 kHz mu-law, upsampled by the gateway; the same
    in every run (`tts.synthesize_repeatably`), so that the calibration below, and with it what the recognizer
    hears, does not change from one start to the next."""
    from gateway.audio import InboundAudio, pcm16_to_ulaw

    from .tts import synthesize_repeatably  # late: keeps this module importable without espeak for unit tests

    ulaw = pcm16_to_ulaw(synthesize_repeatably(text, rate=8000, variant=variant))
    return InboundAudio(SAMPLE_RATE).convert(ulaw)


def new_decoder(*, calibrate: bool = True) -> Recognizer:
    """A recognizer of the agent's phrases: their grammar and a phone loop (US English acoustic model,
    16 kHz), calibrated before use.

    PocketSphinx normalises features with a running cepstral mean; a fresh decoder starts from a generic
    guess and misrecognises its first utterance badly (measured: "please hang up" -> "please any other").
    Decoding a few synthetic sentences first, as the phone line carries them, gives it a realistic starting
    mean (`CALIBRATION`: on the tuning set, word error rate on the agent's phrases 53% after one sentence
    in one voice, 36% after four in two). Each caller then gets their own mean (`CallerAdaptation`), so
    the pool calibrates only its first decoder and starts every new caller from that one's mean.
    """
    with tempfile.TemporaryDirectory(prefix="gateway-asr-") as folder:
        files = {name: Path(folder) / name for name in ("agent.gram", "phrases.dict", "phones.dict")}
        files["agent.gram"].write_text(language.intent_grammar(), encoding="utf-8")
        files["phrases.dict"].write_text(_dictionary(_grammar_words()), encoding="utf-8")
        files["phones.dict"].write_text(_dictionary(frozenset({"a"})), encoding="utf-8")
        phrases = pocketsphinx.Decoder(
            jsgf=str(files["agent.gram"]), dict=str(files["phrases.dict"]), loglevel="FATAL", **GRAMMAR_BEAMS
        )
        phones = pocketsphinx.Decoder(
            allphone=_PHONE_MODEL, dict=str(files["phones.dict"]), lw=PHONE_LOOP_WEIGHT, loglevel="FATAL"
        )
    recognizer = Recognizer(phrases, phones)
    for variant, text in CALIBRATION if calibrate else ():
        pcm = _HighBand().add(_phone_speech(text, variant))
        recognizer.start_utt()
        for i in range(0, len(pcm), _FEED_BYTES):
            recognizer.process_raw(pcm[i : i + _FEED_BYTES], False, False)
        recognizer.end_utt()
    return recognizer


_PHONE_MODEL = str(Path(pocketsphinx.get_model_path()) / "en-us" / "en-us-phone.lm.bin")
PHONE_LOOP_WEIGHT = 2.0  # the phone loop's language weight: a loose garbage model, mostly acoustics
# How far (score per 10 ms frame, PocketSphinx's log base 1.0001) the grammar's sentence may fall below the
# phone loop's best path and still be believed. Chosen on the tuning set (`benchmarks/bench_asr.py`): -13
# to -20 all gave 28-30% on the agent's phrases there; looser let general sentences become the agent's.
GRAMMAR_MARGIN = -15.0
# The margin for the agent's goodbyes and hang-up requests: a caller who says goodbye and is not heard
# stays on a line nobody answers, and the grammar's closing phrases are long enough ("end the call",
# "goodbye thank you") that general speech rarely fits them this well. Chosen on the (extended) tuning
# set: -20 ended 84 of its 104 goodbyes instead of 79, with no more false hang-ups (BENCHMARKS.md).
CLOSING_MARGIN = -20.0
# How near Whisper's transcript must come to the grammar's phrase (word errors per word of the phrase) for
# the phrase to replace it: without this the grammar forces general speech into the agent's phrases, which
# Whisper hears far better (tuning set: 46% -> 35% on general sentences, the agent's phrases unchanged).
AGREEMENT = 0.5
# Whisper as the judge (`choose_transcript`), in nats of its log-probability of the whole utterance, chosen
# on the tuning set (BENCHMARKS.md, issue 16, fifth part). The grammar's phrase is believed unless Whisper
# finds it this much less likely than its own transcript: there, the phrases the grammar got right fell
# within 7, the ones it forced onto other speech ("can you send me the invoice": "can you hang up the call")
# 14 or more. With the phrases scored as Whisper writes them (sixth part), 8 and 12 read within a point of 10.
VETO = 10.0
# An agent's phrase replaces Whisper's own transcript if it comes within this (each scored as Whisper writes
# it, `Window.score_phrases`; its slots filled by Whisper, `slots.py`): on the tuning set 4 took the agent's
# phrases from 27% (no judge) to 15.4% word errors, general sentences unchanged; 2 gave 18.3%, 3 17.6%, 5
# 15.2% and 6 14.3% with general sentences worse (BENCHMARKS.md, issue 16, sixth part).
RESCORE = 4.0
# How many of the agent's phrases, nearest in spelling to Whisper's transcript, it scores (on the tuning
# set, before the veto: 4 gave 15.9% on the agent's phrases, 8 gave 16.3%, for twice the cost).
NEAREST = 4
_LOG_BASE = math.log(1.0001)
# The grammar and the phone loop hear an utterance's first seconds only: the agent's longest phrase ("my
# number is five five five one two three four", 10 words) takes 4.2 s with the VAD's 0.8 s of padding at
# the evaluation set's slowest voices (140 words a minute); past 6 s (a caller at 100 words a minute) the
# two would cost CPU for nothing, as a long turn is not one of the agent's phrases.
PHRASE_SECONDS = 6.0
_PHRASE_SAMPLES = int(SAMPLE_RATE * PHRASE_SECONDS)
_PHRASE_BYTES = 2 * _PHRASE_SAMPLES
# The grammar search's pruning. Its names, surnames and numbers keep thousands of HMMs active at once,
# which made it the dearest search (a real-time factor of 0.15, against 0.06 for the language model): at
# most 500 a frame cost 0.09 on the tuning set with as many goodbyes ending the call and no more false
# hang-ups. Narrower beams (1e-25 to 1e-40 instead of 1e-48) were cheaper still but forced more general
# speech into phrases (more false hang-ups and transfers): BENCHMARKS.md, issue 16, third part.
GRAMMAR_BEAMS: dict[str, float] = {"maxhmmpf": 500}


def _score(hyp: object) -> float:
    """A hypothesis' path score in PocketSphinx's log units (the binding hands it over exponentiated)."""
    value = getattr(hyp, "score", 0.0)
    return math.log(value) / _LOG_BASE if value > 0 else -math.inf


def choose_transcript(
    free: str,
    phrase: str,
    margin: float,
    agreement: float | None = AGREEMENT,
    scores: Mapping[str, float] | None = None,
) -> str:
    """What the caller said, from the free transcript (Whisper's), the two searches and, where Whisper
    scored them (``scores``: `Window.score` of `phrases_to_score`), how likely Whisper finds each. Pure.

    The grammar's phrase (`grammar_choice`) is taken unless Whisper finds it more than ``VETO`` less likely
    than its own transcript. Otherwise, a free transcript that is not one of the agent's phrases gives way to
    the agent's phrase Whisper finds likeliest among those scored, if that one comes within ``RESCORE`` of
    it: Whisper misheard the words but not the sound of them ("go tomorrow ding": "good morning").
    """
    grammar = grammar_choice(free, phrase, margin, agreement)
    if scores is None or free not in scores:
        return grammar
    own = scores[free]
    if grammar != free and scores.get(grammar, own) >= own - VETO:  # (not scored: not judged)
        return grammar
    sentence = language.intent_sentence()
    if sentence.match(free):
        return free
    phrases = [p for p in scores if could_replace(p, free)]
    likeliest = max(phrases, key=scores.__getitem__, default="")
    return likeliest if likeliest and scores[likeliest] >= own - RESCORE else free


def grammar_choice(free: str, phrase: str, margin: float, agreement: float | None = AGREEMENT) -> str:
    """The free transcript, or the grammar's phrase where the searches believe it: unless the free
    transcript is one of the agent's phrases, the grammar's whole phrase scoring within ``GRAMMAR_MARGIN``
    of the phone loop (``margin``: per frame) that the free transcript comes within ``agreement`` word
    errors per word of (None: at any distance, as when the free transcript was PocketSphinx's own). A free
    transcript that already holds the grammar's phrase stays too: the caller said more than the phrase
    ("repeat after me" and what to repeat), and the grammar cannot hear the rest. A goodbye of the
    grammar's is believed within ``CLOSING_MARGIN``, even over a free transcript that is one of the agent's
    phrases, unless that one is a goodbye too. Pure."""
    if not disputes(phrase, free):
        return free
    if margin >= CLOSING_MARGIN and heard_goodbye(phrase) and not heard_goodbye(free):
        return phrase
    if language.intent_sentence().match(free) or margin < GRAMMAR_MARGIN:
        return free
    if agreement is not None:
        errors, length = word_errors(phrase, free)
        if errors > agreement * length:
            return free
    return phrase


def phrases_to_score(free: str, phrase: str, margin: float) -> list[str]:
    """What Whisper is asked to score for `choose_transcript`: its own transcript first, then the grammar's
    phrase if it `disputes` it and, unless the transcript is one of the agent's phrases already, those of
    the agent's ``NEAREST`` phrases spelled most like it that `could_replace` it (cut to ``NEAREST`` first,
    then filtered, as tuned). A transcript that is one of the agent's phrases is judged only against a
    grammar's phrase the searches would take over it (`grammar_choice`: a goodbye). None if there is
    nothing to choose between. Pure."""
    if not free:
        return []
    if language.intent_sentence().match(free):
        grammar = grammar_choice(free, phrase, margin)
        return [free, grammar] if grammar != free else []
    nearest = [p for p in nearest_phrases(free) if could_replace(p, free)]
    texts = list(dict.fromkeys([free, *([phrase] if disputes(phrase, free) else []), *nearest]))
    return texts if len(texts) > 1 else []


def disputes(phrase: str, free: str) -> bool:
    """Whether ``phrase`` is one of the agent's phrases other than the free transcript and not held in it
    with more besides (the caller said more than the phrase: "repeat after me" and what to repeat). Pure."""
    return bool(phrase and language.intent_sentence().match(phrase)) and f" {phrase} " not in f" {free} "


def could_replace(phrase: str, free: str) -> bool:
    """Whether Whisper's judgement may put ``phrase`` for the free transcript: it `disputes` it and has at
    least half its words (a turn that a short phrase fits as well on Whisper's reckoning, like "please
    repeat after me" for "repeat after me but when were in london with a nay", is a longer one misheard).
    Pure."""
    return disputes(phrase, free) and 2 * len(phrase.split()) >= len(free.split())


def nearest_phrases(text: str, n: int = NEAREST) -> list[str]:
    """The ``n`` (default ``NEAREST``) phrases of the agent's spelled most like ``text`` (difflib's ratio of
    matching characters). The quick upper bounds skip most phrases: about 20 ms for 3,000. Pure."""
    matcher = difflib.SequenceMatcher(None, b=text)
    best: list[tuple[float, str]] = []  # a heap of the n best so far, worst first
    for candidate in _agent_phrases():
        matcher.set_seq1(candidate)
        floor = best[0][0] if len(best) == n else -1.0
        if matcher.real_quick_ratio() <= floor or matcher.quick_ratio() <= floor:
            continue
        ratio = matcher.ratio()
        if len(best) < n:
            heapq.heappush(best, (ratio, candidate))
        elif ratio > floor:
            heapq.heapreplace(best, (ratio, candidate))
    return [candidate for _, candidate in sorted(best, key=lambda item: (-item[0], item[1]))]


@functools.cache
def _agent_phrases() -> tuple[str, ...]:
    return tuple(sorted({sentence for sentence, _ in language.domain_corpus()}))


@dataclass(frozen=True, slots=True)
class Heard:
    """What an utterance was heard as: the transcript chosen, Whisper's, the grammar's phrase with its
    margin over the phone loop, and Whisper's scores if it was asked (for the benchmark and the tests)."""

    hypstr: str
    free: str
    phrase: str
    margin: float
    scores: Mapping[str, float] | None = None


@dataclass(frozen=True, slots=True)
class Phrase:
    """The grammar search's answer: a phrase of the agent's ("" for none) and how far its path scores
    from the phone loop's, per 10 ms frame."""

    text: str
    margin: float


class Recognizer:
    """Two PocketSphinx searches over the same audio, used as one decoder: the agent's phrases as a grammar
    (its intents, heard more surely than Whisper hears short phrases on a phone line) and a phone loop (the
    garbage model that tells a phrase really said from general speech forced into the grammar).

    The two compute the same features, so their cepstral means move together: the grammar's is the
    recognizer's.
    """

    def __init__(self, phrases: pocketsphinx.Decoder, phones: pocketsphinx.Decoder) -> None:
        self._decoders = (phrases, phones)
        self._samples = 0  # fed in this utterance

    def get_cmn(self) -> str:
        return str(self._decoders[0].get_cmn())

    def set_cmn(self, cmn: str) -> None:
        for decoder in self._decoders:
            decoder.set_cmn(cmn)

    @property
    def _phrase_length(self) -> bool:
        """Whether the utterance is still short enough to be one of the agent's phrases."""
        return self._samples <= _PHRASE_SAMPLES

    def start_utt(self) -> None:
        self._samples = 0
        for decoder in self._decoders:
            decoder.start_utt()

    def process_raw(self, pcm: bytes, no_search: bool, full_utt: bool) -> None:
        self._samples += len(pcm) // 2
        if self._phrase_length:  # past it, no phrase of the agent's fits: the searches stop (their CPU saved)
            for decoder in self._decoders:
                decoder.process_raw(pcm, no_search, full_utt)

    def end_utt(self) -> None:
        for decoder in self._decoders:
            decoder.end_utt()

    def hyp(self) -> Phrase:
        if not self._phrase_length:
            return Phrase("", -math.inf)
        phrases, phones = (d.hyp() for d in self._decoders)
        frames = max(1, self._decoders[0].n_frames())
        text = phrases.hypstr.strip() if phrases is not None else ""
        margin = (_score(phrases) - _score(phones)) / frames if phrases and phones else -math.inf
        return Phrase(text, margin)


class RecognizerPool:
    """Decoders loaded once per server and lent out per utterance; grows on demand up to ``limit``."""

    def __init__(self, preload: int = 1, limit: int = 6, transcriber: Transcriber | None = None) -> None:
        self._free: list[Recognizer] = []
        self._transcriber = transcriber
        self._slots: SlotFiller | None = None
        self._count = 0
        self._limit = max(1, limit)
        self._cond = threading.Condition()
        self._preload = preload
        self.calibrated_cmn = ""  # a new caller's cepstral mean: set by the first decoder loaded

    @property
    def transcriber(self) -> Transcriber:
        """Whisper, shared by the process (loaded on first use)."""
        if self._transcriber is None:
            self._transcriber = shared_transcriber()
        return self._transcriber

    @property
    def slots(self) -> SlotFiller:
        """Whisper's filler of the agent's phrases' slots (`slots.py`), shared like Whisper."""
        if self._slots is None:
            self._slots = SlotFiller(self.transcriber)
        return self._slots

    def warm(self) -> None:
        """Load the first decoders and Whisper (call off the event loop)."""
        _ = self.transcriber
        while True:
            with self._cond:
                if self._count >= min(self._preload, self._limit):
                    return
                self._count += 1
            decoder = self._new_decoder()
            with self._cond:
                self._free.append(decoder)
                self._cond.notify()

    def try_acquire(self) -> Recognizer | None:
        """A free decoder, a new one if the pool may grow (blocking while it loads), else None."""
        with self._cond:
            if self._free:
                return self._free.pop()
            if self._count >= self._limit:
                return None
            self._count += 1
        try:
            return self._new_decoder()
        except Exception:
            with self._cond:
                self._count -= 1
            raise

    def acquire(self, timeout: float | None = None) -> Recognizer | None:
        decoder = self.try_acquire()
        if decoder is not None:
            return decoder
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._free), timeout=timeout):
                return None
            return self._free.pop()

    def release(self, decoder: Recognizer) -> None:
        with self._cond:
            self._free.append(decoder)
            self._cond.notify()

    def _new_decoder(self) -> Recognizer:
        if self.calibrated_cmn:  # every utterance starts from a caller's mean: no need to calibrate again
            return new_decoder(calibrate=False)
        decoder = new_decoder()
        self.calibrated_cmn = decoder.get_cmn()
        return decoder

    @property
    def loaded(self) -> int:
        return self._count

    def allow(self, limit: int) -> None:
        with self._cond:
            self._limit = max(self._limit, limit)


_shared: RecognizerPool | None = None
_shared_lock = threading.Lock()


def shared_pool(preload: int, limit: int) -> RecognizerPool:
    """The process-wide pool: decoders are loaded once per process, however many servers it runs
    (the gateway embeds one; the test suite starts dozens)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RecognizerPool(preload, limit)
        else:
            _shared.allow(limit)
        return _shared


class CallerAdaptation:
    """One caller's cepstral mean, carried from one utterance to the next whichever pooled decoder serves
    it: the recognizer adapts to this caller's voice and line, never to another call's, and a call is
    recognised the same way however busy the pool is."""

    def __init__(self) -> None:
        self.cmn: str | None = None  # None: the calibrated mean


class Utterance:
    """One utterance being recognised as it is spoken; the text is ready soon after the last audio.

    PocketSphinx hears it as it comes; Whisper a window at a time (`transcriber.WINDOW_SECONDS`), each full
    window as soon as it is, and the rest at the end, so a long turn keeps one window of audio and costs
    one window's decoding at its end. When every decoder is busy the audio is kept (as much as the grammar
    would hear) and decoded once one frees up (late but not lost).
    """

    def __init__(self, pool: RecognizerPool, caller: CallerAdaptation | None = None) -> None:
        self._pool = pool
        self._caller = caller or CallerAdaptation()
        self._decoder: Recognizer | None = None
        self._backlog: list[bytes] = []
        self._backlog_bytes = 0
        self._high_band = _HighBand()
        self._window = bytearray()  # Whisper's next window
        self._words: list[str] = []  # what Whisper heard in the windows before it
        self.samples = 0
        self.heard: Heard | None = None  # what each search heard, once finished

    def _ensure_decoder(self, block: bool) -> bool:
        if self._decoder is None:
            decoder = self._pool.acquire(timeout=30.0) if block else self._pool.try_acquire()
            if decoder is None:
                return False
            decoder.set_cmn(self._caller.cmn or self._pool.calibrated_cmn)
            decoder.start_utt()
            self._decoder = decoder
            backlog, self._backlog = self._backlog, []
            for pcm in backlog:
                self._feed(pcm)
        return True

    def _feed(self, pcm: bytes) -> None:
        assert self._decoder is not None
        for i in range(0, len(pcm), _FEED_BYTES):
            self._decoder.process_raw(pcm[i : i + _FEED_BYTES], False, False)

    def add(self, pcm: bytes) -> None:
        self.samples += len(pcm) // 2
        self._window += pcm
        if len(self._window) >= WINDOW_BYTES:
            self._words.append(self._transcribe(bytes(self._window[:WINDOW_BYTES])))
            del self._window[:WINDOW_BYTES]
        pcm = self._high_band.add(pcm)
        if self._ensure_decoder(block=False):
            self._feed(pcm)
        elif self._backlog_bytes < _PHRASE_BYTES:  # past it the grammar would not listen anyway
            self._backlog.append(pcm)
            self._backlog_bytes += len(pcm)

    def _transcribe(self, pcm: bytes) -> str:
        """Whisper's words, or none if it fails: the grammar's phrase may still be heard, and the call goes
        on."""
        try:
            return self._pool.transcriber.transcribe(pcm)
        except Exception as exc:  # a broken model must not end the caller's input
            _log.warning("whisper_failed", error=type(exc).__name__)
            return ""

    def _hear_last(self, pcm: bytes, phrase: Phrase) -> tuple[str, dict[str, float] | None]:
        """The whole transcript, with the last window's words, and Whisper's scores of what to judge
        between (`phrases_to_score`, and the phrases whose names and numbers Whisper fills, `slots.py`) if
        the turn is short enough to be one of the agent's phrases (all of it is then in ``pcm``): its own
        words' under ``free``, each phrase's as Whisper would write it. What Whisper fails at is left out:
        the rest is judged, or the searches decide alone, and the call goes on."""
        window: Window | None = None
        words = ""
        try:
            if len(pcm) // 2 >= MIN_SAMPLES:
                window = self._pool.transcriber.window(pcm)
                words = window.text()
        except Exception as exc:  # a broken model must not end the caller's input
            _log.warning("whisper_failed", error=type(exc).__name__)
            window = None
        free = " ".join(w for w in (*self._words, words) if w)
        short = self.samples <= _PHRASE_SAMPLES  # a longer turn is none of the agent's phrases
        if window is None or not free or not short:
            return free, None
        phrases = phrases_to_score(free, phrase.text, phrase.margin)[1:]
        if not language.intent_sentence().match(free):  # else there are no slots to fill
            try:
                filled = self._pool.slots.fill(window, [free, *phrases])
                phrases += [p for p in filled if p not in phrases and could_replace(p, free)]
            except Exception as exc:  # the rest is still judged (the veto above all)
                _log.warning("whisper_fill_failed", error=type(exc).__name__)
        if not phrases:
            return free, None
        try:
            own, scores = window.score_phrases(phrases)
            return free, {free: own, **dict(zip(phrases, scores, strict=True))}
        except Exception as exc:
            _log.warning("whisper_score_failed", error=type(exc).__name__)
            return free, None

    def finish(self) -> str:
        """End the utterance and return its text ("" for noise); the decoder goes back to the pool."""
        phrase = Phrase("", -math.inf)
        if self._ensure_decoder(block=True):
            decoder, self._decoder = self._decoder, None
            assert decoder is not None
            try:
                decoder.end_utt()
                self._caller.cmn = decoder.get_cmn()
                phrase = decoder.hyp()
            finally:
                self._pool.release(decoder)
        window, self._window = bytes(self._window), bytearray()
        free, scores = self._hear_last(window, phrase)
        chosen = choose_transcript(free, phrase.text, phrase.margin, scores=scores)
        self.heard = Heard(chosen, free, phrase.text, phrase.margin, scores)
        return self.heard.hypstr

    def abandon(self) -> None:
        decoder, self._decoder = self._decoder, None
        self._backlog = []
        self._window = bytearray()
        if decoder is not None:
            try:
                decoder.end_utt()
            finally:
                self._pool.release(decoder)

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE
