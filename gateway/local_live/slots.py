"""The names and numbers in the agent's phrases, as Whisper hears them best.

Whisper tiny.en on a phone line often gets the words around a name or a number right and the name or number
wrong ("this is enormous" for "this is laura", "my covid one one two" for "my code is one one two"), and the
agent's phrase nearest in spelling then has the wrong name too. But asked which of the agent's names comes
after "This is", it answers "Laura" (the right name first for 15 of the tuning set's 16 names, given the
right words before it). So for each of the agent's phrases with a slot that a turn's words fit
(`language.slotted_alternatives`), the slots are filled one token at a time, each with the likeliest of the
tokens that continue one of the slot's values (greedy, in Whisper's written form: "Laura", not "laura"),
until the end of the slot is likelier than any more of it. The phrases so filled join those Whisper judges
between (`asr.choose_transcript`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import language
from .transcriber import Transcriber, Window, capitalized, written_word

# At most this many alternatives are filled for one turn: a turn's words fit few (on the tuning set, 1.5 on
# average where any), and each slot costs a decoder step per token of its value.
MAX_ALTERNATIVES = 3
_DIGITS = "{digits}"
_END = None  # the end of the phrase, as the item after its last


@dataclass(slots=True)
class _Node:
    """A token trie of a slot's values: where each token leads, and the value that ends here."""

    children: dict[int, _Node] = field(default_factory=dict)
    value: str | None = None


class SlotFiller:
    """Fills the agent's phrases' slots for one `Transcriber` (its tokenizer); shared by its calls."""

    def __init__(self, transcriber: Transcriber) -> None:
        self._transcriber = transcriber
        self._tries: dict[tuple[str, bool], _Node] = {}
        self._firsts: dict[str, frozenset[int]] = {}

    def fill(self, window: Window, texts: Sequence[str]) -> list[str]:
        """The agent's phrases with slots that ``texts`` fit (`language.slotted_alternatives`, the first
        `MAX_ALTERNATIVES`), each with its slots filled as Whisper hears them in ``window``."""
        alternatives: list[tuple[str, ...]] = []
        for text in texts:
            for items in language.slotted_alternatives(text):
                if items not in alternatives:
                    alternatives.append(items)
        filled = (self._fill(window, items) for items in alternatives[:MAX_ALTERNATIVES])
        return list(dict.fromkeys(filled))

    def _fill(self, window: Window, items: tuple[str, ...]) -> str:
        tokens: list[int] = []
        words: list[str] = []
        for k, item in enumerate(items):
            first = k == 0
            if not item.startswith("{"):
                tokens += self._word_tokens(item, first)
                words.append(item)
                continue
            ends = self._first_tokens(items[k + 1] if k + 1 < len(items) else _END)
            if item == _DIGITS:
                value = self._fill_digits(window, tokens, first, ends)
            else:
                value = self._fill_values(window, tokens, self._trie(item, first), ends)
            words.append(value)
        return " ".join(words)

    def _fill_values(
        self,
        window: Window,
        tokens: list[int],
        node: _Node,
        ends: frozenset[int],
        logits: np.ndarray | None = None,
    ) -> str:
        """The slot's value Whisper finds likeliest after ``tokens``, token by token (appended to them);
        ``logits``: Whisper's for the first token, if already at hand."""
        while node.children:
            options = list(node.children)
            if len(options) == 1 and node.value is None:
                choice = options[0]  # nothing to choose: no decoder step
            else:
                if logits is None:
                    logits = window.next_token_logits(tokens)
                choice = max(options, key=logits.__getitem__)
                if node.value is not None and _best(logits, ends) > logits[choice]:
                    break
            tokens.append(choice)
            node = node.children[choice]
            logits = None  # they were for this token
        assert node.value is not None  # every leaf of a trie ends a value
        return node.value

    def _fill_digits(self, window: Window, tokens: list[int], first: bool, ends: frozenset[int]) -> str:
        """A string of 3 to `language.MAX_DIGITS` digits, one at a time."""
        digits: list[str] = []
        for count in range(language.MAX_DIGITS):
            trie = self._trie(_DIGITS, first and count == 0)
            logits = window.next_token_logits(tokens)
            if count >= 3 and _best(logits, ends) > _best(logits, frozenset(trie.children)):
                break
            digits.append(self._fill_values(window, tokens, trie, frozenset(), logits))
        return " ".join(digits)

    def _word_tokens(self, word: str, first: bool) -> list[int]:
        written = written_word(word)
        return self._transcriber.tokens(" " + (capitalized(written) if first else written))

    def _trie(self, slot: str, first: bool) -> _Node:
        key = (slot, first)
        if key not in self._tries:
            values = language.digit_words() if slot == _DIGITS else language.slot_values()[slot]
            root = _Node()
            for value in values:
                node = root
                for k, word in enumerate(value.split()):
                    for token in self._word_tokens(word, first and k == 0):
                        node = node.children.setdefault(token, _Node())
                node.value = value
            self._tries[key] = root
        return self._tries[key]

    def _first_tokens(self, item: str | None) -> frozenset[int]:
        """The tokens that may begin what comes after a slot: a word, another slot's values, or the end."""
        key = item or ""
        if key not in self._firsts:
            if item is None:  # (not a comma: Whisper writes "one four seven, zero" for a code)
                t = self._transcriber
                found = {t.end_of_text, *(t.tokens(mark)[0] for mark in (".", "?", "!"))}
            elif item.startswith("{"):
                found = set(self._trie(item, False).children)
            else:
                found = {self._word_tokens(item, False)[0]}
            self._firsts[key] = frozenset(found)
        return self._firsts[key]


def _best(logits: np.ndarray, tokens: frozenset[int]) -> float:
    return max((float(logits[token]) for token in tokens), default=-math.inf)
