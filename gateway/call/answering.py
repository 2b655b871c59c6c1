"""Who answered an outbound call: a person, or a machine, and what the agent does about it.

People answer with "hello?" and expect the caller to speak next; an answering machine plays a greeting, a
beep, then records. So an outbound call's agent talks to nobody until it is known who answered:

- the callee's audio goes to Live from the start, so the model hears the "hello?" and prepares its answer;
- what the agent says (audio, its transcript, the end of its turn) is held back from the line meanwhile;
- Twilio's answering-machine detection (asynchronous, `DetectMessageEnd`) says who answered:
  - a person (or `unknown`): the held speech is played, in order, and the conversation goes on; if the
    callee said nothing and the agent had nothing to say, the agent is asked to open (its greeting);
  - a machine, once its greeting has ended (after the beep): the held speech is dropped, and so is all the
    call's own session says from then on but its token usage (it heard the greeting and the beep, and may
    still answer them: a model's VAD catches up with audio already sent, and a beep can sound like speech,
    and its late transcript of the greeting would look like the callee talking over the message). The
    agent's `machine` policy applies: `hang_up` at once, or `leave_message`: the voicemail text is said by
    a Live connection of its own that heard none of it (the `Call` opens it), the callee's audio is no
    longer sent, and the call hangs up once the message has been heard (the mark echo rule of `end_call`);
  - a fax: hang up, whatever the policy.
- a result that never comes within `wait_s` of the line's start is taken as a person: a caller left in
  silence is worse than a message cut short.

Pure: no await, no socket, no clock (times are passed in).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from gateway.live import protocol as lp

MachinePolicy = Literal["hang_up", "leave_message"]
MACHINE_POLICIES: tuple[MachinePolicy, ...] = ("hang_up", "leave_message")
Verdict = Literal["person", "machine", "fax"]
TIMED_OUT = "timeout"  # `answered_by` when no result came in time
HELD_MAX = 2000  # agent speech events held at most (some 80 s of audio in 40 ms chunks): then dropped

# Twilio's AnsweredBy values and what they mean here. `unknown`: Twilio could not tell (a quiet person,
# usually): a person, as the bias of Twilio's own detector is.
VERDICTS: dict[str, Verdict] = {
    "human": "person",
    "unknown": "person",
    "machine_start": "machine",
    "machine_end_beep": "machine",
    "machine_end_silence": "machine",
    "machine_end_other": "machine",
    "fax": "fax",
}

# What the agent says, as opposed to what else Live tells the call (tool calls, usage, handles).
_SPEECH = (lp.AgentAudio, lp.OutputTranscript, lp.TurnComplete, lp.Interrupted)


@dataclass(frozen=True)
class Decision:
    """What to do now that it is known who answered."""

    verdict: Verdict
    answered_by: str  # Twilio's AnsweredBy, or "timeout"
    hang_up: bool = False  # end the call now
    leave_message: bool = False  # ask the agent for its voicemail text now
    greet: bool = False  # ask the agent to open (a person answered and nobody has spoken yet)


@dataclass
class Answering:
    """The state of "who answered" on one outbound call."""

    policy: MachinePolicy = "hang_up"
    wait_s: float = 32.0  # no result this long after the line started: a person
    started: float = 0.0  # when the line started (the callee picked up)
    has_message: bool = True  # the agent has a voicemail text to leave
    verdict: Verdict | None = None
    answered_by: str = ""
    decided_at: float | None = None
    held: deque[lp.LiveEvent] = field(default_factory=deque)
    held_dropped: int = 0  # held events dropped past HELD_MAX
    agent_spoke: bool = False  # the agent produced speech while held
    _releasing: bool = False  # a person answered: the held speech goes out first, in order
    message: Literal["", "asked", "playing"] = ""  # the voicemail message: asked for, then on the line

    @property
    def deciding(self) -> bool:
        return self.verdict is None

    @property
    def deadline(self) -> float:
        return self.started + self.wait_s

    @property
    def wait_ms(self) -> int | None:
        """From the line's start to the decision, in ms (the AMD timing the record keeps)."""
        return None if self.decided_at is None else round((self.decided_at - self.started) * 1000)

    @property
    def sends_caller_audio(self) -> bool:
        """Whether the callee's audio goes to Live: not once a machine answered (see the module's doc)."""
        return self.verdict != "machine"

    def holds(self, event: lp.LiveEvent) -> bool:
        """Live said `event`. True: it is not for the line now (held, or dropped); False: carry it out."""
        if self.verdict in ("machine", "fax"):
            # The call's own session answers what the machine played (its words, its tool calls, a late
            # transcript that looks like the callee talking over the message): only its bill is kept.
            return not isinstance(event, lp.Usage)
        if not isinstance(event, _SPEECH):
            return False
        if self.verdict is None or self._releasing:
            if isinstance(event, lp.AgentAudio | lp.OutputTranscript):
                self.agent_spoke = True
            if len(self.held) >= HELD_MAX:
                self.held_dropped += 1
                return True
            self.held.append(event)
            return True
        return False

    def result(self, answered_by: str, now: float, *, callee_spoke: bool) -> Decision | None:
        """Twilio's AMD result came. The decision, or None if it was decided already (a late or repeated
        callback changes nothing)."""
        if self.verdict is not None:
            return None
        return self._decide(VERDICTS.get(answered_by, "person"), answered_by, now, callee_spoke)

    def timed_out(self, now: float, *, callee_spoke: bool) -> Decision | None:
        """The wait is over: a person, unless it was decided already."""
        if self.verdict is not None or now < self.deadline:
            return None
        return self._decide("person", TIMED_OUT, now, callee_spoke)

    def _decide(self, verdict: Verdict, answered_by: str, now: float, callee_spoke: bool) -> Decision:
        self.verdict, self.answered_by, self.decided_at = verdict, answered_by, now
        if verdict == "person":
            self._releasing = bool(self.held)
            return Decision(verdict, answered_by, greet=not callee_spoke and not self.agent_spoke)
        self.held.clear()
        if verdict == "machine" and self.policy == "leave_message" and self.has_message:
            self.message = "asked"
            return Decision(verdict, answered_by, leave_message=True)
        return Decision(verdict, answered_by, hang_up=True)

    def next_released(self) -> lp.LiveEvent | None:
        """A person answered: the next held event to carry out, in order; None once none is left (from then
        on nothing is held). Live's events arriving meanwhile queue behind the held ones."""
        if self.held:
            return self.held.popleft()
        self._releasing = False
        return None

    def turn_started(self) -> bool:
        """A new agent turn reached the line. True once: it is the voicemail message (nothing else reaches
        the line once a machine answered), so the hang-up is asked for now, to follow the end of this turn."""
        if self.message == "asked":
            self.message = "playing"
            return True
        return False
