"""The local backend's understanding of a caller, as pure units: the recognizer's language model (built from
what the agent understands) and the agent's intents by voice. No audio here: what the recognizer makes of
phone audio is measured in `benchmarks/bench_asr.py`, not asserted."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import pytest

from gateway.local_live import language
from gateway.local_live.agent import NOT_CAUGHT, REPEAT_PROMPT, HistoryTurn, LocalAgent

TRANSFER = {"properties": {"target": {"type": "STRING", "enum": ["+15005550009"]}}}


def parse_arpa(text: str) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    probs: dict[tuple[str, ...], float] = {}
    backoff: dict[tuple[str, ...], float] = {}
    order = 0
    for line in text.splitlines():
        if m := re.match(r"\\(\d)-grams:", line):
            order = int(m.group(1))
            continue
        fields = line.split()
        if order and len(fields) >= order + 1 and not line.startswith("\\"):
            gram = tuple(fields[1 : 1 + order])
            probs[gram] = 10 ** float(fields[0])
            if len(fields) == order + 2:
                backoff[gram] = 10 ** float(fields[-1])
    return probs, backoff


def prob(probs: dict, backoff: dict, gram: tuple[str, ...]) -> float:
    if gram in probs:
        return probs[gram]
    return backoff.get(gram[:-1], 1.0) * prob(probs, backoff, gram[1:])


def test_language_model_is_normalised_for_every_history():
    corpus = [("please hang up", 3), ("what time is it", 2), ("hang up the call", 1), ("what is the time", 1)]
    general = {"the": 0.5, "weather": 0.3, "is": 0.2}
    probs, backoff = parse_arpa(language.build_arpa(corpus, general))
    vocab = sorted({g[0] for g in probs if len(g) == 1} - {"<s>"})
    for history in [("<s>",), ("hang",), ("<s>", "what"), ("time", "is"), ("weather",), ("the", "weather")]:
        total = sum(prob(probs, backoff, (*history, w)) for w in vocab)
        assert math.isclose(total, 1.0, rel_tol=1e-3), (history, total)


def test_language_model_prefers_what_the_agent_understands():
    probs, backoff = parse_arpa(language.build_arpa(language.domain_corpus(), {"hang": 0.1, "and": 0.9}))
    # after "please", the model expects "hang" far more than "and" (the misrecognition of issue 16)
    assert prob(probs, backoff, ("<s>", "please", "hang")) > 10 * prob(
        probs, backoff, ("<s>", "please", "and")
    )
    assert prob(probs, backoff, ("hang", "up", "please")) > 0.01


def test_domain_corpus_covers_every_intent_and_weighs_templates_alike():
    weights: dict[str, int] = defaultdict(int)
    sentences = {s for s, _ in language.domain_corpus()}
    for sentence, count in language.domain_corpus():
        weights[sentence.split()[0]] += count
    for said in ["please hang up", "goodbye", "what time is it", "transfer me to an operator",
                 "my name is james smith", "yes please", "repeat after me", "one hundred"]:  # fmt: skip
        assert said in sentences, said
    # a template with a hundred names weighs about what a template without a slot does
    assert weights["my"] < 40 * weights["goodbye"]


@pytest.mark.parametrize(
    "heard",
    [
        "goodbye",
        "bye bye",
        "please hang up",
        "you can hang up now",
        "end the call please",
        "thank you goodbye",
        "that is all goodbye",
        "that's all",
        "i'm done",
    ],
)
def test_goodbyes_end_the_call(heard):
    reply = LocalAgent(can_end_call=True).respond(heard, [])
    assert reply is not None and reply.tool == "end_call" and "Goodbye" in reply.text
    assert LocalAgent().respond(heard, []).tool == ""  # no end_call declared: only words


@pytest.mark.parametrize(
    "heard",
    [
        "transfer me to an operator",
        "can i speak to a real person",
        "i want to talk to a human",
        "put me through to an agent",
        "connect me to someone please",
        "i need a representative",
    ],
)
def test_transfer_requests(heard):
    reply = LocalAgent(tools={"transfer_call": TRANSFER}).respond(heard, [])
    assert reply is not None and (reply.tool, reply.args) == ("transfer_call", {"target": "+15005550009"})
    refused = LocalAgent().respond(heard, [])
    assert refused is not None and refused.tool == "" and "cannot transfer" in refused.text


def test_repeat_after_me_in_one_utterance_or_the_next():
    agent = LocalAgent(can_end_call=True)
    assert agent.respond("repeat after me the sky is blue", []).text == "The sky is blue."
    prompt = agent.respond("please repeat after me", [])
    assert prompt.text == REPEAT_PROMPT
    history = [HistoryTurn("user", "please repeat after me"), HistoryTurn("model", REPEAT_PROMPT)]
    echoed = agent.respond("goodbye my friend", history)
    assert echoed.text == "Goodbye my friend." and echoed.tool == ""  # repeated, not obeyed
    # only right after the prompt: a goodbye later is a goodbye
    assert agent.respond("goodbye", [*history, HistoryTurn("user", "x"), HistoryTurn("model", "X.")]).end_call


def test_other_intents_and_what_it_did_not_catch():
    agent = LocalAgent(clock=lambda: __import__("datetime").datetime(2026, 11, 30, 9, 5))
    assert agent.respond("can you tell me the time", []).text == "It is 09:05."
    assert "How can I help" in agent.respond("good morning", []).text
    assert agent.respond("my name is sarah brown", []).text == "Nice to meet you, Sarah."
    assert agent.respond("yes that is correct", []).text == "You said yes."
    assert agent.respond("no thank you", []).text == "You said no."
    assert (
        agent.respond("my number is five five five one two", []).text
        == "I heard the number five five five one two."
    )
    unclear = agent.respond("the weather is lovely today", []).text
    assert (
        unclear.startswith(NOT_CAUGHT) and "the weather is lovely today" in unclear and "goodbye" in unclear
    )
    assert agent.respond("", []).text == NOT_CAUGHT


class _Decoder:
    """A stand-in decoder: records the cepstral mean it was given, and moves it as audio comes."""

    def __init__(self) -> None:
        self.cmn = "calibrated"
        self.given: list[str] = []

    def set_cmn(self, cmn: str) -> None:
        self.given.append(cmn)
        self.cmn = cmn

    def get_cmn(self) -> str:
        return self.cmn

    def start_utt(self) -> None: ...

    def process_raw(self, pcm: bytes, no_search: bool, full_utt: bool) -> None:
        self.cmn += "+"

    def end_utt(self) -> None: ...

    def hyp(self):
        from gateway.local_live.asr import Phrase

        return Phrase("", -math.inf)


class _Transcriber:
    """A stand-in Whisper: what it was given, what it answers, and how likely it finds each text (``scores``;
    any other text: -100)."""

    def __init__(self, text: str = "") -> None:
        self.text, self.heard, self.scores, self.scored = text, [], {}, []

    def transcribe(self, pcm: bytes) -> str:
        self.heard.append(pcm)
        return self.text

    def window(self, pcm: bytes) -> _Window:
        self.heard.append(pcm)
        return _Window(self)


class _Window:
    def __init__(self, whisper: _Transcriber) -> None:
        self._whisper = whisper

    def text(self) -> str:
        return self._whisper.text

    def score(self, texts: list[str]) -> list[float]:
        self._whisper.scored.append(texts)
        return [self._whisper.scores.get(text, -100.0) for text in texts]

    def score_phrases(self, phrases: list[str]) -> tuple[float, list[float]]:
        own, *scores = self.score([self.text(), *phrases])
        return own, scores


class _Slots:
    """A stand-in slot filler: the phrases it answers (``filled``) and what it was asked to fit."""

    def __init__(self) -> None:
        self.filled: list[str] = []
        self.asked: list[list[str]] = []

    def fill(self, window: _Window, texts: list[str]) -> list[str]:
        self.asked.append(list(texts))
        return self.filled


class _Pool:
    calibrated_cmn = "calibrated"

    def __init__(self) -> None:
        self.decoders = [_Decoder(), _Decoder()]
        self.transcriber = _Transcriber()
        self.slots = _Slots()

    def try_acquire(self) -> _Decoder:
        return self.decoders.pop(0)

    def acquire(self, timeout: float | None = None) -> _Decoder:
        return self.try_acquire()

    def release(self, decoder: _Decoder) -> None:
        self.decoders.append(decoder)


def test_each_caller_keeps_their_own_adaptation_whichever_decoder_serves_them():
    from gateway.local_live.asr import CallerAdaptation, Utterance

    pool = _Pool()
    alice, bob = CallerAdaptation(), CallerAdaptation()
    for caller in (alice, bob, alice):
        utterance = Utterance(pool, caller)  # type: ignore[arg-type]
        utterance.add(bytes(1280))
        utterance.finish()
    # a new caller starts from the calibrated mean; a known one from where their last utterance left it
    given = [g for d in pool.decoders for g in d.given]
    assert sorted(given) == ["calibrated", "calibrated", "calibrated+"]
    assert alice.cmn == "calibrated++" and bob.cmn == "calibrated+"


def test_whisper_hears_the_whole_utterance_once_and_the_grammar_agreeing_with_it_wins():
    from gateway.local_live.asr import Phrase, Utterance

    pool = _Pool()
    pool.transcriber.text = "transfer me to an operate her"
    pool.decoders[0].hyp = lambda: Phrase("transfer me to an operator", -3.0)  # type: ignore[method-assign]
    utterance = Utterance(pool)  # type: ignore[arg-type]
    for piece in (b"\x01\x00" * 1600, b"\x02\x00" * 1600):
        utterance.add(piece)
    assert utterance.finish() == "transfer me to an operator"
    assert pool.transcriber.heard == [b"\x01\x00" * 1600 + b"\x02\x00" * 1600]  # before the high-band noise
    assert utterance.heard is not None and utterance.heard.free == "transfer me to an operate her"


# The agent's phrases as a grammar, beside the language model (issue 16, second part).


def test_intent_sentence_accepts_whole_phrases_only():
    sentence = language.intent_sentence()
    for said in ["please hang up", "hang up the call", "you can hang up now", "thank you goodbye",
                 "transfer me to an operator", "my name is james smith", "the code is nine eight seven",
                 "what time is it now", "yes that is correct"]:  # fmt: skip
        assert sentence.match(said), said
    # what a grammar search answers when it never reached the end of a phrase, and general speech
    for said in ["what did i", "hang up the", "my name is", "the weather is lovely today", "", "seven up"]:
        assert not sentence.match(said), said


def test_intent_grammar_is_jsgf_of_every_template():
    grammar = language.intent_grammar()
    assert grammar.startswith("#JSGF V1.0;") and "public <phrase> = " in grammar
    assert "([please] hang up [please | now])" in grammar  # "(please |)" is optional
    assert "<name> = james | john" in grammar and "<digits> = <digit> <digit> <digit> <digit>*;" in grammar
    assert grammar.count("(") - grammar.count("<") >= 0 and "{" not in grammar  # every slot became a rule


@pytest.mark.parametrize(
    ("free", "phrase", "margin", "chosen"),
    [
        # the language model heard something else; the grammar found a phrase close to the phone loop
        ("read any other", "please hang up", -9.0, "please hang up"),
        ("and all green", "end the call please", -14.9, "end the call please"),
        # general speech forced into the grammar scores far below the phone loop: the free transcript
        ("green and actually to an agent", "i need an operator", -21.0, "green and actually to an agent"),
        # a goodbye of the grammar's is believed further from the phone loop (CLOSING_MARGIN)...
        ("and old", "end the call", -18.0, "end the call"),
        ("can you send me the voice", "can you hang up the call", -19.9, "can you hang up the call"),
        ("hello", "hang up now", -18.9, "hang up now"),  # ...even over one of the agent's phrases
        ("hello", "hang up now", -20.1, "hello"),
        # ...but not over a goodbye the language model heard itself
        ("okay bye now", "ok bye", -17.0, "okay bye now"),
        # the language model's transcript is already a phrase of the agent's: it stays
        ("bye bye", "five five eight", -3.0, "bye bye"),
        ("hello", "what time is it", -3.0, "hello"),
        ("what time is it", "what is the time", 0.0, "what time is it"),
        # the free transcript holds the phrase and more: the caller said more than the grammar can hear
        (
            "repeat after me but whether they lovely",
            "repeat after me",
            5.0,
            "repeat after me but whether they lovely",
        ),
        # a grammar answer that is not a whole phrase (the search never reached its end)
        ("what time", "what did i", -2.0, "what time"),
        ("", "", -math.inf, ""),
        ("hello", "", -math.inf, "hello"),
    ],
)
def test_the_grammar_wins_only_with_a_whole_phrase_near_the_phone_loop(free, phrase, margin, chosen):
    from gateway.local_live.asr import choose_transcript

    # agreement=None: whatever the free transcript, as when it was the language model's own
    assert choose_transcript(free, phrase, margin, None) == chosen


def test_the_grammar_margin_is_a_threshold():
    from gateway.local_live.asr import GRAMMAR_MARGIN, choose_transcript

    chosen = choose_transcript("partner but green", "what time is it", GRAMMAR_MARGIN, None)
    assert chosen == "what time is it"
    below = GRAMMAR_MARGIN - 0.01
    assert choose_transcript("partner but green", "what time is it", below, None) == "partner but green"


@pytest.mark.parametrize(
    ("free", "phrase", "chosen"),
    [
        # Whisper heard the phrase nearly: the grammar's exact words are taken (2 errors in 5 words)
        ("transfer me to an operate her", "transfer me to an operator", "transfer me to an operator"),
        ("what time is this", "what time is it", "what time is it"),
        # Whisper heard something else: general speech the grammar forced into a phrase is not believed
        ("the train was late this morning", "transfer me to an operator", "the train was late this morning"),
        ("partner but green", "what time is it", "partner but green"),
        # a goodbye of the grammar's needs no agreement (a caller left on the line is the worse mistake)
        ("and the cold leaves", "end the call please", "end the call please"),
    ],
)
def test_the_grammar_wins_only_where_whisper_comes_near_its_phrase(free, phrase, chosen):
    from gateway.local_live.asr import GRAMMAR_MARGIN, choose_transcript

    assert choose_transcript(free, phrase, GRAMMAR_MARGIN) == chosen


def test_the_closing_margin_is_a_looser_threshold_for_goodbyes():
    from gateway.local_live.asr import CLOSING_MARGIN, GRAMMAR_MARGIN, choose_transcript

    assert CLOSING_MARGIN < GRAMMAR_MARGIN
    assert choose_transcript("partner but green", "hang up please", CLOSING_MARGIN) == "hang up please"
    below = CLOSING_MARGIN - 0.01
    assert choose_transcript("partner but green", "hang up please", below) == "partner but green"


@pytest.mark.parametrize(
    ("said", "goodbye"),
    [("goodbye", True), ("okay bye now", True), ("hang up the call", True), ("end the call please", True),
     ("hi", False), ("hang up the call laura group", False), ("this is anna", False), ("by the way", False)],
)  # fmt: skip
def test_heard_goodbye_is_what_ends_the_call(said, goodbye):
    from gateway.local_live.agent import heard_goodbye

    assert heard_goodbye(said) is goodbye
    reply = LocalAgent(can_end_call=True).respond(said, [])
    assert reply is not None and reply.end_call is goodbye


class _Search:
    """A stand-in PocketSphinx search: what it heard, its path score (exponentiated, as the binding gives
    it), and what it was fed."""

    def __init__(self, text: str | None, score: float = 0.0, frames: int = 100) -> None:
        self.text, self.score, self.frames = text, score, frames
        self.fed: list[bytes] = []
        self.cmn = ""

    def set_cmn(self, cmn: str) -> None:
        self.cmn = cmn

    def get_cmn(self) -> str:
        return self.cmn

    def start_utt(self) -> None: ...

    def process_raw(self, pcm: bytes, no_search: bool, full_utt: bool) -> None:
        self.fed.append(pcm)

    def end_utt(self) -> None: ...

    def n_frames(self) -> int:
        return self.frames

    def hyp(self):
        from types import SimpleNamespace

        return None if self.text is None else SimpleNamespace(hypstr=self.text, score=self.score)


def _exp(log_score: float) -> float:
    return 1.0001**log_score


@pytest.mark.parametrize("per_frame", [-10.0, -25.0])
def test_recognizer_feeds_both_searches_and_scores_the_grammar_against_the_phone_loop(per_frame):
    from gateway.local_live.asr import Recognizer

    phrases = _Search("please hang up", _exp(-5000 + 100 * per_frame))
    phones = _Search("SIL P L IY Z SIL", _exp(-5000))
    recognizer = Recognizer(phrases, phones)  # type: ignore[arg-type]
    recognizer.set_cmn("40,3,-1")
    recognizer.start_utt()
    recognizer.process_raw(b"\x01\x00" * 640, False, False)
    recognizer.end_utt()
    heard = recognizer.hyp()
    assert all(s.fed == [b"\x01\x00" * 640] and s.cmn == "40,3,-1" for s in (phrases, phones))
    assert heard.text == "please hang up" and math.isclose(heard.margin, per_frame, abs_tol=0.01)


def test_recognizer_without_a_grammar_answer_has_no_phrase():
    from gateway.local_live.asr import Recognizer

    recognizer = Recognizer(_Search(None), _Search("SIL HH SIL", 0.5))  # type: ignore[arg-type]
    assert recognizer.hyp().text == "" and recognizer.hyp().margin == -math.inf


@pytest.mark.e2e  # the real recognizer (seconds to build, shared with the process's other tests)
def test_the_grammar_hears_an_agent_phrase_on_the_phone_line():
    """The real searches on synthesised phone audio (espeak-ng and PocketSphinx are deterministic): the
    grammar is loaded and a clearly spoken phrase of the agent's comes back whole, close to the phone loop."""
    from gateway.local_live import asr

    utterance = asr.Utterance(asr.shared_pool(preload=1, limit=6))
    pcm = asr._phone_speech("please hang up", "f3")
    for i in range(0, len(pcm), 640):
        utterance.add(pcm[i : i + 640])
    assert utterance.finish() == "please hang up"
    heard = utterance.heard
    assert heard is not None and heard.phrase == "please hang up" and heard.margin >= asr.GRAMMAR_MARGIN


def test_a_long_turn_is_heard_by_whisper_alone():
    """Past PHRASE_SECONDS no phrase of the agent's fits: the grammar and the phone loop stop listening
    (their CPU is saved) and answer no phrase, whatever the grammar had, so the transcript is Whisper's."""
    from gateway.local_live.asr import PHRASE_SECONDS, SAMPLE_RATE, Recognizer

    phrases, phones = _Search("hang up", _exp(-5)), _Search("S", _exp(-5))
    recognizer = Recognizer(phrases, phones)  # type: ignore[arg-type]
    second = b"\x00\x00" * SAMPLE_RATE
    recognizer.start_utt()
    for _ in range(int(PHRASE_SECONDS)):
        recognizer.process_raw(second, False, False)
    assert recognizer.hyp().text == "hang up"  # still a phrase's length: the grammar answers
    recognizer.process_raw(second, False, False)
    assert len(phrases.fed) == len(phones.fed) == int(PHRASE_SECONDS)
    assert recognizer.hyp().text == ""
    recognizer.start_utt()  # the next utterance is heard by both again
    recognizer.process_raw(second, False, False)
    assert len(phrases.fed) == int(PHRASE_SECONDS) + 1


# Whisper (issue 16, fourth part): the transcript.


def test_a_long_turn_is_transcribed_a_window_at_a_time_as_it_comes():
    from gateway.local_live.asr import SAMPLE_RATE, Utterance
    from gateway.local_live.transcriber import WINDOW_SECONDS

    pool = _Pool()
    pool.transcriber.text = "words"
    utterance = Utterance(pool)  # type: ignore[arg-type]
    second = b"\x01\x00" * SAMPLE_RATE
    for _ in range(2 * WINDOW_SECONDS + 3):
        utterance.add(second)
    # two whole windows were heard while the caller went on, and no more audio than a window is kept
    assert [len(pcm) for pcm in pool.transcriber.heard] == [2 * SAMPLE_RATE * WINDOW_SECONDS] * 2
    assert len(utterance._window) == 3 * len(second)
    assert utterance.finish() == "words words words"
    assert len(pool.transcriber.heard[-1]) == 3 * len(second)


class _BrokenTranscriber:
    def transcribe(self, pcm: bytes) -> str:
        raise RuntimeError("model gone")

    def window(self, pcm: bytes) -> None:
        raise RuntimeError("model gone")


def test_whisper_failing_leaves_the_grammar_and_the_call_going_on():
    from gateway.local_live.asr import Phrase, Utterance

    pool = _Pool()
    pool.transcriber = _BrokenTranscriber()  # type: ignore[assignment]
    pool.decoders[0].hyp = lambda: Phrase("please hang up", -3.0)  # type: ignore[method-assign]
    utterance = Utterance(pool)  # type: ignore[arg-type]
    utterance.add(b"\x01\x00" * 3200)
    assert utterance.finish() == "please hang up"  # a goodbye of the grammar's needs no agreement


class _BusyPool(_Pool):
    def try_acquire(self):
        return None

    def acquire(self, timeout: float | None = None):
        return None


def test_whisper_still_hears_a_turn_when_no_decoder_frees_up():
    from gateway.local_live.asr import PHRASE_SECONDS, SAMPLE_RATE, Utterance

    pool = _BusyPool()
    pool.transcriber.text = "what time is it"
    utterance = Utterance(pool)  # type: ignore[arg-type]
    second = b"\x01\x00" * SAMPLE_RATE
    for _ in range(int(PHRASE_SECONDS) + 3):
        utterance.add(second)
    # the grammar would hear only the first PHRASE_SECONDS: no more is kept for it
    assert sum(len(pcm) for pcm in utterance._backlog) == int(PHRASE_SECONDS) * len(second)
    assert utterance.finish() == "what time is it"


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("It's 10:30.", "it's ten thirty"),
        ("At 9:05, or 7:00?", "at nine oh five or seven"),
        ("My number is 5-5-5, 1, 2, 3.", "my number is five five five one two three"),
        ("Transfer me to the 2nd operator!", "transfer me to the second operator"),
        ("100% sure", "one hundred percent sure"),
        ("Hello, Mayor.", "hello mayor"),
        ("", ""),
    ],
)
def test_whisper_is_read_as_a_caller_says_it(written, said):
    from gateway.local_live.transcriber import normalize

    assert normalize(written) == said


@pytest.mark.e2e  # the real model (loaded once per process)
def test_whisper_hears_speech_silence_and_a_turn_longer_than_its_window():
    from gateway.local_live import asr
    from gateway.local_live.transcriber import WINDOW_SECONDS, shared_transcriber

    whisper = shared_transcriber()
    first = asr._phone_speech("what time is it", "f3")
    assert whisper.transcribe(first) == "what time is it"
    assert whisper.transcribe(bytes(2 * asr.SAMPLE_RATE)) == ""  # a second of silence: nothing
    assert whisper.transcribe(bytes(2 * 800)) == ""  # 50 ms: too short to hear
    # past the window, the rest is heard in a window of its own
    second = asr._phone_speech("my name is john", "m3")
    gap = bytes(2 * (WINDOW_SECONDS + 1) * asr.SAMPLE_RATE - len(first))
    heard = whisper.transcribe(first + gap + second)
    assert heard == "what time is it my name is john"


# Whisper as the judge (issue 16, fifth part): how likely it finds the grammar's phrase and the agent's
# phrases nearest its transcript.


@pytest.mark.parametrize(
    ("free", "phrase", "margin", "scores", "chosen"),
    [
        # the grammar's goodbye, forced onto other speech: Whisper finds it far less likely than its own words
        (
            "can you hand me the invoice",
            "can you hang up the call",
            -9.4,
            {"can you hand me the invoice": -10.1, "can you hang up the call": -29.6},
            "can you hand me the invoice",
        ),
        # ...and one the caller said, which Whisper misheard but does not rule out
        (
            "and the cold lead",
            "end the call please",
            -17.5,
            {"and the cold lead": -10.2, "end the call please": -12.4},
            "end the call please",
        ),
        # the grammar had nothing: the agent's phrase likeliest by Whisper, within RESCORE of its own words
        (
            "go after news",
            "",
            -math.inf,
            {"go after news": -9.0, "good afternoon": -10.5, "repeat after me": -20.0},
            "good afternoon",
        ),
        # ...but not one further off: general speech stays itself
        (
            "can you hand me the invoice",
            "",
            -math.inf,
            {"can you hand me the invoice": -10.1, "can you help me": -16.1},
            "can you hand me the invoice",
        ),
        # a vetoed grammar phrase leaves the judging to the other phrases
        (
            "and the cold lead",
            "end the call please",
            -17.5,
            {"and the cold lead": -10.0, "end the call please": -25.0, "end the call": -11.0},
            "end the call",
        ),
        # a grammar phrase Whisper was not asked about is taken as the searches took it
        (
            "and the cold lead",
            "end the call please",
            -17.5,
            {"and the cold lead": -10.0},
            "end the call please",
        ),
        # Whisper's words hold an agent's phrase and more: the caller said more than the phrase
        (
            "repeat after me the weather is lovely today",
            "repeat after me",
            8.3,
            {"repeat after me the weather is lovely today": -12.0, "repeat after me": -11.0},
            "repeat after me the weather is lovely today",
        ),
        # ...or fit a phrase of under half their words about as well: a longer turn, misheard
        (
            "repeat after me but when were in london with a nay",
            "",
            -math.inf,
            {"repeat after me but when were in london with a nay": -20.0, "please repeat after me": -19.0},
            "repeat after me but when were in london with a nay",
        ),
        # Whisper's words are one of the agent's phrases: nothing replaces them
        (
            "what time is it",
            "",
            -math.inf,
            {"what time is it": -3.0, "what is the time": -2.0},
            "what time is it",
        ),
    ],
)
def test_whisper_judges_the_grammar_and_the_agent_phrases_near_its_words(
    free, phrase, margin, scores, chosen
):
    from gateway.local_live.asr import choose_transcript

    assert choose_transcript(free, phrase, margin, scores=scores) == chosen


def test_the_veto_and_the_rescoring_are_thresholds():
    from gateway.local_live.asr import RESCORE, VETO, choose_transcript

    free, goodbye = "partner but green", "hang up please"
    assert choose_transcript(free, goodbye, -3.0, scores={free: -5.0, goodbye: -5.0 - VETO}) == goodbye
    assert choose_transcript(free, goodbye, -3.0, scores={free: -5.0, goodbye: -5.01 - VETO}) == free
    near = "what time is it"
    assert choose_transcript(free, "", -math.inf, scores={free: -5.0, near: -5.0 - RESCORE}) == near
    assert choose_transcript(free, "", -math.inf, scores={free: -5.0, near: -5.01 - RESCORE}) == free
    # without Whisper's scores (it failed, or was not asked) the searches decide as before
    assert choose_transcript(free, goodbye, -3.0, scores=None) == goodbye


def test_what_whisper_is_asked_to_score():
    from gateway.local_live.asr import GRAMMAR_MARGIN, NEAREST, phrases_to_score

    near = GRAMMAR_MARGIN  # the grammar's phrase within its margin of the phone loop
    assert phrases_to_score("", "hang up", near) == []  # Whisper heard nothing: nothing to judge
    assert phrases_to_score("what time is it", "", near) == []  # one of the agent's phrases, undisputed
    assert phrases_to_score("what time is it", "what time is it", near) == []
    # an agent's phrase is disputed only by a grammar's phrase the searches would take over it: a goodbye
    assert phrases_to_score("hello", "hang up now", near) == ["hello", "hang up now"]
    assert phrases_to_score("hello", "what time is it", near) == []
    said_more = "repeat after me the weather is lovely today"
    assert "repeat after me" not in phrases_to_score(said_more, "repeat after me", near)
    # a long turn misheard: no phrase of the agent's could stand for it, so nothing is scored
    assert phrases_to_score("repeat after me but when were in london with a nay", "", -math.inf) == []
    general = phrases_to_score("go after news", "good afternoon", -30.0)  # the grammar's phrase at any margin
    assert general[:3] == ["go after news", "good afternoon", "repeat after me"]  # no phrase twice
    assert len(general) == NEAREST + 1


@pytest.mark.parametrize("text", ["go after news", "this is the manual", "and you will fly", "hello", "xyz"])
def test_the_nearest_phrases_are_difflibs_best_whatever_the_shortcuts_skip(text):
    import difflib

    from gateway.local_live.asr import _agent_phrases, nearest_phrases

    def ratio(phrase: str) -> float:
        return difflib.SequenceMatcher(None, phrase, text).ratio()

    nearest = nearest_phrases(text, 4)
    best = sorted(_agent_phrases(), key=lambda p: (-ratio(p), p))[:4]
    assert [ratio(p) for p in nearest] == [ratio(p) for p in best]  # the same ratios (ties in any order)


def test_a_short_turn_is_judged_by_whisper_and_a_long_one_is_not():
    from gateway.local_live.asr import PHRASE_SECONDS, SAMPLE_RATE, Utterance

    pool = _Pool()
    pool.transcriber.text = "go after news"
    pool.transcriber.scores = {"go after news": -9.0, "good afternoon": -10.0}
    utterance = Utterance(pool)  # type: ignore[arg-type]
    utterance.add(b"\x01\x00" * SAMPLE_RATE)
    assert utterance.finish() == "good afternoon"
    assert utterance.heard is not None and utterance.heard.scores == {
        text: pool.transcriber.scores.get(text, -100.0) for text in pool.transcriber.scored[0]
    }
    pool.transcriber.scored.clear()
    utterance = Utterance(pool)  # type: ignore[arg-type]
    for _ in range(int(PHRASE_SECONDS) + 1):
        utterance.add(b"\x01\x00" * SAMPLE_RATE)
    assert utterance.finish() == "go after news" and pool.transcriber.scored == []


def test_the_phrases_whisper_fills_are_judged_with_the_rest():
    from gateway.local_live.asr import SAMPLE_RATE, Utterance

    pool = _Pool()
    pool.transcriber.text = "this is enormous"
    pool.slots.filled = ["this is laura", "hi this is laura"]
    pool.transcriber.scores = {"this is enormous": -5.0, "this is laura": -6.0, "hi this is laura": -8.0}
    utterance = Utterance(pool)  # type: ignore[arg-type]
    utterance.add(b"\x01\x00" * SAMPLE_RATE)
    assert utterance.finish() == "this is laura"
    assert pool.slots.asked[0][0] == "this is enormous"  # its words first, then the phrases near them
    assert utterance.heard is not None and utterance.heard.scores is not None
    assert "this is laura" in utterance.heard.scores
    # Whisper's words are one of the agent's phrases: no slot to fill, nothing to judge
    pool.transcriber.text = "this is tom"
    pool.slots.asked.clear()
    utterance = Utterance(pool)  # type: ignore[arg-type]
    utterance.add(b"\x01\x00" * SAMPLE_RATE)
    assert utterance.finish() == "this is tom" and pool.slots.asked == []


def test_a_filler_that_fails_leaves_the_rest_judged():
    from gateway.local_live.asr import Phrase, Utterance

    pool = _Pool()
    pool.transcriber.text = "and the cold leaves"
    pool.transcriber.scores = {"and the cold leaves": -5.0, "end the call please": -30.0}
    pool.decoders[0].hyp = lambda: Phrase("end the call please", -15.0)  # type: ignore[method-assign]

    def fail(window: _Window, texts: list[str]) -> list[str]:
        raise RuntimeError("model gone")

    pool.slots.fill = fail  # type: ignore[method-assign]
    utterance = Utterance(pool)  # type: ignore[arg-type]
    utterance.add(b"\x01\x00" * 3200)
    assert utterance.finish() == "and the cold leaves"  # the grammar's hang-up still vetoed: no false hang-up


class _WindowThatCannotScore(_Window):
    def score(self, texts: list[str]) -> list[float]:
        raise RuntimeError("out of memory")


def test_whisper_failing_to_score_leaves_its_words_and_the_grammar():
    from gateway.local_live.asr import Phrase, Utterance

    pool = _Pool()
    pool.transcriber.text = "and the cold leaves"
    pool.transcriber.window = lambda pcm: _WindowThatCannotScore(pool.transcriber)  # type: ignore[method-assign]
    pool.decoders[0].hyp = lambda: Phrase("end the call please", -15.0)  # type: ignore[method-assign]
    utterance = Utterance(pool)  # type: ignore[arg-type]
    utterance.add(b"\x01\x00" * 3200)
    assert utterance.finish() == "end the call please"
    assert utterance.heard is not None and utterance.heard.free == "and the cold leaves"
    assert utterance.heard.scores is None


class _WindowThatCannotHear(_Window):
    def text(self) -> str:
        raise RuntimeError("model gone")


def test_whisper_failing_to_hear_the_last_window_keeps_the_words_before_it():
    from gateway.local_live.asr import SAMPLE_RATE, Utterance
    from gateway.local_live.transcriber import WINDOW_SECONDS

    pool = _Pool()
    pool.transcriber.text = "the first window"
    utterance = Utterance(pool)  # type: ignore[arg-type]
    for _ in range(WINDOW_SECONDS + 1):
        utterance.add(b"\x01\x00" * SAMPLE_RATE)
    pool.transcriber.window = lambda pcm: _WindowThatCannotHear(pool.transcriber)  # type: ignore[method-assign]
    assert utterance.finish() == "the first window"
    assert utterance.heard is not None and utterance.heard.scores is None


def test_a_last_window_too_short_to_hear_is_not_heard():
    from gateway.local_live.asr import SAMPLE_RATE, Utterance
    from gateway.local_live.transcriber import MIN_SAMPLES, WINDOW_SECONDS

    pool = _Pool()
    pool.transcriber.text = "the first window"
    utterance = Utterance(pool)  # type: ignore[arg-type]
    utterance.add(b"\x01\x00" * (SAMPLE_RATE * WINDOW_SECONDS + MIN_SAMPLES - 1))
    assert utterance.finish() == "the first window"
    assert len(pool.transcriber.heard) == 1  # the full window only


@pytest.mark.e2e  # the real model (loaded once per process)
def test_whisper_finds_what_was_said_likeliest_on_the_phone_line():
    from gateway.local_live import asr
    from gateway.local_live.transcriber import shared_transcriber

    whisper = shared_transcriber()
    pcm = asr._phone_speech("please hang up", "f3")
    window = whisper.window(pcm)
    assert window.text() == whisper.transcribe(pcm) == "please hang up"
    texts = ["please hang up", "please hang up now", "can you tell me the time", "please"]
    scores = window.score(texts)
    assert max(scores) == scores[0] and all(s < 0 for s in scores)
    # one batch: each text is scored as if alone, in any order
    assert window.score(texts[::-1]) == pytest.approx(scores[::-1], abs=1e-3)
    assert window.score(texts[2:3]) == pytest.approx(scores[2:3], abs=1e-3)
    # a text as long as a turn can be (Whisper may write 8 tokens a second of it) is scored whole
    long_text = " ".join(["one two three four five six seven eight nine"] * 6)
    [long_score] = window.score([long_text])
    assert -math.inf < long_score < scores[0]


def test_the_evaluation_set_sounds_the_same_whatever_was_said_before():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from asr_eval_set import phone_16k, utterances

    from gateway.local_live.tts import synthesize

    first = utterances("tune")[2]  # f5's voice: breath noise, from espeak-ng's own random numbers
    before = phone_16k(first)
    synthesize("other words first, in the process's own engine", variant=first.voice)
    phone_16k(utterances("tune")[7])
    assert phone_16k(first) == before
