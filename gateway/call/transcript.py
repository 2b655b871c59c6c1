"""Transcription fragments assembled into one line per utterance, each logged once."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("caller", "agent")
CUT = "[cut]"  # ends an agent line the caller talked over: nothing after it was heard


@dataclass
class _Held:
    """An agent line Live has finished whose audio the line is still playing out."""

    fragments: list[str]
    at: list[float]  # per fragment: the turn's audio sent by then (s)
    cut: bool
    started_at: float  # when the turn's first audio went to the line
    sent_s: float  # seconds of the turn's audio sent to the line


@dataclass
class Transcript:
    """Live transcribes in fragments; people read one line per utterance.

    When the call switches Live connections, the caller's audio since the last resumable handle is replayed
    on the new one and transcribed there again: those second transcripts are not news and are not logged.
    """

    fragments: dict[str, list[str]] = field(default_factory=lambda: {role: [] for role in ROLES})
    since_handle: int = 0  # caller utterances since the handle: replayed if the connection changes
    replayed: int = 0  # utterances the current connection is hearing again: skipped when they come back
    agent_at: list[float] = field(default_factory=list)  # per agent fragment: turn audio sent by then (s)
    agent_cut: bool = False  # the agent's line was cut off by the caller: marked so in the record
    # Agent lines Live has finished, oldest first, until the caller has heard them (or talked over them).
    held: list[_Held] = field(default_factory=list)
    closing: bool = False  # Live ended the turn's generation, not yet the turn: late words join its line
    ready: list[tuple[str, str]] = field(default_factory=list)  # lines released, not yet flushed

    @property
    def caller_speaking(self) -> bool:
        """The caller's current utterance has begun and is not over."""
        return bool(self.fragments["caller"])

    def heard(self, role: str, text: str, at_s: float = 0.0) -> None:
        """A fragment of `role`'s speech; an agent's is stamped with how much of its turn's audio had gone to
        the line when it came (`at_s`), to cut the line where the caller cut the audio off."""
        self.fragments[role].append(text)
        if role == "agent":
            self.agent_at.append(at_s)

    def cut(self, heard_s: float) -> None:
        """The caller talked over the agent after hearing `heard_s` of its turn: what came after that was
        never heard, so it is not kept as said; the line is marked as cut."""
        fragments = self.fragments["agent"]
        if not fragments and self.held:
            return  # its words are the held line's: `cut_held` cuts them
        _keep_heard(fragments, self.agent_at, heard_s)
        self.agent_cut = True

    def hold(self, started_at: float, sent_s: float) -> None:
        """Live has finished generating the agent's turn, whose audio (`sent_s` of it, heard from
        `started_at`) the line is still playing out: its line waits until it has been heard (`release`) or
        talked over (`cut_held`); words of it that come until Live ends the turn (`turn_ended`) join it."""
        fragments, self.fragments["agent"] = self.fragments["agent"], []
        at, self.agent_at = self.agent_at, []
        cut, self.agent_cut = self.agent_cut, False
        self.closing = True
        if fragments:
            self.held.append(_Held(fragments, at, cut, started_at, sent_s))

    @property
    def trailing(self) -> bool:
        """Live has ended the held turn's generation but not the turn: an agent's words now end its line (its
        transcript trails its audio)."""
        return self.closing and bool(self.held)

    def trail(self, text: str) -> None:
        """Words that end the last held line (`trailing`): stamped at its end, so a cut drops them unheard."""
        last = self.held[-1]
        last.fragments.append(text)
        last.at.append(last.sent_s)

    def turn_ended(self) -> None:
        """Live ended the turn (or another began): its words are all in."""
        self.closing = False

    @property
    def heard_until(self) -> float | None:
        """When the held lines' audio will have played out (a new turn is heard after it), if any is held."""
        return max((h.started_at + h.sent_s for h in self.held), default=None)

    def cut_held(self, now: float) -> None:
        """The line was cleared at `now`: what the caller had not heard of the held lines was never said."""
        for held in self.held:
            heard_s = max(0.0, now - held.started_at)
            if heard_s < held.sent_s:
                _keep_heard(held.fragments, held.at, heard_s)
                held.cut = True
        self.release()

    def release(self, now: float | None = None) -> None:
        """The held lines are over (heard, cut, or the call ends): they go out with the next `flush`. With
        `now`, only those whose audio has all played by then (a turn queued behind them is not news)."""
        while self.held and (now is None or now >= self.held[0].started_at + self.held[0].sent_s):
            held = self.held.pop(0)
            if text := _agent_line(held.fragments, held.cut):
                self.ready.append(("agent", text))

    def flush_released(self) -> list[tuple[str, str]]:
        """Only the lines released since the last flush (the line being said now stays)."""
        lines, self.ready = self.ready, []
        return lines

    def flush(self, *roles: str) -> list[tuple[str, str]]:
        """The finished lines (role, text) of `roles` (default both) to log, replays left out; lines
        released since the last flush come first, whatever their role."""
        lines, self.ready = self.ready, []
        for role in roles or ROLES:
            text = "".join(self.fragments[role]).strip()
            self.fragments[role].clear()
            if role == "agent":
                text = _agent_line([text], self.agent_cut)
                self.agent_at.clear()
                self.agent_cut = False
            if not text:
                continue
            if role == "caller":
                self.since_handle += 1  # replayed or not, its audio is still after the handle
                if self.replayed:
                    self.replayed -= 1
                    continue
            lines.append((role, text))
        return lines

    def handle_updated(self) -> None:
        """A resumable handle covers everything said so far: nothing before it will be replayed again.
        (Transcripts of audio already replayed may still be on their way: they are still skipped.)"""
        self.since_handle = 0

    def replaying(self) -> None:
        """A new connection hears the audio since the handle again; the caller's unfinished words too."""
        self.fragments["caller"].clear()
        self.replayed = self.since_handle


def _keep_heard(fragments: list[str], at: list[float], heard_s: float) -> None:
    """Drop the fragments stamped at or after `heard_s` of their turn's audio: the caller never heard them
    (none at all of a turn not heard)."""
    kept = sum(1 for stamp in at if stamp < heard_s)
    del fragments[kept:], at[kept:]


def _agent_line(fragments: list[str], cut: bool) -> str:
    """An agent's line as recorded: its words, `[cut]` after them if the caller talked over it; nothing if
    none of its words was heard."""
    text = "".join(fragments).strip()
    return f"{text} {CUT}" if text and cut else text
