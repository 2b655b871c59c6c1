"""Transcription fragments assembled into one line per utterance, each logged once."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("caller", "agent")
CUT = "[cut]"  # ends an agent line the caller talked over: nothing after it was heard


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
        kept = sum(1 for at in self.agent_at if at <= heard_s)
        del fragments[kept:], self.agent_at[kept:]
        self.agent_cut = True

    def flush(self, *roles: str) -> list[tuple[str, str]]:
        """The finished lines (role, text) of `roles` (default both) to log, replays left out."""
        lines = []
        for role in roles or ROLES:
            text = "".join(self.fragments[role]).strip()
            self.fragments[role].clear()
            if role == "agent":
                if self.agent_cut:
                    text = f"{text} {CUT}".strip()
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
