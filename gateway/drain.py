"""Graceful drain: a deploy or a scale-down drops no call.

On SIGTERM (Heroku allows 30 s before SIGKILL; Kubernetes what the manifest's grace period says):

1. Stop taking calls: `/healthz` answers 503 (load balancers take the instance out) and the voice webhook
   answers TwiML that sends the caller back through `PUBLIC_URL` after a short pause, to an instance that is
   not draining.
2. Let calls in progress go on until `DRAIN_GRACE_SECONDS` has passed; most end by themselves.
3. Move each call still running: store its latest Live resumption handle under its CallSid, then redirect
   the call through Twilio's REST API to the voice webhook. In the last part of the grace period a call is
   moved as soon as it is between turns (a handle that covers everything said so far); at the end of the
   grace period, whatever its state. Twilio ends this instance's media stream and asks
   the webhook again with the same CallSid; the instance that answers resumes the Live session from the
   stored handle, so the conversation goes on where it was.
4. Exit once the moved calls' streams have closed (bounded).

uvicorn's own SIGTERM handling closes every WebSocket at once (code 1012), which would cut calls off, so
`DrainingServer` takes the signal and lets uvicorn shut down only once the drain is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Collection, Coroutine
from types import FrameType
from typing import Any, Protocol

import structlog
import uvicorn
from twilio.twiml.voice_response import VoiceResponse

from gateway.config import Settings
from gateway.metrics import METRICS
from gateway.twilio.rest import CallControl

log = structlog.get_logger("gateway.drain")

VOICE_PATH = "/twilio/voice"
FALLBACK_PAUSE_S = 1  # between redirects of a new call while instances drain: no tight webhook loop
MOVED_CALLS_WAIT_S = 5.0  # after the redirects, for Twilio to close the moved calls' streams
QUIET_WINDOW_S = 5.0  # at most this last part of the grace period is spent waiting for a moment between turns
QUIET_POLL_S = 0.05
SAVE_HANDLE_TIMEOUT_S = 2.0
# The redirect must fit in the platform's shutdown budget whatever Twilio's API is doing.
MOVE_TIMEOUT_S = 3.0


def redirect_twiml(public_base: str, *, pause_s: int = 0) -> str:
    """TwiML that sends a call to the voice webhook again, through the load balancer."""
    response = VoiceResponse()
    if pause_s:
        response.pause(length=pause_s)
    response.redirect(public_base.rstrip("/") + VOICE_PATH, method="POST")
    return str(response)


class Movable(Protocol):
    """What the drain needs of a call in progress (a `gateway.call.Call`)."""

    @property
    def call_sid(self) -> str: ...  # "" until the line has started
    @property
    def between_turns(self) -> bool: ...
    @property
    def resumption_handle(self) -> str: ...


SaveHandle = Callable[[str, str], Awaitable[None]]  # (call_sid, handle): stored for the next instance


class Drain:
    """The drain of one instance; `run()` once, when the process is told to stop.

    It is given the settings, the live set of calls in progress and where to store a moved call's handle.
    """

    def __init__(self, settings: Settings, calls: Collection[Movable], save_handle: SaveHandle) -> None:
        self.settings = settings
        self.calls = calls
        self.save_handle = save_handle
        self.active = False
        self.moved: set[str] = set()  # CallSids redirected to another instance
        self._call_ended = asyncio.Event()

    def call_ended(self) -> None:
        self._call_ended.set()

    async def _wait_until(self, done: Callable[[], bool], timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not done():
                    self._call_ended.clear()
                    await self._call_ended.wait()

    def fallback_twiml(self, public_base: str) -> str:
        """What the voice webhook answers while draining: the same call, back through the load balancer."""
        return redirect_twiml(public_base, pause_s=FALLBACK_PAUSE_S)

    async def run(self) -> None:
        calls = self.calls
        grace_s = self.settings.drain_grace_s
        self.active = True
        METRICS.draining.set(1)
        log.info("drain_started", active_calls=len(calls), grace_s=grace_s)
        window_s = min(QUIET_WINDOW_S, grace_s / 4)
        await self._wait_until(lambda: not calls, grace_s - window_s)
        remaining = [call for call in calls if call.call_sid]
        if remaining:
            await self.move_calls(remaining, window_s)
            await self._wait_until(lambda: not any(call in calls for call in remaining), MOVED_CALLS_WAIT_S)
        log.info("drain_finished", moved=len(self.moved), still_running=len(calls))

    async def move_calls(self, calls: list[Movable], window_s: float = 0.0) -> None:
        """Move each call at its next moment between turns, or after `window_s` whatever its state."""
        settings = self.settings
        if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.public_url):
            log.warning(
                "calls_not_moved",
                count=len(calls),
                note="moving calls needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and PUBLIC_URL",
            )
            return
        control = CallControl(
            settings.twilio_account_sid, settings.twilio_auth_token, base_url=settings.twilio_api_base_url
        )
        try:
            public_url = settings.public_url
            await asyncio.gather(*(self._move(control, call, public_url, window_s) for call in calls))
        finally:
            await control.close()

    async def _move(self, control: CallControl, call: Movable, public_url: str, window_s: float) -> None:
        sid = call.call_sid
        for _ in range(int(window_s / QUIET_POLL_S)):
            if call.between_turns or call not in self.calls:
                break
            await asyncio.sleep(QUIET_POLL_S)
        if call not in self.calls:
            return  # it ended by itself meanwhile
        between_turns = call.between_turns
        try:
            async with asyncio.timeout(SAVE_HANDLE_TIMEOUT_S):
                await self.save_handle(sid, call.resumption_handle)
        except Exception as exc:  # the call still moves; it starts a fresh Live session over there
            log.warning("resumption_handle_not_saved", call_sid=sid, error=repr(exc))
        try:
            async with asyncio.timeout(MOVE_TIMEOUT_S):
                moved = await control.update(sid, redirect_twiml(public_url))
        except Exception as exc:
            METRICS.calls_moved.labels(result="failed").inc()
            log.error("call_not_moved", call_sid=sid, error=repr(exc))
            return
        METRICS.calls_moved.labels(result="moved" if moved else "already_ended").inc()
        if moved:
            self.moved.add(sid)
        log.info(
            "call_moved",
            call_sid=sid,
            moved=moved,
            resumable=bool(call.resumption_handle),
            between_turns=between_turns,
        )


class DrainingServer(uvicorn.Server):
    """uvicorn, except that SIGTERM or Ctrl-C first drains the gateway; a second Ctrl-C stops at once."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Coroutine[Any, Any, None]]) -> None:
        super().__init__(config)
        self._drain = drain
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of whatever the loop was doing: only set flags here,
        # the drain task is started from on_tick, in the loop. The signal is not re-raised after the
        # shutdown (uvicorn's default), so a clean drain exits with status 0.
        if not self._drain_requested:
            self._drain_requested = True
        elif sig == signal.SIGINT:
            self.should_exit = True  # impatient operator; uvicorn then closes the remaining calls

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested and self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain(), name="drain")
        if self._drain_task is not None and self._drain_task.done():
            if not self._drain_task.cancelled() and (exc := self._drain_task.exception()) is not None:
                log.error("drain_failed", exc_info=exc)
            self.should_exit = True
        return await super().on_tick(counter)
