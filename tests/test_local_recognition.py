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

    def hyp(self) -> None:
        return None


class _Pool:
    calibrated_cmn = "calibrated"

    def __init__(self) -> None:
        self.decoders = [_Decoder(), _Decoder()]

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
