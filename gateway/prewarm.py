"""Ring-time pre-warm: open and set up the call's Live session while the phone is still ringing.

The voice webhook starts opening the session (keyed by CallSid) as it answers; when the media stream's
`start` arrives, its Call takes the session instead of paying a connect and setup round trip before the
greeting. A session nobody takes within the deadline (the caller hung up while it rang, the stream never
came) is closed. A session that failed to open is simply not there: the Call opens one the usual way and
reports any error as it always does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.live import protocol as lp
from gateway.live.session import LiveConfigRejected, LiveError, LiveSession

log = structlog.get_logger("gateway.prewarm")

Opener = Callable[[lp.LiveConfig, str | None], Coroutine[Any, Any, LiveSession]]
MAX_PENDING = 100  # webhooks are signed, but a flood of them must not open unbounded Live sessions


@dataclass
class _Pending:
    config: lp.LiveConfig
    task: asyncio.Task[LiveSession]
    expiry: asyncio.TimerHandle


class Prewarmer:
    """Live sessions opened while the phone rings, keyed by CallSid: the call's stream takes its session, and
    one nobody takes within `deadline_s` is closed."""

    def __init__(self, open_live: Opener, deadline_s: float) -> None:
        self._open_live = open_live
        self.deadline_s = deadline_s
        self._pending: dict[str, _Pending] = {}
        self.opened = 0
        self.taken = 0
        self.discarded = 0
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.deadline_s > 0

    def start(self, call_sid: str, config: lp.LiveConfig) -> None:
        """Begin opening a session for this call (the webhook does not wait for it)."""
        if not self.enabled or not call_sid:
            return
        if len(self._pending) >= MAX_PENDING:
            log.warning(
                "prewarm_skipped", call_sid=call_sid, reason="too_many_pending", pending=len(self._pending)
            )
            return
        self.discard(call_sid, "webhook_repeated")  # Twilio retried the webhook: one session per call
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
        log.info("prewarm_taken", call_sid=call_sid)
        return session

    def discard(self, call_sid: str, reason: str) -> None:
        pending = self._pending.pop(call_sid, None)
        if pending is not None:
            pending.expiry.cancel()
            self._close_when_open(pending.task, call_sid, reason)

    def _close_when_open(self, task: asyncio.Task[LiveSession], call_sid: str, reason: str) -> None:
        self.discarded += 1
        log.info("prewarm_discarded", call_sid=call_sid, reason=reason)
        if not task.done():
            task.cancel()  # LiveSession.open closes its socket when cancelled mid-setup
        task.add_done_callback(self._close_session)

    def _close_session(self, task: asyncio.Task[LiveSession]) -> None:
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
