"""Whisper fills the names and numbers of the agent's phrases (`gateway.local_live.slots`): which phrases a
turn's words fit, how Whisper would write them, and the filling itself, against a scripted Whisper that
expects one text, then once with the real model."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.local_live import language
from gateway.local_live.slots import MAX_ALTERNATIVES, SlotFiller
from gateway.local_live.transcriber import written_forms


@pytest.mark.parametrize(
    ("text", "alternatives"),
    [
        ("this is enormous", [("this", "is", "{name}")]),
        ("my name is game wilton", [("my", "name", "is", "{name}", "{surname}")]),
        ("did it come here", []),  # nothing with a slot fits
        ("hello", []),
        # a number's slot only where there is a number word: "a six or two" may be digits, "go on now" not
        ("a six or two", [("{digits}",)]),
        ("go on now", []),
        # a turn with a number word may be all digits, and a code misheard may have lost some of its
        # digits ("my code is one two" for "my code is one one two"); the fits with more words first
        (
            "my code is one",
            [("my", "code", "is", "{digits}"), ("my", "code", "is", "{number}"), ("{digits}",)],
        ),
        ("five", [("{number}",), ("{digits}",)]),
        ("hold on a second please", []),  # "a" is no number word
    ],
)
def test_the_agent_phrases_with_slots_a_turn_fits(text, alternatives):
    assert language.slotted_alternatives(text) == alternatives


@pytest.mark.parametrize(
    ("phrase", "forms"),
    [
        ("this is laura", ["This is Laura."]),
        ("my name is james wilson", ["My name is James Wilson."]),
        ("what time is it", ["What time is it?"]),
        ("what's the time", ["What's the time?"]),
        ("i want to hang up", ["I want to hang up."]),
        ("hi how are you", ["Hi how are you?", "Hi, how are you?"]),  # a question after a greeting
        ("thank you goodbye", ["Thank you goodbye.", "Thank you, goodbye."]),
        ("thank you", ["Thank you."]),
        ("ok bye", ["OK bye.", "OK, bye."]),
        ("my code is one one two", ["My code is one one two.", "My code is 112."]),
        ("eight six four two", ["Eight six four two.", "8642."]),
        ("one two", ["One two."]),  # two digits are not a code
        ("", []),
    ],
)
def test_the_agent_phrases_as_whisper_writes_them(phrase, forms):
    assert written_forms(phrase) == forms


class _Tokens:
    """A stand-in tokenizer: a word of more than four letters is two tokens ("Laura": "La", "ura"), so that
    a value takes several steps; ids are handed out as words come."""

    end_of_text = 0

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def tokens(self, text: str) -> list[int]:
        pieces = []
        for word in text.replace(".", " .").replace("?", " ?").replace("!", " !").replace(",", " ,").split():
            pieces += [word[:2], word[2:]] if len(word) > 4 else [word]
        return [self.ids.setdefault(p, len(self.ids) + 1) for p in pieces]


class _Expecting:
    """A scripted Whisper window that expects one written text: each next token of it is far likelier than
    any other; after it, or once what it is given strays from it, the end of the text a little likelier."""

    def __init__(self, tokenizer: _Tokens, text: str) -> None:
        self.expected = [*tokenizer.tokens(" " + text), tokenizer.end_of_text]
        self.ends = [tokenizer.end_of_text, *tokenizer.tokens(".")]
        self.steps = 0

    def next_token_logits(self, tokens: list[int]) -> np.ndarray:
        self.steps += 1
        logits = np.zeros(4096)
        if tokens == self.expected[: len(tokens)] and len(tokens) < len(self.expected):
            logits[self.expected[len(tokens)]] = 10.0
        else:
            logits[self.ends] = 1.0
        return logits


def _fill(said: str, texts: list[str]) -> tuple[list[str], int]:
    tokenizer = _Tokens()
    window = _Expecting(tokenizer, said)
    filled = SlotFiller(tokenizer).fill(window, texts)  # type: ignore[arg-type]
    return filled, window.steps


def test_a_name_is_filled_as_whisper_expects_it_whatever_the_turn_had_there():
    filled, steps = _fill("This is Laura.", ["this is enormous"])
    assert filled == ["this is laura"]
    assert steps == 2  # "La" among the names' first tokens, then "ura" or the end: one step each


def test_a_name_and_a_surname():
    filled, _ = _fill("My name is James Wilson.", ["my name is game wilton"])
    assert filled == ["my name is james wilson"]


def test_digits_are_filled_until_the_end_is_likelier():
    filled, _ = _fill("My code is one one two.", ["my covid one one two", "my code is eight eight eight"])
    assert "my code is one one two" in filled
    assert language.intent_sentence().match("my code is one one two")
    filled, _ = _fill("Eight six four two.", ["a six or two"])
    assert filled == ["eight six four two"]


def test_digits_are_at_least_three_and_at_most_the_longest_code():
    filled, _ = _fill("One two.", ["a one or two"])  # Whisper would end after two: a code has three
    assert filled[0].startswith("one two ") and len(filled[0].split()) == 3
    filled, _ = _fill("Nine" + " nine" * 13 + ".", ["nine nine nine"])
    assert filled == [" ".join(["nine"] * language.MAX_DIGITS)]


def test_at_most_a_few_alternatives_are_filled():
    many = ["this is enormous", "my name is game wilton", "my code is one", "a six or two", "it is come"]
    tokenizer = _Tokens()
    filled = SlotFiller(tokenizer).fill(_Expecting(tokenizer, "Hello."), many)  # type: ignore[arg-type]
    assert len(filled) <= MAX_ALTERNATIVES
    assert all(language.intent_sentence().match(phrase) for phrase in filled)


@pytest.mark.e2e  # the real model (loaded once per process)
def test_whisper_fills_the_name_it_hears_on_the_phone_line():
    from gateway.local_live import asr
    from gateway.local_live.transcriber import shared_transcriber

    whisper = shared_transcriber()
    window = whisper.window(asr._phone_speech("this is laura", "f3"))
    # whatever Whisper wrote in the name's place, asked which of the agent's names goes there, it says Laura
    assert SlotFiller(whisper).fill(window, ["this is enormous"]) == ["this is laura"]
    own, [laura, tom] = window.score_phrases(["this is laura", "this is tom"])
    assert laura > tom and own >= laura - 1.0
    # what Whisper expects next, token by token, adds up to its score of the whole text
    tokens = [*whisper.tokens(" This is Laura."), whisper.end_of_text]
    steps = [window.next_token_logits(tokens[:i]).astype(np.float64) for i in range(len(tokens))]
    total = sum(
        step[token] - step.max() - np.log(np.exp(step - step.max()).sum())
        for step, token in zip(steps, tokens, strict=True)
    )
    assert total == pytest.approx(window.score(["This is Laura."])[0], abs=1e-3)
