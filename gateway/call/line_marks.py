"""Playout marks on a carrier whose answers to a clear are not documented (Vonage, Plivo): pure.

The `Line` seam promises that every mark comes back `Played` exactly once: when the audio before it has
played, or when a `clear` flushed it (as Twilio echoes flushed marks). Vonage's `notify` and Plivo's
`checkpoint` are answered once their audio has played, but neither carrier says whether it answers the ones
a clear flushed. `PendingMarks` makes the promise hold either way: a clear's acknowledgement releases every
pending mark, an answer releases its mark and any older one still pending (playout is in order), and a late
answer for a mark already released is ignored.
"""

from __future__ import annotations

from collections import deque


class PendingMarks:
    """Our marks in the carrier's playout buffer, oldest first."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: deque[str] = deque()

    def sent(self, name: str) -> None:
        self._pending.append(name)

    def played(self, name: str) -> list[str]:
        """The marks an answer for `name` releases: every pending one up to it; none for a name not
        pending (one a clear already released, or not ours)."""
        if name not in self._pending:
            return []
        released = []
        while self._pending:
            released.append(self._pending.popleft())
            if released[-1] == name:
                break
        return released

    def cleared(self) -> list[str]:
        """The marks a clear flushed: all of them."""
        released = list(self._pending)
        self._pending.clear()
        return released

    def __len__(self) -> int:
        return len(self._pending)
