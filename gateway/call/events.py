"""What happened in a call, and when, for the console's timeline and picture: `CallEvents`, fed by the `Call`.

Times are seconds since the call (this instance's part of it) started, on the caller's timeline: the agent's
audio is placed where the caller heard it, not where Live produced it (the line buffers a turn faster than
real time): a turn starts when its first audio reaches the line, or when the turn before it has played out if
that is later, and ends when its mark comes back, or where a `clear` cut it, or (neither came) when its audio
ran out.

Kinds, one word each:
- `caller_start`, `caller_end`: the caller's speech (the gateway's detector, or the line's level without
  one);
- `agent_start`, `agent_end`: the agent's audio as heard; `response`: a turn that answered the caller, with
  its latency (`latency_ms`: from the end of the caller's speech to the start of the answer);
- `barge_in` (`source`: local or server), `tool_call` (`name`), `hang_up`, `transfer` (`target`), `dtmf`
  (`digit`), `switch` (`reason`, `took_ms`), `stall` (`step`), `operator_hang_up` (the console).

Pure: no clock, no I/O; times are passed in (monotonic seconds, like the rest of the call's state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_EVENTS = 20_000  # a four-hour call of short turns stays well under; past it events are counted, not kept
# Silence this long ends the caller's speech (frames are 20 ms; the detector's own hangover is shorter).
CALLER_END_GAP_S = 0.5


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One thing that happened: seconds since the call's start, what, and its details."""

    t: float
    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "kind": self.kind, **self.data}


@dataclass
class CallEvents:
    """The events of one call as they happen (see the module's doc)."""

    origin: float  # the call's start (monotonic)
    events: list[CallEvent] = field(default_factory=list)
    dropped: int = 0
    _caller_since: float | None = None  # the caller's speech in progress began then
    _caller_last: float = 0.0  # ... and was last heard then
    _caller_ended: float | None = None  # the caller's last speech ended then, not answered yet
    _agent_start: float | None = None  # the agent's turn being heard began then (as heard)
    _agent_sent_s: float = 0.0  # seconds of that turn's audio sent to the line
    _agent_turn: int = 0
    _agent_heard_until: float = 0.0  # the last turn heard ended then (as heard)

    def _add(self, now: float, kind: str, **data: Any) -> None:
        if len(self.events) >= MAX_EVENTS:
            self.dropped += 1
            return
        self.events.append(CallEvent(max(0.0, now - self.origin), kind, data))

    # --- the caller ---

    def caller_frame(self, now: float, speaking: bool, voiced: bool, frame_s: float = 0.02) -> None:
        """One frame of the caller's line: is their speech in progress (the detector's verdict, which holds on
        through a short pause), and is this frame itself voiced (loud)? The speech ends where its last voiced
        frame ended, not where the detector's hangover let go, so a response's latency is not understated.
        (Every frame: cheap when nothing changes.)"""
        if self._caller_since is None:
            if speaking:
                self._caller_since, self._caller_last = now, now + frame_s
                self._add(now, "caller_start")
            return
        if voiced:
            self._caller_last = now + frame_s
        elif not speaking and now - self._caller_last >= CALLER_END_GAP_S:
            self._end_caller()

    def _end_caller(self) -> None:
        assert self._caller_since is not None
        self._add(self._caller_last, "caller_end")
        self._caller_since = None
        self._caller_ended = self._caller_last

    # --- the agent, as heard ---

    def agent_audio(self, now: float, seconds: float, turn: int, first: bool) -> None:
        """`seconds` of the agent's audio went to the line; `first`: the first of turn `turn`."""
        if not first:
            self._agent_sent_s += seconds
            return
        if self._agent_start is not None:  # the turn before is still playing out: this one follows it
            self._end_agent(self._agent_start + self._agent_sent_s)
        start = max(now, self._agent_heard_until)
        if self._caller_since is not None and self._caller_last <= start:
            self._end_caller()  # the answer began: the caller's turn is over
        self._agent_start, self._agent_sent_s, self._agent_turn = start, seconds, turn
        self._add(start, "agent_start", turn=turn)
        if self._caller_ended is not None and self._caller_ended <= start:
            self._add(start, "response", turn=turn, latency_ms=round((start - self._caller_ended) * 1000))
        self._caller_ended = None

    def agent_played(self, mark: str, now: float) -> None:
        """A mark came back, heard (not flushed by a clear): the turn it followed has played out."""
        if self._agent_start is not None and mark == f"turn-{self._agent_turn}":  # Playout's turn marks
            self._end_agent(now)

    def agent_cut(self, now: float) -> None:
        """The line was cleared: the turn being heard stops here (or where its audio ran out, if sooner)."""
        if self._agent_start is not None:
            self._end_agent(min(now, self._agent_start + self._agent_sent_s))

    def _end_agent(self, at: float) -> None:
        assert self._agent_start is not None
        at = max(at, self._agent_start)
        self._add(at, "agent_end", turn=self._agent_turn)
        self._agent_heard_until = at
        self._agent_start = None

    # --- what else happened ---

    def barge_in(self, now: float, source: str) -> None:
        self.agent_cut(now)
        self._add(now, "barge_in", source=source)

    def tool_call(self, now: float, name: str) -> None:
        self._add(now, "tool_call", name=name)

    def line_action(self, now: float, kind: str, target: str = "") -> None:
        """The agent hung up (`hang_up`) or moved the call (`transfer`); the operator hung up from the console
        (`operator_hang_up`)."""
        self._add(now, kind, **({"target": target} if target else {}))

    def dtmf(self, now: float, digit: str) -> None:
        self._add(now, "dtmf", digit=digit)

    def switch(self, began: float, reason: str, took_s: float) -> None:
        self._add(began, "switch", reason=reason, took_ms=round(took_s * 1000))

    def stall(self, now: float, step: str) -> None:
        self._add(now, "stall", step=step)

    def finish(self, now: float) -> list[CallEvent]:
        """The call has ended: close what is still open, and the events in time order."""
        if self._caller_since is not None:
            self._end_caller()
        if self._agent_start is not None:
            self._end_agent(min(now, self._agent_start + self._agent_sent_s))
        return sorted(self.events, key=lambda e: e.t)  # stable: same-time events keep their order
