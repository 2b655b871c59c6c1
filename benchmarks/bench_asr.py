"""Word error rate of the local backend's recognizer on phone audio, before and after; prints Markdown.

The utterances come from `asr_eval_set.py` (held-out ``test`` set by default; ``--set tune`` is the one
parameters were chosen on). Each utterance is decoded by both recognizers in turn (interleaved, so the
machine's drift affects both alike), streamed in 40 ms pieces as the backend feeds them:

- before: PocketSphinx's own general language model, calibrated on wide-band speech (the backend until
  issue 16);
- language model: the agent's language model, phone-band calibration, high-band noise (the backend after
  the first part of issue 16: one PocketSphinx search);
- grammar: that search's transcript, replaced by the grammar's phrase as the backend chose it until
  Whisper came in (the grammar and the phone loop from the ``after`` decode);
- words: Whisper tiny.en's transcript (`transcriber.py`), replaced by the grammar's phrase where the two
  agree word for word (the backend of issue 16's fourth part: the same decode, without Whisper's scores);
- fifth part: that, with Whisper as the judge as in issue 16's fifth part (the same decode): it vetoes a
  grammar phrase it finds far less likely than its own words, and takes the agent's phrase nearest its
  words that it finds about as likely, all scored in lower case;
- after: `gateway.local_live.asr` as it is, through its `Utterance`: the judge scores each phrase as
  Whisper would write it, and Whisper fills the names and numbers of the phrases a turn's words fit
  (`slots.py`).

Also: which intent the local agent takes from each transcript (every goodbye or hang-up request must end
the call), and the real-time factor of each (CPU seconds per second of audio, one thread).

``--demo``: the demo caller's lines (`gateway demo`) in its voice at three speeds, clean and with line
noise, each series one caller (the recognizer adapts to them as in a call): what is heard, what the agent
does. The demo and its end-to-end test rely on these.

Run: python benchmarks/bench_asr.py [--set test|tune] [--full] [--show] [--demo]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pocketsphinx  # noqa: E402
from asr_eval_set import GENERAL, INTENT_CATEGORIES, phone_16k, utterances  # noqa: E402
from machine import describe  # noqa: E402

from gateway.local_live import asr, language  # noqa: E402
from gateway.local_live.agent import LocalAgent  # noqa: E402
from gateway.local_live.transcriber import Transcriber, Window  # noqa: E402
from gateway.local_live.tts import synthesize  # noqa: E402
from gateway.local_live.word_errors import word_errors, words  # noqa: E402


def before_decoder() -> pocketsphinx.Decoder:
    """The recognizer as it was: the general model, calibrated on wide-band espeak speech."""
    decoder = pocketsphinx.Decoder(loglevel="FATAL")
    pcm = synthesize(asr._CALIBRATION, rate=16000, variant="m3")
    decoder.start_utt()
    for i in range(0, len(pcm), 1280):
        decoder.process_raw(pcm[i : i + 1280], False, False)
    decoder.end_utt()
    return decoder


def decode_before(decoder: pocketsphinx.Decoder, pcm: bytes) -> str:
    decoder.start_utt()
    for i in range(0, len(pcm), 1280):
        decoder.process_raw(pcm[i : i + 1280], False, False)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""


LANGUAGE_WEIGHT = 9.0  # the language model's weight against the acoustic scores (PocketSphinx's default 6.5)
_LOG_ZERO = -536870912  # what PocketSphinx answers for a word its model does not have


def language_model() -> str:
    """The ARPA text of the agent's language model (`language.py`): the backend's transcript from the first
    part of issue 16 until Whisper replaced it, built from the agent's phrases and the general model."""
    import math

    model = Path(pocketsphinx.get_model_path()) / "en-us"
    general = pocketsphinx.NGramModel.readfile(str(model / "en-us.lm.bin"))
    words: set[str] = set()
    with open(model / "cmudict-en-us.dict", encoding="utf-8") as f:
        for line in f:
            word = line.split(" ", 1)[0]
            if "(" not in word:  # "(2)": an alternative pronunciation
                words.add(word)
    to_log10 = math.log10(1.0001)  # PocketSphinx's log base
    log_prob = {w: v * to_log10 for w in words if (v := general.prob([w])) > _LOG_ZERO}
    corpus = [(s, c) for s, c in language.domain_corpus() if all(w in words for w in s.split())]
    return language.build_arpa(corpus, language.general_unigrams(words, log_prob, language.GENERAL_WORDS))


def language_model_decoder() -> tuple[pocketsphinx.Decoder, str]:
    """The agent's language model alone (one search), calibrated as the backend calibrates, and its mean."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "agent.lm"
        path.write_text(language_model(), encoding="utf-8")
        decoder = pocketsphinx.Decoder(lm=str(path), lw=LANGUAGE_WEIGHT, loglevel="FATAL")
    for variant, text in asr.CALIBRATION:
        decode_before(decoder, asr._HighBand().add(asr._phone_speech(text, variant)))
    return decoder, decoder.get_cmn()


def decode_language_model(decoder: pocketsphinx.Decoder, cmn: str, pcm: bytes) -> str:
    decoder.set_cmn(cmn)
    return decode_before(decoder, asr._HighBand().add(pcm)).strip()


def decode_after(pool: asr.RecognizerPool, pcm: bytes) -> asr.Heard:
    utterance = asr.Utterance(pool)
    for i in range(0, len(pcm), 640):  # 20 ms frames, as the line delivers them
        utterance.add(pcm[i : i + 640])
    utterance.finish()
    assert utterance.heard is not None
    return utterance.heard


class TimedTranscriber(Transcriber):
    """Whisper, with the CPU time it takes kept apart: hearing (``cpu``, the grammar column is the rest) and
    judging (``judge_cpu``: scoring and choosing what to score, which the ``words`` column did without)."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu = 0.0
        self.judge_cpu = 0.0
        self.judged = 0  # turns Whisper judged
        self.last_window: Window | None = None

    def window(self, pcm: bytes) -> Window:
        t = time.process_time()
        try:
            self.last_window = TimedWindow(self, super().window(pcm))
            return self.last_window
        finally:
            self.cpu += time.process_time() - t


FIFTH_RESCORE = 2.0  # the fifth part's rescoring threshold, on its scores
_PHRASES_TO_SCORE = asr.phrases_to_score  # (main times the module's)


def fifth_part(whisper: TimedTranscriber, heard: asr.Heard) -> str:
    """The fifth part's rule on the same decode: Whisper's lower-case scores (`Window.score`, untimed) of its
    words, the grammar's phrase and the nearest phrases, no slots filled, rescoring within 2 nats."""
    window, texts = whisper.last_window, _PHRASES_TO_SCORE(heard.free, heard.phrase, heard.margin)
    if window is None or not texts or heard.scores is None:
        return asr.choose_transcript(heard.free, heard.phrase, heard.margin)
    scores = dict(zip(texts, Window.score(window, texts), strict=True))
    rescore, asr.RESCORE = asr.RESCORE, FIFTH_RESCORE
    try:
        return asr.choose_transcript(heard.free, heard.phrase, heard.margin, scores=scores)
    finally:
        asr.RESCORE = rescore


class TimedWindow(Window):
    """The same window (its encoding taken over), its hearing and its judging timed apart."""

    def __init__(self, whisper: TimedTranscriber, window: Window) -> None:
        self.__dict__.update(window.__dict__)
        self._timer = whisper

    def words(self) -> str:  # (what `transcribe` and `text` hear through)
        t = time.process_time()
        try:
            return super().words()
        finally:
            self._timer.cpu += time.process_time() - t

    def score(self, texts: Sequence[str]) -> list[float]:
        t = time.process_time()
        self._timer.judged += 1
        try:
            return super().score(texts)
        finally:
            self._timer.judge_cpu += time.process_time() - t

    def next_token_logits(self, tokens: Sequence[int]) -> np.ndarray:  # filling slots: judging too
        t = time.process_time()
        try:
            return super().next_token_logits(tokens)
        finally:
            self._timer.judge_cpu += time.process_time() - t


def intent(agent: LocalAgent, text: str) -> str:
    reply = agent.respond(text, [])
    return reply.tool if reply is not None and reply.tool else ""


def demo_lines() -> None:
    from asr_eval_set import Utterance

    from gateway.devtools.demo import CALLER_LINES, CALLER_VARIANT, CALLER_WPM

    pool = asr.RecognizerPool(preload=1, limit=1)
    pool.warm()
    agent = LocalAgent(can_end_call=True)
    print("## The demo caller's lines\n")
    print("| voice | said | heard | Whisper / grammar (margin) | the agent |")
    print("|---|---|---|---|---|")
    errors = total = 0
    for wpm in (CALLER_WPM - 10, CALLER_WPM, CALLER_WPM + 10):
        for noise in ("clean", "line noise"):
            caller = asr.CallerAdaptation()
            for text, _ in CALLER_LINES:
                u = Utterance("demo", text, CALLER_VARIANT, wpm, noise)
                pcm = phone_16k(u)
                utterance = asr.Utterance(pool, caller)
                for i in range(0, len(pcm), 640):
                    utterance.add(pcm[i : i + 640])
                heard = utterance.finish()
                e, n = word_errors(text, heard)
                errors, total = errors + e, total + n
                reply = agent.respond(heard, [])
                does = "" if reply is None else (reply.tool or reply.text[:40])
                searches = utterance.heard
                assert searches is not None
                print(
                    f"| {u.condition} | {text} | {heard} | {searches.free} / "
                    f"{searches.phrase} ({searches.margin:.1f}) | {does} |"
                )
    print(f"\nword error rate {100 * errors / total:.0f}% over {total} words")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", default="test", choices=("test", "tune"))
    parser.add_argument("--full", action="store_true", help="every voice x speed x noise for every phrase")
    parser.add_argument("--show", action="store_true", help="print every transcript")
    parser.add_argument("--demo", action="store_true", help="the demo caller's lines instead")
    args = parser.parse_args()
    if args.demo:
        demo_lines()
        return
    items = utterances(args.set, full=args.full)
    audio = [phone_16k(u) for u in items]
    seconds = sum(len(a) for a in audio) / 32000
    old = before_decoder()
    lm, lm_cmn = language_model_decoder()
    whisper = TimedTranscriber()
    pool = asr.RecognizerPool(preload=1, limit=1, transcriber=whisper)
    pool.warm()
    agent = LocalAgent(can_end_call=True, tools={"transfer_call": None})
    columns = ("before", "lm", "grammar", "words", "fifth", "after")
    choose_phrases = asr.phrases_to_score

    def phrases_to_score(free: str, phrase: str, margin: float) -> list[str]:  # timed: judging's CPU
        t = time.process_time()
        try:
            return choose_phrases(free, phrase, margin)
        finally:
            whisper.judge_cpu += time.process_time() - t

    asr.phrases_to_score = phrases_to_score
    errors: dict[str, dict[str, int]] = {c: defaultdict(int) for c in columns}
    ref_words: dict[str, int] = defaultdict(int)
    cpu = dict.fromkeys(columns, 0.0)
    ended = dict.fromkeys(columns, 0)
    transferred = dict.fromkeys(columns, 0)
    false_end: dict[str, list[str]] = {c: [] for c in columns}
    false_transfer = dict.fromkeys(columns, 0)
    shown = []
    for u, pcm in zip(items, audio, strict=True):
        ref_words[u.category] += len(words(u.text))
        heard: dict[str, str] = {}
        for which in ("before", "lm", "after"):  # interleaved
            t = time.process_time()
            whisper_before = whisper.cpu
            if which == "before":
                heard[which] = decode_before(old, pcm)
            elif which == "lm":
                heard[which] = decode_language_model(lm, lm_cmn, pcm)
                cpu_lm = time.process_time() - t
            else:
                judge_before = whisper.judge_cpu
                both = decode_after(pool, pcm)
                heard["after"] = both.hypstr
                heard["words"] = asr.choose_transcript(both.free, both.phrase, both.margin)
                heard["grammar"] = asr.choose_transcript(heard["lm"], both.phrase, both.margin, None)
                spent, judging = time.process_time() - t, whisper.judge_cpu - judge_before
                cpu["grammar"] += cpu_lm + spent - judging - (whisper.cpu - whisper_before)
                cpu["words"] += spent - judging
                fifth = time.process_time()
                heard["fifth"] = fifth_part(whisper, both)
                cpu["fifth"] += spent - judging + time.process_time() - fifth
                t += time.process_time() - fifth  # (not the after column's)
            cpu[which] += time.process_time() - t
        for which in columns:
            text = heard[which]
            errors[which][u.category] += word_errors(u.text, text)[0]
            tool = intent(agent, text)
            if u.category == "goodbyes":
                ended[which] += tool == "end_call"
            elif tool == "end_call":
                false_end[which].append(f'"{u.text}" heard as "{text}"')
            if u.category == "transfers":
                transferred[which] += tool == "transfer_call"
            elif tool == "transfer_call":
                false_transfer[which] += 1
            if which == "after":
                shown.append(f"| {u.category} | {u.condition} | {u.text} | {text} | {tool or '-'} |")

    def rate(which: str, cats: tuple[str, ...]) -> str:
        return f"{100 * sum(errors[which][c] for c in cats) / max(1, sum(ref_words[c] for c in cats)):.1f}%"

    goodbyes = sum(u.category == "goodbyes" for u in items)
    transfers = sum(u.category == "transfers" for u in items)

    def row(label: str, cell: Callable[[str], str]) -> str:
        return f"| {label} | " + " | ".join(cell(c) for c in columns) + " |"

    print(f"## Recognition of phone audio ({args.set} set{', full' if args.full else ''})\n")
    print(f"Machine: {describe('pocketsphinx')}.\n")
    print(f"{len(items)} utterances, {seconds:.0f} s of audio; word error rate (lower is better):\n")
    header = (
        "| {} | before (general model) | agent's language model | + grammar, phone loop | + Whisper "
        "| + Whisper's judgement (fifth part) | + slots, written forms (after) |"
    )
    print(header.format("category"))
    print("|---|---|---|---|---|---|---|")
    for cat in (*INTENT_CATEGORIES, GENERAL):
        print(row(cat, lambda c, cat=cat: rate(c, (cat,))))  # type: ignore[misc]
    print(row("**the agent's intent phrases**", lambda c: rate(c, INTENT_CATEGORIES)))
    print(row("**general sentences**", lambda c: rate(c, (GENERAL,))))
    print()
    print(header.format(""))
    print("|---|---|---|---|---|---|---|")
    print(row("goodbyes and hang-up requests that end the call", lambda c: f"{ended[c]}/{goodbyes}"))
    print(row("transfer requests that transfer", lambda c: f"{transferred[c]}/{transfers}"))
    print(row("other utterances that ended the call", lambda c: str(len(false_end[c]))))
    print(row("other utterances that transferred", lambda c: str(false_transfer[c])))
    print(row("real-time factor (CPU s per audio s)", lambda c: f"{cpu[c] / seconds:.3f}"))
    judged = whisper.judged
    per_judged = whisper.judge_cpu / max(1, judged)  # choosing what to score (every turn) and scoring
    print(
        f"\nWhisper heard {len(items)} turns, {whisper.cpu / len(items):.3f} s of CPU each, and judged "
        f"{judged}, {per_judged:.3f} s each (choosing what to score, for every turn, filling slots and "
        "scoring)."
    )
    for c in columns:
        if false_end[c]:
            print(f"\nEnded the call ({c}): " + "; ".join(false_end[c]))
    if args.show:
        print("\n| category | voice | said | heard (after) | tool |\n|---|---|---|---|---|")
        print("\n".join(shown))


if __name__ == "__main__":
    main()
