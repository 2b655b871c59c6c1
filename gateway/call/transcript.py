"""Transcription fragments assembled into one line per utterance, each logged once."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("caller", "agent")


@dataclass
class Transcript:
    """Live transcribes in fragments; people read one line per utterance.

    When the call switches Live connections, the caller's audio since the last resumable handle is replayed
    on the new one and transcribed there again: those second transcripts are not news and are not logged.
    """

    fragments: dict[str, list[str]] = field(default_factory=lambda: {role: [] for role in ROLES})
    since_handle: int = 0  # caller utterances since the handle: replayed if the connection changes
    replayed: int = 0  # utterances the current connection is hearing again: skipped when they come back

    @property
    def caller_speaking(self) -> bool:
        """The caller's current utterance has begun and is not over."""
        return bool(self.fragments["caller"])

    def heard(self, role: str, text: str) -> None:
        self.fragments[role].append(text)

    def flush(self, *roles: str) -> list[tuple[str, str]]:
        """The finished lines (role, text) of `roles` (default both) to log, replays left out."""
        lines = []
        for role in roles or ROLES:
            text = "".join(self.fragments[role]).strip()
            self.fragments[role].clear()
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
