"""Playout marks on a carrier whose answers are documented less fully than Twilio's (Vonage, Plivo): pure.

The `Line` seam promises that every mark comes back `Played` exactly once: when the audio before it has
played, or when a `clear` flushed it (as Twilio echoes flushed marks). Vonage's `notify` and Plivo's
`checkpoint` are answered once their audio has played, but neither carrier says whether it answers the ones a
clear flushed. `PendingMarks` makes the promise hold either way: a clear releases every pending mark at once,
an answer releases its mark and any older one still pending (playout is in order), and a late answer for a
mark already released is ignored.

And should a carrier never answer (a notify its WebSocket does not know), the call must not wait for ever
for a goodbye to be heard: the audio queued is counted as it is sent, so the moment it will have played is
known (a carrier plays in real time from when audio reaches it), and a mark still unanswered `GRACE_S`
after that is released as played (`overdue`). The clock is passed in.
"""

from __future__ import annotations

from collections import deque

GRACE_S = 1.0  # past the audio's expected end: network, the carrier's jitter buffer, its answer's way back


class PendingMarks:
    """Our marks in the carrier's playout buffer, oldest first, each with when it is overdue."""

    __slots__ = ("_pending", "_playout_end")

    def __init__(self) -> None:
        self._pending: deque[tuple[str, float]] = deque()
        self._playout_end = 0.0  # when the audio queued so far will have played

    def queued(self, seconds: float, now: float) -> None:
        """`seconds` of audio sent now: it plays after what is queued already."""
        self._playout_end = max(self._playout_end, now) + seconds

    def sent(self, name: str, now: float) -> None:
        self._pending.append((name, max(self._playout_end, now) + GRACE_S))

    def played(self, name: str) -> list[str]:
        """The marks an answer for `name` releases: every pending one up to it; none for a name not
        pending (one a clear already released, or not ours)."""
        if all(pending != name for pending, _ in self._pending):
            return []
        released = []
        while self._pending:
            released.append(self._pending.popleft()[0])
            if released[-1] == name:
                break
        return released

    def cleared(self, now: float) -> list[str]:
        """The marks a clear flushed: all of them; nothing is queued any more."""
        released = [name for name, _ in self._pending]
        self._pending.clear()
        self._playout_end = now
        return released

    def next_due(self) -> float | None:
        """When the oldest pending mark is overdue (None: no mark pending)."""
        return self._pending[0][1] if self._pending else None

    def overdue(self, now: float) -> list[str]:
        """The marks still unanswered `GRACE_S` after their audio's expected end: released as played."""
        released = []
        while self._pending and self._pending[0][1] <= now:
            released.append(self._pending.popleft()[0])
        return released

    def __len__(self) -> int:
        return len(self._pending)
