"""The agent's side of the line as the caller hears it: turns, interruptions and marks in flight."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Playout:
    """What the agent is saying and what of it the line is still playing out.

    Live streams a turn faster than real time and the line buffers it, so "Live has finished" and "the caller
    has heard it" are different moments: a mark after each turn's audio, echoed by the line once played,
    tells them apart. A `clear` flushes the line's buffer, and the line echoes the flushed marks too: those
    echoes prove nothing was heard.
    """

    turn: int = 0  # agent turns whose audio reached the line
    generating: bool = False  # Live is producing a turn (audio or its transcript came; no turnComplete yet)
    sending: bool = False  # audio of the current turn has gone to the line
    discarding: bool = False  # the turn was interrupted: its late audio is dropped until its turnComplete
    marks: dict[str, float] = field(default_factory=dict)  # name -> when sent, for marks not yet echoed
    sent_s: float = 0.0  # seconds of the current turn's audio sent to the line
    started_at: float | None = None  # when the current turn's first audio went to the line

    @property
    def playing(self) -> bool:
        """Agent audio may be playing out on the caller's line: a turn is being sent, or a mark sent after
        audio has not come back yet (the line is still playing what preceded it)."""
        return self.sending or bool(self.marks)

    def heard_s(self, now: float) -> float:
        """How much of the current turn's audio the caller has heard by `now` (the line plays it out in
        real time from its first chunk)."""
        if self.started_at is None:
            return 0.0
        return max(0.0, min(self.sent_s, now - self.started_at))

    @property
    def in_turn(self) -> bool:
        """A turn is being generated or sent: a mark now would come back before its end was heard."""
        return self.generating or self.sending

    def agent_audio(self) -> bool:
        """Live sent audio. False when it belongs to an interrupted turn and must be dropped."""
        if self.discarding:
            return False
        self.generating = True
        return True

    def agent_transcript(self) -> None:
        """Live sent a transcript of the agent's speech: a turn is under way even before its audio."""
        self.generating = True

    def audio_sent(self, seconds: float = 0.0, now: float = 0.0) -> bool:
        """`seconds` of the current turn's audio went to the line at `now`. True for the turn's first: a new
        turn is heard."""
        if self.sending:
            self.sent_s += seconds
            return False
        self.sending = True
        self.turn += 1
        self.sent_s, self.started_at = seconds, now
        return True

    def interrupted(self) -> None:
        """Live says the caller talked over the agent: the line was cleared, the rest of the turn dropped."""
        self.cleared()
        self.discarding = True
        self.sending = False

    def cleared(self) -> None:
        """The line's buffer was emptied: the marks in flight will echo, but they prove nothing."""
        self.marks.clear()

    def talked_over(self) -> bool:
        """The caller is speaking. True when a reply Live has finished is still playing out: Live sends no
        `interrupted` for it, so the line must be cleared here."""
        return bool(self.marks) and not self.generating

    def turn_complete(self, now: float) -> str | None:
        """Live ended the turn (or the connection it was on). The name of the mark to send after the turn's
        audio and its flushed tail; None if none of it reached the line. The turn is still in progress
        until `turn_over`: its tail and mark are yet to be sent."""
        if not self.sending:
            return None
        name = f"turn-{self.turn}"
        self.marks[name] = now
        return name

    def turn_over(self) -> None:
        """The turn's tail and mark are on the line: the next audio is a new turn."""
        self.sending = self.discarding = self.generating = False

    def mark_sent(self, name: str, now: float) -> None:
        """A mark of our own (a line action's, say) went to the line."""
        self.marks[name] = now

    def played(self, name: str, now: float) -> float | None:
        """A mark came back: how long what preceded it took to play out; None for a mark a `clear` flushed
        (or one we never sent), which proves nothing was heard."""
        sent = self.marks.pop(name, None)
        return None if sent is None else now - sent
