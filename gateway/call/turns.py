"""Turn-taking at the gateway, as pure state: when the caller's speech starts and ends on the line, when that
speech is a barge-in, and when the agent has stalled.

The measurements come from `gateway.call.voice` (a frame's level, a cheap voiced/unvoiced verdict, and a
speech probability from a model while an onset is being confirmed); the rules here decide what they mean.
No clock, no socket: times are passed in, so every rule is tested in microseconds.

Why each guard is there (a false barge-in cuts the agent off mid-sentence, which callers hear as rude):

- the line's **noise floor** is tracked (a minimum that creeps up slowly), and only frames well above it are
  looked at, so hiss, hum and a click never start a turn;
- while the agent's audio plays out on the line, the caller's side also carries its **echo**: a frame counts
  only if it is louder than the agent's loudest frame less `echo_margin_db`. Echo returns at least that far
  below what was played on a normal line (-20 dB is typical), so it never passes; a caller who speaks up
  does. A line with louder echo (a speakerphone, no echo cancelling) is learnt: what it carries while the
  agent plays out is mostly that echo, and a frame must also clear its median by `echo_headroom_db`. A
  caller quieter than the bar is left to Live's own barge-in, which still works;
- a **minimum speech duration**, and a speech model that must agree before an onset counts (music on hold
  and noise bursts are voiced to a cheap detector, not to the model). A candidate the model does not
  confirm within `confirm_window_s` is given up, and the model rests for `confirm_backoff_s`, so music
  does not keep it busy.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

FRAME_S = 0.02
FLOOR_RISE_DB_PER_S = 3.0  # the floor follows a louder line this slowly, so speech never becomes "noise"
QUIETEST_SPEECH_DBFS = -50.0  # nothing quieter is a caller's voice on a phone line
ECHO_WINDOW_FRAMES = 250  # the line's last 5 s while the agent played out: what its echo sounds like there
ECHO_EVIDENCE_FRAMES = 50  # a second of it before the line's own echo level is trusted


@dataclass(frozen=True)
class TurnRules:
    """The knobs of turn-taking for one call (the defaults are what the README explains)."""

    barge_in: str = "local"  # BARGE_IN: local or server
    turn_detection: str = "server"  # TURN_DETECTION: server or local
    min_speech_s: float = 0.08  # speech this long (and confirmed) before it is an onset
    end_silence_s: float = 0.5  # TURN_DETECTION=local: this much silence ends the caller's turn
    gate_db: float = 9.0  # above the noise floor, for a frame to be looked at
    echo_margin_db: float = 15.0  # while the agent plays out: below its loudest frame by at most this much
    echo_headroom_db: float = 10.0  # ... and above the echo the line was heard to carry by at least this
    speech_probability: float = 0.5  # the model's verdict that confirms an onset
    confirm_window_s: float = 0.3  # an unconfirmed candidate is given up after this long
    confirm_backoff_s: float = 1.5  # and the model rests this long before the next one
    stall_timeout_s: float = 5.0  # STALL_TIMEOUT_S: the agent silent this long after the caller's turn

    @property
    def listens(self) -> bool:
        """Is the local detector needed at all? (The stall watchdog then falls back on the line's level.)"""
        return self.barge_in == "local" or self.turn_detection == "local"


@dataclass(frozen=True, slots=True)
class Heard:
    """What one caller frame meant: the start of speech (`onset`), its end (`end`), or neither."""

    onset: bool = False
    end: bool = False
    speaking: bool = False  # the caller's speech is in progress (committed onset, no end yet)


NOTHING = Heard()


@dataclass
class CallerSpeech:
    """The caller's speech on the line, from per-frame measurements (see the module's docstring)."""

    rules: TurnRules = TurnRules()
    floor_db: float | None = None  # the line's noise floor (None: no frame yet; the first one sets it)
    agent_db: float | None = None  # the loudest agent frame of the playout in progress (None: not playing)
    speaking: bool = False
    candidate_s: float = 0.0  # voiced time of the onset being confirmed (0: none)
    unvoiced_s: float = 0.0  # in a candidate: unvoiced time since its last voiced frame; in speech: silence
    voiced_run: int = 0  # voiced frames in a row (in speech, a lone one, a click, does not break the silence)
    candidate_age_s: float = 0.0
    rest_until: float = 0.0  # the model rests until then (a candidate was given up)
    echo_held: bool = False  # the current burst was held back by the echo guard (counted once)
    echo_db: float | None = None  # the line's typical level while the agent plays out (None: not known yet)
    echo_levels: deque[float] = field(default_factory=lambda: deque(maxlen=ECHO_WINDOW_FRAMES))
    echo_heard: int = 0  # frames that went into echo_levels
    onsets: int = 0
    guarded: int = 0  # bursts that would have been onsets without a guard (echo, or the model said no)

    # --- the agent's side ---

    def agent_played(self, level_db: float) -> None:
        """Agent audio at `level_db` went to the line: its echo may come back up to that loud."""
        if self.agent_db is None or level_db > self.agent_db:
            self.agent_db = level_db

    def agent_quiet(self) -> None:
        """Nothing of the agent's is playing out any more: no echo to expect."""
        self.agent_db = None

    # --- the caller's side ---

    def threshold_db(self) -> float:
        """How loud a frame must be to be looked at now."""
        floor = self.floor_db if self.floor_db is not None else QUIETEST_SPEECH_DBFS
        threshold = max(floor + self.rules.gate_db, QUIETEST_SPEECH_DBFS)
        if self.agent_db is not None:
            threshold = max(threshold, self.agent_db - self.rules.echo_margin_db)
            if self.echo_db is not None:
                threshold = max(threshold, self.echo_db + self.rules.echo_headroom_db)
        return threshold

    def gate(self, level_db: float) -> bool:
        """Is this frame worth asking the voiced/unvoiced detector about? (Also learns the noise floor.)"""
        floor = self.floor_db
        if floor is None or level_db < floor:
            floor = min(level_db, QUIETEST_SPEECH_DBFS)  # a caller speaking at once is not taken for noise
        else:
            floor = min(level_db, floor + FLOOR_RISE_DB_PER_S * FRAME_S)
        self.floor_db = floor
        if self.agent_db is not None and not self.speaking:
            self._learn_echo(level_db, floor)
        open_ = level_db >= self.threshold_db()
        if not open_ and self.agent_db is not None and not self.speaking:
            # Loud enough to be speech on a quiet line, but not over the agent's echo: held back.
            if level_db >= max(floor + self.rules.gate_db, QUIETEST_SPEECH_DBFS):
                if not self.echo_held:
                    self.echo_held = True
                    self.guarded += 1
            else:
                self.echo_held = False
        return open_

    def _learn_echo(self, level_db: float, floor: float) -> None:
        """While the agent plays out, what the line carries above its noise is mostly the agent's own echo
        (a caller rarely talks for long over it): its median is the line's echo level, which a caller's
        voice must clear by `echo_headroom_db`. Lines with strong echo (a loud speakerphone, no echo
        cancelling) so raise the bar for themselves; the median is recomputed twice a second."""
        if level_db < floor + self.rules.gate_db:
            return
        self.echo_levels.append(level_db)
        self.echo_heard += 1
        if self.echo_heard % 25 == 0 and len(self.echo_levels) >= ECHO_EVIDENCE_FRAMES:
            self.echo_db = statistics.median(self.echo_levels)

    def wants_probability(self, voiced: bool, now: float) -> bool:
        """Must the speech model score this frame? Only while an onset is being confirmed: a candidate has
        been voiced for two frames already (a click or a blip never wakes the model), and the model is not
        resting."""
        return not self.speaking and self.candidate_s >= 2 * FRAME_S - 1e-9 and now >= self.rest_until

    def frame(self, voiced: bool, probability: float | None, now: float) -> Heard:
        """One 20 ms frame: `voiced` by the cheap detector (and above the gate), and the model's speech
        probability if it was asked (`wants_probability`)."""
        rules = self.rules
        self.voiced_run = self.voiced_run + 1 if voiced else 0
        if self.speaking:
            self.unvoiced_s = 0.0 if self.voiced_run >= 2 else self.unvoiced_s + FRAME_S
            if self.unvoiced_s >= rules.end_silence_s - 1e-9:
                self.speaking = False
                self.unvoiced_s = 0.0
                return Heard(end=True)
            return Heard(speaking=True)
        if voiced:
            self.echo_held = False
            self.candidate_s += FRAME_S
            self.unvoiced_s = 0.0
        elif self.candidate_s > 0:
            self.unvoiced_s += FRAME_S
            if self.unvoiced_s >= 3 * FRAME_S - 1e-9:  # a blip, not the start of speech
                self._drop_candidate()
                return NOTHING
        if self.candidate_s <= 0:
            return NOTHING
        self.candidate_age_s += FRAME_S
        if now < self.rest_until:
            return NOTHING
        if (
            probability is not None
            and probability >= rules.speech_probability
            and self.candidate_s >= rules.min_speech_s - 1e-9
        ):
            self._drop_candidate()
            self.speaking = True
            self.onsets += 1
            return Heard(onset=True, speaking=True)
        if self.candidate_age_s >= rules.confirm_window_s - 1e-9:
            self._drop_candidate()
            self.rest_until = now + rules.confirm_backoff_s
            self.guarded += 1
        return NOTHING

    def _drop_candidate(self) -> None:
        self.candidate_s = self.candidate_age_s = self.unvoiced_s = 0.0


# --- the stall watchdog -------------------------------------------------------------------------------------

StallStep = Literal["nudge", "switch", "give_up"]
STALL_STEPS: tuple[StallStep, ...] = ("nudge", "switch", "give_up")


@dataclass
class StallWatchdog:
    """The caller has spoken and the agent says nothing: each `timeout_s` of that silence takes the next step
    (nudge the model, then move to a new Live connection resumed from the latest handle, then apologise and
    hang up). Any sign of the agent (audio, a transcript of its speech, a tool call) stands it down; so does
    the caller speaking again (their new turn is waited on afresh)."""

    timeout_s: float = 5.0
    due: float | None = None  # when the next step is due (None: nothing is waited for)
    step: int = 0  # steps taken since the caller's last turn
    stalls: int = 0  # caller turns the agent left unanswered past the timeout
    recoveries: int = 0  # of which the agent answered after a step

    def caller_sound(self, at: float) -> None:
        """The caller made a sound at `at`: an answer is due within the timeout of their last one."""
        self.due = at + self.timeout_s
        self.step = 0

    def agent_answered(self) -> None:
        if self.step:
            self.recoveries += 1
        self.due, self.step = None, 0

    def wait(self, now: float, busy: bool) -> float | None:
        """Seconds until the next step is due (None: no limit). A tool running or a line action waiting
        (`busy`) holds it: the model is waiting for the answer, not stalled."""
        if self.due is None or busy:
            return None
        return max(0.0, self.due - now)

    def take_step(self, now: float, busy: bool) -> StallStep | None:
        """The wait ran out: the step to take now, if one is really due."""
        if self.due is None or busy or now < self.due - 1e-6:
            return None
        if self.step == 0:
            self.stalls += 1
        step = STALL_STEPS[min(self.step, len(STALL_STEPS) - 1)]
        self.step += 1
        self.due = now + self.timeout_s
        return step
