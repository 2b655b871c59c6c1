"""Server-wide, in-memory store of session resumption handles and of which sessions are connected."""

from __future__ import annotations

import asyncio
import copy
import secrets
import time
from dataclasses import dataclass, field

from .agent import HistoryTurn


@dataclass(slots=True)
class Snapshot:
    """A session's history as it was when a resumption handle was issued."""

    session_id: str
    history: list[HistoryTurn]
    created: float = field(default_factory=time.monotonic)


class HandleStore:
    """Resumption handles (each a snapshot, expired after the TTL) and the sessions whose connection is still
    open."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._handles: dict[str, Snapshot] = {}
        self._live: dict[str, asyncio.Event] = {}  # session id -> set when its connection has closed

    def issue(self, session_id: str, history: list[HistoryTurn]) -> str:
        """A new opaque handle for the session as it is now (later turns do not change it)."""
        self._purge()
        handle = secrets.token_urlsafe(24)
        self._handles[handle] = Snapshot(session_id, copy.deepcopy(history))
        return handle

    def newest(self) -> Snapshot | None:
        """The most recently issued snapshot (diagnostics and tests: what a resumed session would hold)."""
        return max(self._handles.values(), key=lambda s: s.created, default=None)

    def resolve(self, handle: str) -> Snapshot | None:
        self._purge()
        return self._handles.get(handle)

    def _purge(self) -> None:
        now = time.monotonic()
        for handle in [h for h, s in self._handles.items() if now - s.created > self._ttl]:
            del self._handles[handle]

    def connected(self, session_id: str) -> None:
        self._live[session_id] = asyncio.Event()

    def disconnected(self, session_id: str) -> None:
        event = self._live.pop(session_id, None)
        if event is not None:
            event.set()

    async def wait_closed(self, session_id: str, grace_s: float) -> bool:
        """True when no connection holds the session (any more) within ``grace_s`` seconds."""
        event = self._live.get(session_id)
        if event is None:
            return True
        try:
            await asyncio.wait_for(event.wait(), grace_s)
        except TimeoutError:
            return False
        return True
