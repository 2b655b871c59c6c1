"""Graceful drain: a deploy or a scale-down drops no call.

On SIGTERM (Heroku allows 30 s before SIGKILL; Kubernetes what the manifest's grace period says):

1. Stop taking calls: `/healthz` answers 503 (load balancers take the instance out) and the voice webhook
   answers TwiML that sends the caller back through `PUBLIC_URL` after a short pause, to an instance that is
   not draining.
2. Let calls in progress go on; most end by themselves.
3. Move each call still running: store its latest Live resumption handle under its CallSid, then redirect
   the call through Twilio's REST API to the voice webhook. A call is moved as soon as it is between turns
   (a handle that covers everything said so far), and after a window whatever its state. Twilio ends this
   instance's media stream and asks the webhook again with the same CallSid; the instance that answers
   resumes the Live session from the stored handle, so the conversation goes on where it was.
4. A redirect that fails (Twilio's API refusing connections, not answering, answering 5xx) is retried with
   backoff until the plan gives up; then the call ends as a call Live failed does: the caller hears the
   failure message and the line closes (outcome `not_moved`), rather than being cut off by the shutdown.
5. Exit once the calls have left (bounded).

Every step has its instant in a `DrainPlan`, planned back from the drain's end, `DRAIN_GRACE_SECONDS` +
`MOVED_CALLS_WAIT_S` after the signal (what the platform's shutdown budget counts, with uvicorn's shutdown and
the records' flush after it): the moves are given up in time for the whole failure message to be heard
before that end.

uvicorn's own SIGTERM handling closes every WebSocket at once (code 1012), which would cut calls off, so
`DrainingServer` takes the signal and lets uvicorn shut down only once the drain is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import structlog
import uvicorn
from twilio.base.exceptions import TwilioRestException
from twilio.twiml.voice_response import VoiceResponse

from gateway.config import Settings
from gateway.metrics import METRICS
from gateway.twilio.rest import CallControl

log = structlog.get_logger("gateway.drain")

VOICE_PATH = "/twilio/voice"
MOVED_QUERY = "moved"  # in the redirect of a moved call, and passed on to its stream as a <Parameter>
FALLBACK_PAUSE_S = 1  # between redirects of a new call while instances drain: no tight webhook loop
# The drain is over this long after the grace period at the latest: the moved calls' streams closed, the calls
# that could not be moved apologised to. The deploy budget counts it (tests/test_deploy.py).
MOVED_CALLS_WAIT_S = 5.0
QUIET_WINDOW_S = 5.0  # at most this long is spent waiting for a moment between turns before a move is forced
# No call is moved before this (a shorter grace period: before its last quarter): a load balancer polling
# /healthz every 5 s (the Kubernetes manifest) has seen it answer 503, so a moved call lands elsewhere.
MIN_QUIET_S = 5.0
QUIET_POLL_S = 0.05
SAVE_HANDLE_TIMEOUT_S = 2.0
# One redirect attempt: Twilio's API answers a call update in well under a second; a connection that accepts
# and never answers must not hold the drain.
MOVE_ATTEMPT_TIMEOUT_S = 2.0
MIN_ATTEMPT_S = 0.5  # no retry is started with less time than this before the plan gives up
MOVE_BACKOFF_S = (0.25, 0.5, 1.0, 2.0)  # between attempts; 2 s after that
# The retries a move forced at the end of its window gets, when the grace period leaves room for them.
MOVE_RETRY_S = 4.0
APOLOGY_MARGIN_S = 1.0  # after the failure message: its mark coming back from Twilio, and the close


@dataclass(frozen=True)
class DrainPlan:
    """When each step of a drain happens, in seconds after the signal."""

    start_s: float  # calls still running are moved from here, each at its first moment between turns,
    force_s: float  # ... and from here whatever their state
    give_up_s: float  # no redirect is tried after this: a call not moved hears the apology, the line closes
    end_s: float  # the drain is over: the shutdown closes whatever is left


def plan_drain(grace_s: float, apology_s: float = 0.0) -> DrainPlan:
    """Plan back from the end (`grace_s` + MOVED_CALLS_WAIT_S, what the shutdown budget counts): a call that
    cannot be moved must have heard the whole failure message (`apology_s` long) by then, so the retries stop
    in time for it (and within the grace period); a move forced at the end of its window gets MOVE_RETRY_S of
    retries; calls are moved as late as that allows, in the grace period's last quarter at the latest and
    never before MIN_QUIET_S. With the defaults (15 s, a 7.7 s message): moved between turns from 5 s,
    whatever their state from 8.75 s, retried until 11.3 s, apologised to by 20 s. In a grace period too
    short for all that, calls are moved whatever their state from the start of its last quarter, and the
    message is cut off at the end."""
    end = grace_s + MOVED_CALLS_WAIT_S
    window = min(QUIET_WINDOW_S, grace_s / 4)
    give_up = min(grace_s, end - apology_s - APOLOGY_MARGIN_S)
    latest_start = grace_s - window
    start = min(latest_start, max(min(latest_start, MIN_QUIET_S), give_up - MOVE_RETRY_S - window))
    force = max(start, min(start + window, give_up - MOVE_ATTEMPT_TIMEOUT_S))
    give_up = max(give_up, force + MOVE_ATTEMPT_TIMEOUT_S)  # a forced move gets one whole attempt at least
    return DrainPlan(start_s=start, force_s=force, give_up_s=give_up, end_s=end)


def worth_retrying(exc: BaseException) -> bool:
    """A redirect that failed this way may work in a moment: the connection, a timeout, Twilio's 5xx or 429.
    Any other answer of Twilio's (authentication, a bad request) will not change."""
    if isinstance(exc, TwilioRestException):
        return exc.status >= 500 or exc.status == 429
    return True


def redirect_twiml(public_base: str, *, pause_s: int = 0, moved: bool = False) -> str:
    """TwiML that sends a call to the voice webhook again, through the load balancer. A `moved` call says
    so in the URL (Twilio signs it): only such a call looks up a handle left by this instance."""
    response = VoiceResponse()
    if pause_s:
        response.pause(length=pause_s)
    query = f"?{MOVED_QUERY}=1" if moved else ""
    response.redirect(public_base.rstrip("/") + VOICE_PATH + query, method="POST")
    return str(response)


def _carrier(call: object) -> str:
    """Which carrier carries a call (a `Call`'s start says; a stand-in without one is Twilio's)."""
    return str(getattr(getattr(call, "start", None), "carrier", "twilio"))


class Movable(Protocol):
    """What the drain needs of a call in progress (a `gateway.call.Call`)."""

    @property
    def call_sid(self) -> str: ...
    @property
    def between_turns(self) -> bool: ...
    @property
    def resumption_handle(self) -> str: ...
    def end_unmoved(self) -> None:
        """End the call as one Live failed: the caller hears the failure message, then the line closes."""

    def moved(self) -> None:
        """The call was handed to another instance: the end of its line here is the move."""


SaveHandle = Callable[[str, str], Awaitable[None]]  # (call_sid, handle): stored for the next instance


class Drain:
    """The drain of one instance; `run()` once, when the process is told to stop.

    It is given the settings, the live set of calls in progress and where to store a moved call's handle;
    the gateway sets `apology_s`, the length of the failure message, once it has synthesised it.
    """

    def __init__(self, settings: Settings, calls: Collection[Movable], save_handle: SaveHandle) -> None:
        self.settings = settings
        self.calls = calls
        self.save_handle = save_handle
        self.apology_s = 0.0
        self.active = False
        self.moved: set[str] = set()  # CallSids redirected to another instance
        self.not_moved: set[str] = set()  # CallSids ended with the apology: no redirect went through
        self._call_ended = asyncio.Event()
        self._began = 0.0

    def call_ended(self) -> None:
        self._call_ended.set()

    async def _wait_until(self, done: Callable[[], bool], timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout_s)):
                while not done():
                    self._call_ended.clear()
                    await self._call_ended.wait()

    def _left(self, at_s: float) -> float:
        """Seconds from now to `at_s` seconds after the drain began (negative once past)."""
        return self._began + at_s - asyncio.get_running_loop().time()

    def fallback_twiml(self, public_base: str) -> str:
        """What the voice webhook answers while draining: the same call, back through the load balancer."""
        return redirect_twiml(public_base, pause_s=FALLBACK_PAUSE_S)

    async def run(self) -> None:
        calls = self.calls
        self._began = asyncio.get_running_loop().time()
        plan = plan_drain(self.settings.drain_grace_s, self.apology_s)
        self.active = True
        METRICS.draining.set(1)
        log.info(
            "drain_started",
            active_calls=len(calls),
            grace_s=self.settings.drain_grace_s,
            moves_from_s=round(plan.start_s, 2),
            moves_forced_from_s=round(plan.force_s, 2),
            moves_given_up_at_s=round(plan.give_up_s, 2),
            ends_by_s=round(plan.end_s, 2),
        )
        await self._wait_until(lambda: not calls, plan.start_s)
        remaining = list(calls)
        if remaining:
            with contextlib.suppress(
                TimeoutError
            ):  # every step is bounded: this bound holds whatever they do
                async with asyncio.timeout(self._left(plan.end_s)):
                    await self.move_calls(remaining, plan)
            # Moved calls leave as Twilio follows the redirect; the others as their apology ends.
            await self._wait_until(
                lambda: not any(call in calls for call in remaining), self._left(plan.end_s)
            )
        log.info(
            "drain_finished",
            moved=len(self.moved),
            not_moved=len(self.not_moved),
            still_running=len(calls),
            took_s=round(-self._left(0.0), 2),
        )

    async def move_calls(self, calls: list[Movable], plan: DrainPlan) -> None:
        """Move each call (at its first moment between turns, or from `plan.force_s` whatever its state);
        retry a failed redirect until `plan.give_up_s`; then end each call still here and not moved with
        the apology. Returns once every call has been moved, has ended, or is ending with the apology."""
        # Only a Twilio call can be redirected through Twilio's REST API to another instance; a call another
        # carrier carries goes on until the moves are given up, then hears the failure message.
        others = [call for call in calls if _carrier(call) != "twilio"]
        if others:
            log.warning("calls_not_moved", count=len(others), note="only Twilio's calls are moved")
        await asyncio.gather(
            self._move_twilio_calls([call for call in calls if call not in others], plan),
            *(self._end_unmoved(call, plan, attempts=0) for call in others),
        )

    async def _move_twilio_calls(self, calls: list[Movable], plan: DrainPlan) -> None:
        if not calls:
            return
        settings = self.settings
        if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.public_url):
            log.warning(
                "calls_not_moved",
                count=len(calls),
                note="moving calls needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and PUBLIC_URL: they go on "
                "until the moves would have been given up, then hear the failure message",
            )
            await asyncio.gather(*(self._end_unmoved(call, plan, attempts=0) for call in calls))
            return
        control = CallControl(
            settings.twilio_account_sid, settings.twilio_auth_token, base_url=settings.twilio_api_base_url
        )
        try:
            public_url = settings.public_url
            await asyncio.gather(*(self._move(control, call, public_url, plan) for call in calls))
        finally:
            await control.close()

    async def _move(self, control: CallControl, call: Movable, public_url: str, plan: DrainPlan) -> None:
        sid = call.call_sid
        while (wait_s := self._left(plan.force_s)) > 0:
            if call not in self.calls or call.between_turns:
                break
            await asyncio.sleep(min(QUIET_POLL_S, wait_s))
        attempts = 0
        saved: str | None = None
        delays = iter(MOVE_BACKOFF_S)
        # Until it is moved, or has left: ended by itself, or Twilio followed a redirect that timed out here.
        while call in self.calls:
            between_turns = call.between_turns
            handle = call.resumption_handle
            if handle != saved:  # the conversation went on between two attempts: the latest handle goes over
                saved = handle
                try:
                    async with asyncio.timeout(SAVE_HANDLE_TIMEOUT_S):
                        await self.save_handle(sid, handle)
                except Exception as exc:  # the call still moves; it starts a fresh Live session over there
                    log.warning("resumption_handle_not_saved", call_sid=sid, error=repr(exc))
            attempts += 1
            try:
                async with asyncio.timeout(
                    min(MOVE_ATTEMPT_TIMEOUT_S, max(MIN_ATTEMPT_S, self._left(plan.give_up_s)))
                ):
                    moved = await control.update(sid, redirect_twiml(public_url, moved=True))
            except Exception as exc:
                delay = next(delays, MOVE_BACKOFF_S[-1])
                if worth_retrying(exc) and self._left(plan.give_up_s) - delay >= MIN_ATTEMPT_S:
                    log.warning(
                        "call_move_failed", call_sid=sid, attempt=attempts, retry_in_s=delay, error=repr(exc)
                    )
                    await self._wait_until(lambda: call not in self.calls, delay)
                    continue
                METRICS.calls_moved.labels(result="failed").inc()
                log.error("call_not_moved", call_sid=sid, attempts=attempts, error=repr(exc))
                await self._end_unmoved(call, plan, attempts)
                return
            METRICS.calls_moved.labels(result="moved" if moved else "already_ended").inc()
            if moved:
                self.moved.add(sid)
                call.moved()
            log.info(
                "call_moved",
                call_sid=sid,
                moved=moved,
                attempts=attempts,
                resumable=bool(call.resumption_handle),
                between_turns=between_turns,
            )
            return

    async def _end_unmoved(self, call: Movable, plan: DrainPlan, attempts: int) -> None:
        """The call goes on until the plan gives its move up (it may end by itself meanwhile); then it ends
        with the failure message, in time for the whole of it to be heard before the drain is over."""
        await self._wait_until(lambda: call not in self.calls, self._left(plan.give_up_s))
        if call in self.calls:
            self.not_moved.add(call.call_sid)
            log.warning("call_ending_unmoved", call_sid=call.call_sid, attempts=attempts)
            call.end_unmoved()


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
