"""Ring-time pre-warm: open and set up the call's Live session while the phone is still ringing.

The voice webhook starts opening the session (keyed by CallSid) as it answers; when the media stream's
`start` arrives, its Call takes the session instead of paying a connect and setup round trip before the
greeting. A session nobody takes within the deadline (the caller hung up while it rang, the stream never
came) is closed. A session that failed to open is simply not there: the Call opens one the usual way and
reports any error as it always does.

A CallSid is pre-warmed once: asked again for a call it is already opening (or holding) a session for, it
keeps that one. And pre-warm has a global budget (`LIVE_PREWARM_MAX_SESSIONS`): the sessions it holds, plus
those it is still closing or cancelling, never exceed it; past it a call rings without a pre-warmed session
(and opens its own when its stream starts). Each pre-warmed session is billed, so neither replayed webhooks
nor a burst of calls can make it open sessions without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.admission import RefusalLog
from gateway.live import protocol as lp
from gateway.live.session import LiveConfigRejected, LiveError, LiveSession
from gateway.metrics import METRICS

log = structlog.get_logger("gateway.prewarm")

Opener = Callable[[lp.LiveConfig, str | None], Coroutine[Any, Any, LiveSession]]
DEFAULT_MAX_SESSIONS = 100  # webhooks are signed, but a flood of them must not open unbounded Live sessions


@dataclass
class _Pending:
    config: lp.LiveConfig
    task: asyncio.Task[LiveSession]
    expiry: asyncio.TimerHandle


class Prewarmer:
    """Live sessions opened while the phone rings, keyed by CallSid: the call's stream takes its session, and
    one nobody takes within `deadline_s` is closed."""

    def __init__(
        self,
        open_live: Opener,
        deadline_s: float,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        refusals: RefusalLog | None = None,
    ) -> None:
        self._open_live = open_live
        self.deadline_s = deadline_s
        self.max_sessions = max_sessions
        self._refusals = refusals or RefusalLog()
        self._pending: dict[str, _Pending] = {}
        self.opened = 0
        self.taken = 0
        self.discarded = 0
        self.skipped = 0
        # Sessions let go of but not gone yet: an open being cancelled, a close under way. They still hold a
        # connection to Live (and maybe a session): they count in the budget.
        self._leaving: set[asyncio.Task[Any]] = set()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def sessions(self) -> int:
        """Live connections pre-warm holds: waiting for their stream, or being let go of."""
        return len(self._pending) + len(self._leaving) + len(self._closing)

    @property
    def enabled(self) -> bool:
        return self.deadline_s > 0

    def start(self, call_sid: str, config: lp.LiveConfig) -> None:
        """Begin opening a session for this call (the webhook does not wait for it)."""
        if not self.enabled or not call_sid or call_sid in self._pending:
            return  # off, or this call's session is on its way already: one pre-warm per call
        if self.sessions >= self.max_sessions:
            self.skipped += 1
            self._refusals.refused(
                "prewarm", "budget", "prewarm_skipped", call_sid=call_sid, sessions=self.sessions
            )
            return
        task = asyncio.create_task(self._open_live(config, None), name=f"prewarm-{call_sid}")
        expiry = asyncio.get_running_loop().call_later(self.deadline_s, self.discard, call_sid, "no_stream")
        self._pending[call_sid] = _Pending(config, task, expiry)
        self.opened += 1

    async def take(self, call_sid: str, config: lp.LiveConfig) -> LiveSession | None:
        """The session opened for this call, waiting for its setup to finish if need be; None if there is
        none, it was opened for another agent, or it failed (the caller then opens one as usual). Raises
        `LiveConfigRejected` when the configuration was refused."""
        pending = self._pending.pop(call_sid, None)
        if pending is None:
            return None
        pending.expiry.cancel()
        if pending.config != config:
            self._close_when_open(pending.task, call_sid, "agent_changed")
            return None
        try:
            session = await pending.task
        except LiveConfigRejected:
            raise  # the same setup would be refused again: the call reports it, with no second try
        except LiveError as exc:
            log.warning("prewarm_failed", call_sid=call_sid, error=str(exc), code=exc.code)
            return None
        self.taken += 1
        METRICS.prewarm.labels(result="taken").inc()
        log.info("prewarm_taken", call_sid=call_sid)
        return session

    def discard(self, call_sid: str, reason: str) -> None:
        pending = self._pending.pop(call_sid, None)
        if pending is not None:
            pending.expiry.cancel()
            self._close_when_open(pending.task, call_sid, reason)

    def _close_when_open(self, task: asyncio.Task[LiveSession], call_sid: str, reason: str) -> None:
        self.discarded += 1
        METRICS.prewarm.labels(result=reason).inc()  # reasons are this module's and the app's few words
        log.info("prewarm_discarded", call_sid=call_sid, reason=reason)
        if not task.done():
            task.cancel()  # LiveSession.open closes its socket when cancelled mid-setup
            self._leaving.add(task)
        task.add_done_callback(self._close_session)

    def _close_session(self, task: asyncio.Task[LiveSession]) -> None:
        self._leaving.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        closing = asyncio.get_running_loop().create_task(task.result().close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Shut down: close every session still waiting for its stream."""
        tasks = [p.task for p in self._pending.values()]
        for call_sid in list(self._pending):
            self.discard(call_sid, "shutdown")
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await asyncio.sleep(0)  # let the done callbacks start their closes
        await asyncio.gather(*self._closing, return_exceptions=True)
