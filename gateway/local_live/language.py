"""What the local agent understands, as the recognizer's grammar and as a language model.

The local agent understands a few things: greetings, names, the time, goodbyes and hang-up requests,
transfer requests, yes and no, numbers, "repeat after me". ``domain_corpus()`` expands them from templates
(names from lists of common first names and surnames, numbers from their words), and from it come:

- ``intent_grammar()``: the phrases as a JSGF grammar, which PocketSphinx's grammar search listens for
  (`asr.Recognizer`), and ``intent_sentence()``, the same phrases as a pattern;
- ``build_arpa()``: a trigram language model of them with everyday English behind it (the
  ``GENERAL_WORDS`` most frequent words of PocketSphinx's general model as unigrams; interpolated, P(w | h)
  = discounted domain trigram, backing off to domain bigram, backing off to ``DOMAIN_WEIGHT`` x domain
  unigram + (1 - ``DOMAIN_WEIGHT``) x general unigram). It wrote the backend's transcripts until Whisper
  replaced it (`transcriber.py`); `benchmarks/bench_asr.py` keeps it as the baseline Whisper is measured
  against.

Chosen by measurement on the tuning set of `benchmarks/asr_eval_set.py` (never on its held-out set):
see `benchmarks/bench_asr.py` and BENCHMARKS.md. Pure functions apart from reading the wheel's model.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator

GENERAL_WORDS = 3000  # the most frequent words of the general model kept as the fallback vocabulary
DOMAIN_WEIGHT = 0.5  # share of the domain in the unigram mixture
DISCOUNT = 0.5  # absolute discount of the domain's bigram and trigram counts

# What the agent understands, as templates: "{name}" and "{number}" are expanded from the lists below, and
# "(a|b)" alternatives are expanded in full.
_TEMPLATES = (
    # greetings
    "(hello|hi|hey|hi there|hello there|good morning|good afternoon|good evening)",
    "(hello|hi) (how are you|can you hear me|is anyone there|are you there)",
    "how are you (today|doing)",
    # names
    "(my name is|this is|it is|it's) {name}",
    "(hello|hi) (my name is|this is) {name}",
    "(my name is|this is|it is) {name} {surname}",
    "{name} (here|speaking|calling)",
    "this is {name} calling",
    # the time
    "what time is it",
    "what time is it (now|please|there)",
    "what is the time( please|)",
    "what's the time",
    "(can|could) you tell me (the time|what time it is)",
    "do you know (the time|what time it is)",
    "tell me the time( please|)",
    "the time please",
    # goodbyes and hang-up requests
    "(goodbye|bye|bye bye|bye now|ok bye|okay bye)",
    "(thank you|thanks|that is all|that's all|i am done|i'm done|that is it) (goodbye|bye)",
    "(goodbye|bye|bye bye) (thank you|thanks)",
    "(please |)hang up( please| now|)",
    "(you can|can you|please) hang up( now| the call|)",
    "hang up the (call|phone)",
    "end the call( please| now|)",
    "(please |)end (the|this) call",
    "i want to hang up",
    # transfer requests
    "transfer me( please| now|)",
    "transfer (me|my call|this call) to (an operator|a person|a human|someone|an agent|a representative)",
    "transfer my call( please|)",
    "(can|could|may) i (speak|talk) to (an operator|a real person|a person|a human|someone|an agent)",
    "i (want|would like|need) to (speak|talk) to (an operator|a real person|a person|a human|someone)",
    "(put|get) me through to (an operator|a person|a human|someone|an agent)",
    "connect me (to|with) (an operator|a person|a human|someone|an agent)( please|)",
    "(i need|get me) (an operator|a person|a human|a real person|an agent)",
    "(operator|agent|representative|a real person)( please|)",
    # yes and no
    "(yes|no|yeah|yep|nope|sure|okay|ok|correct|right)",
    "(yes|no) (please|thanks|thank you)",
    "(yes|yeah) (that is|that's|it is) (right|correct)",
    "(no|nope) (that is|that's|it is) not (right|correct)",
    "(no|yes) it (is|is not|isn't)",
    "that is (right|correct|wrong)",
    "(yes|no) that is (right|correct|wrong)",
    # numbers
    "{number}",
    "{digits}",
    "(my|the) (number|code|account number|phone number|order number) is {digits}",
    "(my|the) (number|code) is {number}",
    # repeat after me, recall, who
    "(please |)repeat after me",
    "(please |)repeat (this|that)",
    "say (this|that) again",
    "what did i (just |)say",
    "what did i say before",
    "(who|what) are you",
    "what is your name",
    "(thank you|thanks)( very much|)",
    "i (need|want|would like) (help|some help)",
    "can you help me( please|)",
)

FIRST_NAMES = (
    "james john robert michael william david richard joseph thomas charles christopher daniel matthew "
    "anthony mark paul steven andrew kenneth joshua kevin brian george timothy ronald jason edward "
    "jeffrey ryan jacob gary nicholas eric jonathan stephen larry justin scott brandon benjamin "
    "samuel frank gregory raymond patrick jack dennis peter tom tim mike dave chris sam alex max ben "
    "mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy betty "
    "margaret sandra ashley kimberly emily donna michelle carol amanda melissa deborah stephanie "
    "rebecca sharon laura cynthia kathleen amy angela helen anna brenda pamela nicole emma samantha "
    "katherine christine rachel maria julia sophia olivia grace alice kate jane lucy"
).split()
SURNAMES = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez wilson anderson taylor "
    "thomas moore jackson martin lee thompson white harris clark lewis robinson walker young allen "
    "king wright scott hill green adams baker nelson carter mitchell roberts turner phillips campbell "
    "parker evans edwards collins stewart morris murphy cook rogers"
).split()
_DIGITS = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def _numbers() -> list[str]:
    out = _DIGITS + _TEENS + _TENS + [f"{t} {d}" for t in _TENS for d in _DIGITS[1:]]
    out += [f"{d} hundred" for d in ["one", "two", "three", "five"]] + [
        "a hundred",
        "one hundred",
        "thousand",
    ]
    return out


def _digit_strings() -> list[str]:
    # Deterministic spread of digit sequences of 3 to 7 digits (phone numbers, codes).
    out = []
    for n in range(3, 8):
        for k in range(12):
            out.append(" ".join(_DIGITS[(k * 7 + i * (k + 3)) % 10] for i in range(n)))
    return out


def _alternatives(template: str) -> Iterator[str]:
    parts = re.split(r"\(([^()]*)\)", template)
    choices = [[p] if i % 2 == 0 else p.split("|") for i, p in enumerate(parts)]
    for combo in itertools.product(*choices):
        yield re.sub(r"\s+", " ", "".join(combo)).strip()


SENTENCE_WEIGHT = 20  # counts per template alternative, shared by its slot fillings (at least 1 each)


def domain_corpus() -> list[tuple[str, int]]:
    """Every sentence of what the agent understands, with its count: a template alternative weighs
    ``SENTENCE_WEIGHT``, shared by the names or numbers it is filled with (at least 1 each), so that a slot
    with a hundred fillers does not drown the sentences without one."""
    fills = {
        "{name}": FIRST_NAMES,
        "{surname}": SURNAMES,
        "{number}": _numbers(),
        "{digits}": _digit_strings(),
    }
    out: list[tuple[str, int]] = []
    for template in _TEMPLATES:
        for text in _alternatives(template):
            slots = [values for slot, values in fills.items() if slot in text]
            n = max((len(values) for values in slots), default=1)
            count = max(1, round(SENTENCE_WEIGHT / n))
            for i in range(n):
                sentence = text
                for slot, values in fills.items():
                    sentence = sentence.replace(slot, values[i % len(values)])
                out.append((sentence, count))
    return out


def general_unigrams(vocabulary: Iterable[str], log_prob: dict[str, float], limit: int) -> dict[str, float]:
    """The ``limit`` most probable words of the general model that the dictionary can say, as
    probabilities that sum to 1."""
    ranked = sorted((w for w in vocabulary if w in log_prob), key=lambda w: -log_prob[w])[:limit]
    total = sum(10 ** log_prob[w] for w in ranked)
    return {w: 10 ** log_prob[w] / total for w in ranked}


def build_arpa(
    corpus: Iterable[tuple[str, int]],
    general: dict[str, float],
    *,
    domain_weight: float = DOMAIN_WEIGHT,
    discount: float = DISCOUNT,
) -> str:
    """A trigram model in ARPA format: the domain's sentences, discounted and backed off to a unigram
    mixture of the domain and the general words. Every probability is normalised (each history's
    probabilities and backoff mass sum to 1)."""
    uni: Counter[str] = Counter()
    bi: Counter[tuple[str, ...]] = Counter()
    tri: Counter[tuple[str, ...]] = Counter()
    for sentence, count in corpus:
        words = ["<s>", *sentence.split(), "</s>"]
        for w in words[1:]:
            uni[w] += count
        for b in itertools.pairwise(words):
            bi[b] += count
        for t in zip(words, words[1:], words[2:], strict=False):
            tri[t] += count
    n_domain = sum(uni.values())
    vocab = sorted(set(uni) | set(general))
    p1 = {
        w: domain_weight * uni[w] / n_domain + (1 - domain_weight) * general.get(w, 0.0)
        for w in vocab
        if w != "<s>"
    }
    norm = sum(p1.values())
    p1 = {w: p / norm for w, p in p1.items()}

    def discounted(
        counts: dict[tuple[str, ...], int], lower: dict[tuple[str, ...], float]
    ) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
        """Interpolated absolute discounting: probabilities of seen n-grams, backoff weight per history."""
        by_history: dict[tuple[str, ...], list[tuple[str, int]]] = {}
        for gram, c in counts.items():
            by_history.setdefault(gram[:-1], []).append((gram[-1], c))
        probs: dict[tuple[str, ...], float] = {}
        backoff: dict[tuple[str, ...], float] = {}
        for history, seen in by_history.items():
            total = sum(c for _, c in seen)
            left = discount * len(seen) / total  # mass given to the lower order
            seen_lower = 0.0
            seen_prob = 0.0
            for w, c in seen:
                low = lower[(*history[1:], w)]
                p = (c - discount) / total + left * low
                probs[(*history, w)] = p
                seen_prob += p
                seen_lower += low
            backoff[history] = (1 - seen_prob) / max(1e-12, 1 - seen_lower)
        return probs, backoff

    unigram_probs: dict[tuple[str, ...], float] = {(w,): p for w, p in p1.items()}
    p2, bo1 = discounted(dict(bi), unigram_probs)
    # a trigram backs off to the bigram model (seen bigram, or backoff x unigram)
    bigram_full = {**{k: v for k, v in p2.items()}}

    def p_bigram(u: str, w: str) -> float:
        if (u, w) in bigram_full:
            return bigram_full[(u, w)]
        return bo1.get((u,), 1.0) * p1[w]

    lower2: dict[tuple[str, ...], float] = {(g[1], g[2]): p_bigram(g[1], g[2]) for g in tri}
    p3, bo2 = discounted(dict(tri), lower2)

    lines = [
        "\\data\\",
        f"ngram 1={len(p1) + 1}",
        f"ngram 2={len(p2)}",
        f"ngram 3={len(p3)}",
        "",
        "\\1-grams:",
    ]
    lines.append(f"-99.0 <s> {math.log10(bo1.get(('<s>',), 1.0)):.5f}")
    for w in sorted(p1):
        bo = bo1.get((w,))
        lines.append(f"{math.log10(p1[w]):.5f} {w}" + (f" {math.log10(bo):.5f}" if bo else ""))
    lines += ["", "\\2-grams:"]
    for (u, w), p in sorted(p2.items()):
        bo = bo2.get((u, w))
        lines.append(f"{math.log10(p):.5f} {u} {w}" + (f" {math.log10(bo):.5f}" if bo else ""))
    lines += ["", "\\3-grams:"]
    for (u, v, w), p in sorted(p3.items()):
        lines.append(f"{math.log10(p):.5f} {u} {v} {w}")
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


# The agent's phrases as a grammar: a second search beside the language model (see `asr.py`). The grammar
# only knows these sentences, so it hears "please hang up" where the trigram model, free to wander into
# the general words, hears "three hundred"; it also forces every other sentence into one of its own, which
# is why its answer is taken only when it beats a phone loop (`asr.choose_transcript`).
_SLOTS = {"{name}": "<name>", "{surname}": "<surname>", "{number}": "<number>", "{digits}": "<digits>"}


def _jsgf_template(template: str) -> str:
    def group(match: re.Match[str]) -> str:
        alternatives = [a.strip() for a in match.group(1).split("|")]
        body = " | ".join(a for a in alternatives if a)
        return f" [{body}] " if "" in alternatives else f" ({body}) "

    text = re.sub(r"\(([^()]*)\)", group, template)
    for slot, rule in _SLOTS.items():
        text = text.replace(slot, rule)
    return re.sub(r"\s+", " ", text).strip()


def intent_grammar() -> str:
    """The agent's phrases (``_TEMPLATES`` with their names and numbers) as a JSGF grammar."""
    lines = [
        "#JSGF V1.0;",
        "grammar agent;",
        "public <phrase> = " + " | ".join(f"({_jsgf_template(t)})" for t in _TEMPLATES) + ";",
        "<name> = " + " | ".join(FIRST_NAMES) + ";",
        "<surname> = " + " | ".join(SURNAMES) + ";",
        "<digit> = " + " | ".join(_DIGITS) + ";",
        "<digits> = <digit> <digit> <digit> <digit>*;",
        "<number> = " + " | ".join(f"({n})" for n in _numbers()) + ";",
    ]
    return "\n".join(lines) + "\n"


def _regex_template(template: str) -> str:
    text = re.sub(r"\(([^()]*)\)", lambda m: "(?:" + m.group(1) + ")", template)
    fills = {
        "{name}": "(?:" + "|".join(FIRST_NAMES) + ")",
        "{surname}": "(?:" + "|".join(SURNAMES) + ")",
        "{number}": "(?:" + "|".join(_numbers()) + ")",
        "{digits}": "(?:" + "|".join(_DIGITS) + ")(?: (?:" + "|".join(_DIGITS) + ")){2,}",
    }
    for slot, pattern in fills.items():
        text = text.replace(slot, pattern)
    return text


@functools.cache
def intent_sentence() -> re.Pattern[str]:
    """Whole sentences of the agent's phrases: what the grammar accepts, end to end. (A grammar search
    that never reached its end answers with the words it had; those are not a sentence of the agent.)"""
    return re.compile("^(?:" + "|".join(_regex_template(t) for t in _TEMPLATES) + ")$")


# --- The agent's phrases with slots, for Whisper to fill (`slots.py`) -----------------------------------

MAX_DIGITS = 10  # the longest digit string a slot is filled with (a phone number with its area code)
# Whisper's first guess at a turn rarely gets a slot's words right ("this is enormous" for "this is laura")
# but often the words around it: an alternative whose fixed words match, with anything in its slots, says
# where a name or a number may be, and Whisper is asked which fits there.
_ANYTHING = {
    "{name}": r"\S+",
    "{surname}": r"\S+",
    "{number}": r"\S+(?: \S+)?",
    "{digits}": r"\S+(?: \S+)*",  # (a code misheard may have lost digits: "my code is one two")
}
# Words that say a turn may hold a number ("a", as in "a hundred", would say so of most sentences).
NUMBER_WORDS = frozenset(" ".join(_numbers()).split()) - {"a"}


def slot_values() -> dict[str, list[str]]:
    """What each slot but ``{digits}`` (any string of 3 to `MAX_DIGITS` digits) is filled with."""
    return {"{name}": list(FIRST_NAMES), "{surname}": list(SURNAMES), "{number}": _numbers()}


def digit_words() -> list[str]:
    return list(_DIGITS)


@functools.cache
def _slotted() -> tuple[tuple[tuple[str, ...], re.Pattern[str], bool], ...]:
    out = []
    for template in _TEMPLATES:
        for text in _alternatives(template):
            items = tuple(re.findall(r"\{\w+\}|[^\s{}]+", text))
            if not any(item in _ANYTHING for item in items):
                continue
            pattern = re.compile("^" + " ".join(_ANYTHING.get(i, re.escape(i)) for i in items) + "$")
            numeric = "{number}" in items or "{digits}" in items
            out.append((items, pattern, numeric))
    return tuple(out)


def slotted_alternatives(text: str) -> list[tuple[str, ...]]:
    """The template alternatives with slots that ``text`` fits with anything in the slots' place (a number's
    slot only if ``text`` has a number word), as their items: words and slots ("this is enormous":
    ``("this", "is", "{name}")``), those with the most words of ``text`` first. Pure."""
    has_number = any(word in NUMBER_WORDS for word in text.split())
    fits = [
        items for items, pattern, numeric in _slotted() if (has_number or not numeric) and pattern.match(text)
    ]
    return sorted(fits, key=lambda items: -sum(not item.startswith("{") for item in items))
