"""Word error rate: how far what a recognizer heard is from what was said (the demo and the benchmarks)."""

from __future__ import annotations

import re

# Spellings that mean the same words: a recognizer writes one, a script the other.
_SAME = {"ok": "okay", "what's": "what is", "that's": "that is", "it's": "it is", "i'm": "i am"}


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, contractions and spellings made alike."""
    out: list[str] = []
    for word in re.sub(r"[^a-z0-9' ]", " ", text.lower()).split():
        out += _SAME.get(word, word).split()
    return out


def word_errors(said: str, heard: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, words said): the word-level edit distance and its base."""
    ref, hyp = words(said), words(heard)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diagonal, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref[i - 1] != hyp[j - 1]))
    return row[len(hyp)], len(ref)
