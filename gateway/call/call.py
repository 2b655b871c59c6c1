"""One phone call, top to bottom: a Twilio media stream bridged to a Live session.

This is the only place where the two sides meet. The story of a call:

1. Wait for Twilio's `start` (skipping `connected`, and any junk) within a deadline.
2. Choose the agent for the number called and take the Live session opened for this call while the phone
   rang (or open one now: setup from the agent's config); if there is a greeting, ask the agent to speak.
3. Run two loops until either side ends:
   - caller -> agent: mu-law 8 kHz from Twilio, to PCM16 at 16 kHz, to Live;
   - agent -> caller: PCM16 24 kHz from Live, to mu-law 8 kHz, to Twilio, with barge-in:
     on `interrupted`, Twilio `clear` at once, the resampler's history dropped, and late audio of the
     interrupted turn discarded until its `turnComplete`.
   A Live connection does not last the whole call: on `goAway` (or when it breaks) the agent loop switches
   to a new connection that resumes the session from the latest resumable handle, while the caller's audio
   is held and then replayed on the new connection, so nothing the caller says is lost.
   Tool calls run in their own tasks (see gateway.tools); `end_call` and `transfer_call` act on the line only
   once what the agent is saying has been heard: a mark after its turn comes back without a `clear`.
4. If Live cannot be brought back, apologise to the caller rather than leave dead air. Close both sides
   (closing the Twilio socket makes Twilio run the TwiML after </Connect>) and log a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from gateway.agents import Agent
from gateway.audio import InboundAudio, OutboundAudio
from gateway.live import protocol as lp
from gateway.live.session import LiveError, LiveSession
from gateway.metrics import METRICS, SpeechEnd
from gateway.tools import CallIds, LineAction, Toolbox, ToolResult
from gateway.twilio import protocol as tp
from gateway.twilio.line import TwilioClosed, TwilioStream

if TYPE_CHECKING:
    from gateway.twilio.rest import CallControl

log = structlog.get_logger("gateway.call")

LiveOpener = Callable[[lp.LiveConfig, str | None], Awaitable[LiveSession]]
StreamAdmission = Callable[[tp.Start], Awaitable[str | None]]  # a reason to refuse the stream, or None
TranscriptObserver = Callable[[str, str, str], None]  # (call_sid, role, text)
FailureHandler = Callable[["Call"], Awaitable[None]]
ResumeLookup = Callable[[str], Awaitable[str]]  # call_sid -> the Live handle another instance left, or ""
# (start, take the pre-warmed session?) -> the agent; False when the call resumes its own session instead.
CallPreparer = Callable[[tp.Start, bool], Awaitable["CallAgent"]]

FRAME_S = 0.02
# Caller audio held while the Live connection is switched, and kept since the last resumable handle (the
# new connection resumes from that handle, so audio after it must be sent again). Mu-law: 80 kB a call.
MAX_REPLAY_S = 10.0
# Attempts to bring a broken Live connection back: bounded, so a dead service ends in an apology, not a hang.
RECONNECT_DELAYS_S = (0.0, 0.25, 0.5, 1.0, 2.0)
# Connections that open and then die before the server says anything: past this many in a row, give up.
MAX_BARREN_CONNECTIONS = 3
ENDED_BY_FAILURE = frozenset({"live_config_error", "live_unavailable", "live_lost"})


@dataclass(frozen=True)
class CallLimits:
    """Bounds on one call, so a stalled or hostile peer holds resources only for a bounded time."""

    start_timeout_s: float = 10.0  # `start` must arrive this soon after the WebSocket opens
    idle_timeout_s: float = 20.0  # Twilio sends media every 20 ms, silence too: this long without is dead
    max_duration_s: float = 4 * 3600.0


@dataclass(frozen=True)
class CallAgent:
    """Who answers a call, chosen once `start` says which number was called, and what it works with."""

    agent: Agent
    toolbox: Toolbox
    live: LiveSession | None = None  # opened and set up while the phone rang (see gateway.prewarm)
    control: CallControl | None = None  # Twilio's REST API, for transfers


@dataclass
class CallStats:
    """What one call did; logged when it ends and kept for tests and records."""

    started: float = field(default_factory=time.monotonic)
    frames_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    barge_ins: int = 0
    late_chunks_dropped: int = 0
    caller_frames_dropped: int = 0
    dtmf: str = ""
    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0
    tokens_by_modality: dict[str, int] = field(default_factory=dict)
    switches: list[float] = field(default_factory=list)  # seconds each Live connection switch took
    outcome: str = "unknown"

    def add_usage(self, usage: lp.Usage) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.response_tokens += usage.response_tokens
        self.total_tokens += usage.total_tokens
        for name, count in usage.by_modality.items():
            self.tokens_by_modality[name] = self.tokens_by_modality.get(name, 0) + count


class Call:
    def __init__(
        self,
        twilio: TwilioStream,
        open_live: LiveOpener,
        config: lp.LiveConfig,
        *,
        greeting: str = "",
        input_rate: int = 16000,
        limits: CallLimits = CallLimits(),
        admit: StreamAdmission | None = None,
        on_transcript: TranscriptObserver | None = None,
        on_failure: FailureHandler | None = None,
        reconnect_delays_s: tuple[float, ...] = RECONNECT_DELAYS_S,
        prepare: CallPreparer | None = None,
        resume: ResumeLookup | None = None,
    ) -> None:
        self.twilio = twilio
        self._open_live = open_live
        self.config = config
        self.caps = lp.model_capabilities(config.model)
        self.greeting = greeting
        self.input_rate = input_rate
        self.limits = limits
        self.admit = admit
        self.on_transcript = on_transcript
        self.on_failure = on_failure
        self.reconnect_delays_s = reconnect_delays_s
        self.prepare = prepare
        self.chosen: CallAgent | None = None
        self.resume = resume
        self.start: tp.Start | None = None
        self.live: LiveSession | None = None
        self.stats = CallStats()
        self._inbound = InboundAudio(rate=input_rate)
        self._outbound = OutboundAudio()
        # Live connection state, owned by the agent -> caller loop.
        self.resumption_handle = ""
        self._handle_fresh = False  # a resumable handle came since the agent last started generating
        self._switch_by: float | None = None  # after goAway: switch connections by this monotonic time
        self._held: deque[bytes] | None = None  # caller mu-law held while switching (None: send directly)
        self._since_handle: deque[bytes] = deque(maxlen=int(MAX_REPLAY_S / FRAME_S))
        self._held_keys: list[str] = []  # keypresses while switching connections
        # Caller utterances transcribed since the handle: their audio is replayed on a new connection and
        # transcribed again there, and those second transcripts are not news.
        self._utterances_since_handle = 0
        self._replayed_utterances = 0
        self._barren_connections = 0  # consecutive connections lost before the server said anything
        # Agent-turn state, owned by the agent -> caller loop.
        self._turn = 0
        self._generating = False
        self._turn_audio_sent = False
        self._discarding = False
        self._marks: dict[str, float] = {}
        self._heard: dict[str, list[str]] = {"caller": [], "agent": []}
        self._speech_end = SpeechEnd()  # for the response latency metric
        # Tools: calls in progress by id, and what to do to the line once the agent has been heard.
        self._tool_tasks: dict[str, asyncio.Task[None]] = {}
        self._line_action: LineAction | None = None
        self._line_action_id = ""  # the tool call that asked for it: its cancellation withdraws it
        self._line_action_mark = ""  # the mark whose echo (not flushed by a clear) carries it out

    @property
    def call_sid(self) -> str:
        return self.start.call_sid if self.start else ""

    @property
    def between_turns(self) -> bool:
        """Nobody mid-turn and a resumable handle covers the conversation: the moment to move the call."""
        return self.live is not None and self._held is None and self._quiet_moment()

    async def run(self) -> None:
        METRICS.active_calls.inc()
        try:
            await self._run()
        finally:
            METRICS.active_calls.dec()
            METRICS.calls.labels(outcome=self.stats.outcome).inc()
            self._log_summary()

    async def _run(self) -> None:
        self.start = await self._wait_for_start()
        if self.start is None:
            await self.twilio.close()
            return
        structlog.contextvars.bind_contextvars(call_sid=self.start.call_sid, stream_sid=self.start.stream_sid)
        self.twilio.stream_sid = self.start.stream_sid
        params = self.start.custom_parameters
        log.info("call_started", caller=params.get("From", ""), called=params.get("To", ""))
        if self.admit is not None and (refusal := await self.admit(self.start)):
            # Refused before any Live session exists: an unauthenticated stream costs nothing.
            self.stats.outcome = "refused"
            log.warning("stream_refused", reason=refusal)
            await self.twilio.close(code=1008, reason=refusal)
            return
        try:
            try:
                self.live = await self._first_live()
                if self.greeting and not self.resumption_handle:  # a resumed conversation was greeted already
                    await self._ask_agent(self.greeting)
            except LiveError as exc:
                self.stats.outcome = "live_config_error" if exc.is_config_error else "live_unavailable"
                log.error("live_session_failed", error=str(exc), code=exc.code)
                return
            await self._bridge()
        finally:
            if self.live is not None:
                await self.live.close()
            if self.stats.outcome in ENDED_BY_FAILURE and self.on_failure is not None:
                with contextlib.suppress(TwilioClosed):
                    await self.on_failure(self)
            await self.twilio.close()

    async def _wait_for_start(self) -> tp.Start | None:
        try:
            async with asyncio.timeout(self.limits.start_timeout_s):
                while True:
                    event = await self.twilio.receive()
                    if event is None:
                        self.stats.outcome = "closed_before_start"
                        return None
                    if isinstance(event, tp.Start):
                        return event
                    if not isinstance(event, tp.Connected):
                        log.warning("event_before_start_skipped", kind=type(event).__name__)
        except TimeoutError:
            self.stats.outcome = "no_start"
            log.warning("no_start_event", timeout_s=self.limits.start_timeout_s)
            return None

    async def _first_live(self) -> LiveSession:
        """The agent for the number called, and its Live session: the one set up while the phone rang if
        there is one, so the greeting does not wait for a connect and setup round trip; but a call handed
        over by another instance (a deploy) resumes its own session instead, context and all."""
        # First: is this a call handed over by another instance? Then the session pre-warmed while it rang
        # here is not waited for (a fresh session would not know the conversation).
        self.resumption_handle = await self.resume(self.call_sid) if self.resume is not None else ""
        prewarmed: LiveSession | None = None
        if self.prepare is not None:
            assert self.start is not None
            self.chosen = chosen = await self.prepare(self.start, not self.resumption_handle)
            self.config, self.greeting = chosen.agent.live, chosen.agent.greeting
            self.caps = lp.model_capabilities(self.config.model)
            log.info("agent_chosen", agent=chosen.agent.name, prewarmed=chosen.live is not None)
            prewarmed = chosen.live
        if self.resumption_handle:
            try:
                live = await self._open_live(self.config, self.resumption_handle)
                log.info("live_session_resumed_from_another_instance")
                return live
            except LiveError as exc:
                if exc.code != 1008:
                    raise
                # Unknown or expired: the call goes on in a fresh session (the context is lost, not the call).
                log.warning("resumption_handle_rejected", reason=exc.reason)
                self.resumption_handle = ""
        if prewarmed is not None:
            return prewarmed
        return await self._open_live(self.config, None)

    async def _ask_agent(self, text: str) -> None:
        """Make the agent speak (greeting, DTMF): clientContent where the model allows it mid-session."""
        assert self.live is not None
        if self.caps.client_content_mid_session:
            await self.live.send(lp.client_turn_message(text))
        else:
            await self.live.send(lp.text_input_message(text))

    async def _bridge(self) -> None:
        """Both directions at once; when either ends, the other is cancelled and nothing is left behind."""
        tasks = [
            asyncio.create_task(self._caller_to_agent(), name="caller_to_agent"),
            asyncio.create_task(self._agent_to_caller(), name="agent_to_caller"),
        ]
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=self.limits.max_duration_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                self.stats.outcome = "max_duration"
                log.warning("call_too_long", max_duration_s=self.limits.max_duration_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._cancel_tools(list(self._tool_tasks), reason="call_ended")
        for task in done:
            exc = task.exception()
            if isinstance(exc, LiveError):
                self.stats.outcome = "live_config_error" if exc.is_config_error else "live_lost"
                log.error("live_session_ended", error=str(exc), code=exc.code)
            elif isinstance(exc, TwilioClosed):
                self.stats.outcome = "caller_gone"
            elif exc is not None:
                self.stats.outcome = "error"
                log.error("call_failed", exc_info=exc)

    # --- caller -> agent ---------------------------------------------------------------------------------

    async def _caller_to_agent(self) -> None:
        stats = self.stats
        while True:
            try:
                async with asyncio.timeout(self.limits.idle_timeout_s):
                    event = await self.twilio.receive()
            except TimeoutError:
                stats.outcome = "media_idle"
                log.warning("no_media", idle_timeout_s=self.limits.idle_timeout_s)
                return
            if event is None:
                stats.outcome = "caller_hung_up"
                log.info("twilio_socket_closed")
                return
            if isinstance(event, tp.Media):
                stats.frames_in += 1
                self._speech_end.frame(event.payload)
                await self._send_caller_audio(event.payload)
            elif isinstance(event, tp.Mark):
                if self._mark_played(event.name) and await self._carry_out_line_action():
                    return
            elif isinstance(event, tp.Dtmf):
                stats.dtmf += event.digit
                log.info("dtmf", digit=event.digit)
                text = f"[The caller pressed the {event.digit} key on their phone keypad.]"
                if self._held is None:
                    await self._ask_agent(text)
                else:
                    self._held_keys.append(text)  # switching connections: told once the new one is up
            elif isinstance(event, tp.Stop):
                stats.outcome = "caller_hung_up"
                log.info("twilio_stop")
                return
            else:
                log.warning("unexpected_twilio_event", kind=type(event).__name__)

    async def _send_caller_audio(self, ulaw: bytes) -> None:
        self._since_handle.append(ulaw)
        if self._held is None:
            assert self.live is not None
            try:
                await self.live.send_audio(self._inbound.convert(ulaw), self.input_rate)
                return
            except LiveError:
                # The connection broke under us; the agent loop is bringing it back. Keep the words.
                self._held = deque()
        self._hold(ulaw)

    def _hold(self, ulaw: bytes) -> None:
        assert self._held is not None
        if len(self._held) >= self._since_handle.maxlen:  # type: ignore[operator]
            self._held.popleft()
            self.stats.caller_frames_dropped += 1
            METRICS.frames_dropped.labels(direction="caller").inc()
        self._held.append(ulaw)

    def _mark_played(self, name: str) -> bool:
        """True when this echo says the line action is due (everything the agent said has been heard)."""
        sent = self._marks.pop(name, None)
        if sent is None:
            # A mark flushed by `clear`: Twilio echoes those too, and they prove nothing was heard.
            return False
        log.info("agent_turn_played", mark=name, playback_s=round(time.monotonic() - sent, 3))
        return bool(self._line_action) and name == self._line_action_mark

    # --- agent -> caller ---------------------------------------------------------------------------------

    async def _agent_to_caller(self) -> None:
        """Relay Live to the caller across as many Live connections as the call needs."""
        while True:
            reason = await self._relay()
            if reason is None:
                self.stats.outcome = "live_closed"
                log.info("live_session_closed")
                return
            await self._switch_connection(reason)

    async def _relay(self) -> str | None:
        """Carry one connection's events to the caller. Returns why to switch connections, or None when
        Live ended the session. Raises LiveError for a configuration error."""
        assert self.live is not None
        live = self.live
        heard_from_server = False
        while True:
            if self._switch_by is not None and self._quiet_moment():
                return "go_away"  # switch now, well before the deadline
            timeout = None if self._switch_by is None else max(0.0, self._switch_by - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    events = await live.receive()
            except TimeoutError:
                return "go_away_deadline"  # the server may go quiet after goAway: the timer decides
            except LiveError as exc:
                # 1007 mid-call is the configuration (or an expired key): no new connection will fix it.
                # A 1008 once set up has been seen intermittently around tool calls: worth a new connection.
                if exc.code == 1007:
                    raise
                log.warning("live_connection_lost", error=str(exc), code=exc.code)
                self._barren_connections = 0 if heard_from_server else self._barren_connections + 1
                if self._barren_connections >= MAX_BARREN_CONNECTIONS:
                    raise LiveError(
                        f"Live keeps dropping new connections: {exc}", exc.code, exc.reason
                    ) from None
                return "connection_lost"
            heard_from_server = True
            if events is None:
                return "go_away" if self._switch_by is not None else None
            for event in events:
                await self._on_live_event(event)

    def _quiet_moment(self) -> bool:
        """Neither side mid-turn, no tool running or line action pending (their answers belong to this
        connection: a resumed session would not know them), and a handle that covers the conversation."""
        return (
            self._handle_fresh
            and not self._generating
            and not self._heard["caller"]
            and not self._tool_tasks
            and self._line_action is None
        )

    async def _on_live_event(self, event: lp.LiveEvent) -> None:
        if isinstance(event, lp.AgentAudio):
            await self._play(event.pcm)
        elif isinstance(event, lp.Interrupted):
            await self._barge_in()
        elif isinstance(event, lp.TurnComplete):
            await self._end_agent_turn()
        elif isinstance(event, lp.InputTranscript):
            if self._marks and not self._generating:
                # Live has finished this reply, so it sends no `interrupted`, but Twilio is still playing
                # it out: the caller is talking over it, so stop it here.
                await self._stop_playback()
                log.info("barge_in", turn=self._turn, during="playout")
            self._heard["caller"].append(event.text)
        elif isinstance(event, lp.OutputTranscript):
            self._generating = True
            self._handle_fresh = False
            self._heard["agent"].append(event.text)
        elif isinstance(event, lp.Usage):
            self.stats.add_usage(event)
            METRICS.count_tokens(event.by_modality)
        elif isinstance(event, lp.ResumptionUpdate):
            if event.resumable and event.handle:
                self.resumption_handle = event.handle
                self._handle_fresh = True
                self._since_handle.clear()  # the new handle covers everything the caller said so far
                self._utterances_since_handle = 0
        elif isinstance(event, lp.ToolCall):
            await self._start_tools(event)
        elif isinstance(event, lp.ToolCallCancellation):
            await self._cancel_tools(list(event.ids), reason="cancelled_by_live")
        elif isinstance(event, lp.GoAway):
            # Leave a margin before the deadline for the new connection's setup.
            margin = min(5.0, event.time_left_s * 0.25)
            self._switch_by = time.monotonic() + max(0.0, event.time_left_s - margin)
            log.info("live_go_away", time_left_s=event.time_left_s)

    async def _switch_connection(self, reason: str) -> None:
        """Close the old connection, open a new one resuming from the latest handle, replay held audio."""
        began = time.monotonic()
        # Everything said since the handle must reach the new connection; anything arriving meanwhile too.
        self._held = deque(self._since_handle)
        self._replayed_utterances = self._utterances_since_handle
        old = self.live
        assert old is not None
        await old.close()  # first: the server rejects a resume while the old connection is open
        # The caller's unfinished words are sent again from the held audio and transcribed again there.
        self._heard["caller"].clear()
        if self._generating or self._turn_audio_sent:
            await self._end_agent_turn()  # that turn is over: its tail and mark go out, nothing waits for it
        self._switch_by = None
        self._handle_fresh = False
        self.live = await self._reconnect()
        while self._held:  # frames the caller loop adds meanwhile are sent in order too
            await self.live.send_audio(self._inbound.convert(self._held.popleft()), self.input_rate)
        self._held = None
        while self._held_keys:
            await self._ask_agent(self._held_keys.pop(0))
        took = time.monotonic() - began
        self.stats.switches.append(took)
        METRICS.live_reconnects.labels(reason=reason).inc()
        log.info("live_switched", reason=reason, took_s=round(took, 3), resumed=bool(self.resumption_handle))

    async def _reconnect(self) -> LiveSession:
        last: LiveError | None = None
        for delay in self.reconnect_delays_s:
            await asyncio.sleep(delay)
            try:
                return await self._open_live(self.config, self.resumption_handle or None)
            except LiveError as exc:
                last = exc
                if exc.code == 1008 and self.resumption_handle:
                    # The handle is unknown or expired: a fresh session loses the context, not the call.
                    log.warning("resumption_handle_rejected", reason=exc.reason)
                    self.resumption_handle = ""
                elif exc.is_config_error:
                    raise
                log.warning("live_reconnect_failed", error=str(exc), code=exc.code)
        assert last is not None
        raise last

    async def _play(self, pcm: bytes) -> None:
        if self._discarding:
            self.stats.late_chunks_dropped += 1
            METRICS.frames_dropped.labels(direction="agent").inc()
            return
        self._generating = True
        self._handle_fresh = False
        ulaw = self._outbound.convert(pcm)
        if ulaw:
            if not self._turn_audio_sent:
                self._turn_audio_sent = True
                self._turn += 1
                if self._turn == 1:
                    METRICS.first_agent_audio.observe(time.monotonic() - self.stats.started)
                self._speech_end.answered()
                self._flush_transcripts("caller")  # the caller's turn is over once the agent answers
                log.debug("agent_audio_started", turn=self._turn)
            self.stats.frames_out += 1
            self.stats.bytes_out += len(ulaw)
            await self.twilio.send_media(ulaw)

    async def _barge_in(self) -> None:
        """Live says the caller talked over the agent: silence the line, drop the rest of the turn."""
        await self._stop_playback()
        self._discarding = True
        self._turn_audio_sent = False
        self._flush_transcripts()
        log.info("barge_in", turn=self._turn)

    async def _stop_playback(self) -> None:
        """Empty Twilio's playout buffer now and forget what was queued (flushed marks echo too)."""
        await self.twilio.send_clear()
        self._outbound.reset()
        self._marks.clear()
        self._withdraw_line_action("caller_talked_over_it")  # "wait, one more thing": the agent may ask again
        self.stats.barge_ins += 1
        METRICS.barge_ins.inc()

    async def _end_agent_turn(self) -> None:
        if self._turn_audio_sent:
            # The resampler holds its last couple of milliseconds back; without this the end of every
            # reply is clipped.
            tail = self._outbound.flush()
            if tail:
                await self.twilio.send_media(tail)
            name = f"turn-{self._turn}"
            self._marks[name] = time.monotonic()
            await self.twilio.send_mark(name)
        self._turn_audio_sent = False
        self._discarding = False
        self._generating = False
        self._flush_transcripts()
        if self._line_action is not None and not self._line_action_mark:
            await self._send_line_action_mark()

    # --- tools and line actions (hang up, transfer) -------------------------------------------------------

    async def _start_tools(self, event: lp.ToolCall) -> None:
        """Each call runs in its own task, so a slow HTTP tool never holds up the agent's audio."""
        if self.chosen is None:
            await self._refuse_tools(event)
            return
        for call in event.calls:
            self._tool_tasks[call.id] = asyncio.create_task(self._run_tool(call), name=f"tool-{call.name}")

    async def _run_tool(self, call: lp.FunctionCall) -> None:
        assert self.chosen is not None and self.start is not None
        params = self.start.custom_parameters
        ids = CallIds(self.call_sid, self.start.stream_sid, params.get("From", ""), params.get("To", ""))
        try:
            result = await self.chosen.toolbox.run(self.chosen.agent, call, ids)
        except Exception:  # a bug, not a tool failure: the model still gets an answer, not silence
            log.exception("tool_crashed", tool=call.name)
            result = ToolResult({"error": f"{call.name} failed inside the gateway"})
        self._tool_tasks.pop(call.id, None)  # answered: a cancellation from now on only withdraws its action
        if result.action is not None:
            with contextlib.suppress(TwilioClosed):  # the caller is gone: nothing left to hang up or move
                await self._ask_for_line_action(result.action, call.id)
        response = {"id": call.id, "name": call.name, "response": result.response}
        try:
            assert self.live is not None
            await self.live.send(lp.tool_response_message([response]))
        except LiveError as exc:
            log.warning("tool_response_not_sent", tool=call.name, error=str(exc))

    async def _cancel_tools(self, ids: list[str], reason: str) -> None:
        tasks = [task for i in ids if (task := self._tool_tasks.pop(i, None)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._line_action_id in ids:
            self._withdraw_line_action(reason)
        if tasks:
            log.info("tool_calls_cancelled", ids=ids, reason=reason)

    async def _ask_for_line_action(self, action: LineAction, call_id: str) -> None:
        """Carry out `action` once what the agent says in this turn has been heard: a mark after the turn,
        whose echo (not one caused by a `clear`) proves it has played."""
        self._line_action, self._line_action_id, self._line_action_mark = action, call_id, ""
        if not self._generating and not self._turn_audio_sent:
            # No turn in progress: only the audio already queued is waited for.
            await self._send_line_action_mark()

    async def _send_line_action_mark(self) -> None:
        assert self._line_action is not None
        name = f"{self._line_action.kind}-{self._turn}"
        self._line_action_mark = name
        self._marks[name] = time.monotonic()
        await self.twilio.send_mark(name)

    def _withdraw_line_action(self, reason: str) -> None:
        if self._line_action is not None:
            log.info("line_action_withdrawn", action=self._line_action.kind, reason=reason)
        self._line_action, self._line_action_id, self._line_action_mark = None, "", ""

    def _take_line_action(self) -> LineAction:
        action = self._line_action
        assert action is not None
        self._line_action, self._line_action_id, self._line_action_mark = None, "", ""
        return action

    async def _carry_out_line_action(self) -> bool:
        """Hang up or transfer now. True when the call is over for this stream."""
        action = self._take_line_action()
        if action.kind == "hang_up":
            self.stats.outcome = "agent_hung_up"
            log.info("agent_hung_up")
            return True  # closing the stream makes Twilio run the <Hangup/> after </Connect>
        control = self.chosen.control if self.chosen else None
        try:
            if control is None:  # the toolbox refuses transfers without REST credentials: not reached
                raise RuntimeError("no Twilio REST credentials")
            moved = await control.transfer(self.call_sid, action.target)
        except Exception as exc:  # TwilioRestException, a network error: the caller is still on the line
            log.error("transfer_failed", target=action.target, error=str(exc))
            with contextlib.suppress(LiveError):
                await self._ask_agent(
                    f"[The transfer to {action.target} failed. Tell the caller, and offer another way.]"
                )
            return False
        # Twilio now runs the <Dial> and stops this stream: that stop is the transfer, not a hang-up.
        self.stats.outcome = "transferred" if moved else "caller_gone"
        log.info("call_transferred" if moved else "transfer_after_call_ended", target=action.target)
        return True

    async def _refuse_tools(self, event: lp.ToolCall) -> None:
        """No tools are declared by this agent: answer so the model is never left waiting."""
        assert self.live is not None
        responses = [
            {"id": c.id, "name": c.name, "response": {"error": f"no tool named {c.name!r} here"}}
            for c in event.calls
        ]
        log.warning("tool_call_refused", tools=[c.name for c in event.calls])
        await self.live.send(lp.tool_response_message(responses))

    # --- failure ending ----------------------------------------------------------------------------------

    async def play_and_wait(self, ulaw: bytes, timeout_s: float) -> None:
        """Play audio to the caller and return once Twilio says it has played (or the caller is gone)."""
        await self.twilio.send_clear()
        await self.twilio.send_media(ulaw)
        await self.twilio.send_mark("final")
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    event = await self.twilio.receive()
                    if event is None or isinstance(event, tp.Stop):
                        return
                    if isinstance(event, tp.Mark) and event.name == "final":
                        return
        except TimeoutError:
            log.warning("final_audio_not_confirmed", timeout_s=timeout_s)

    # --- transcripts -------------------------------------------------------------------------------------

    def _flush_transcripts(self, *roles: str) -> None:
        # Transcripts arrive in fragments; one line per utterance is what people read.
        for role in roles or ("caller", "agent"):
            text = "".join(self._heard[role]).strip()
            self._heard[role].clear()
            if text and role == "caller":
                if self._replayed_utterances:
                    self._replayed_utterances -= 1
                    log.debug("replayed_utterance_transcribed_again", text=text)
                    continue
                self._utterances_since_handle += 1
            if text:
                log.info("transcript", role=role, text=text)
                if self.on_transcript is not None:
                    self.on_transcript(self.call_sid, role, text)

    def _log_summary(self) -> None:
        self._flush_transcripts()
        s = self.stats
        log.info(
            "call_ended",
            outcome=s.outcome,
            duration_s=round(time.monotonic() - s.started, 2),
            frames_in=s.frames_in,
            frames_out=s.frames_out,
            barge_ins=s.barge_ins,
            late_chunks_dropped=s.late_chunks_dropped,
            caller_frames_dropped=s.caller_frames_dropped,
            live_switches=len(s.switches),
            longest_switch_s=round(max(s.switches, default=0.0), 3),
            prompt_tokens=s.prompt_tokens,
            response_tokens=s.response_tokens,
            total_tokens=s.total_tokens,
            tokens_by_modality=s.tokens_by_modality,
            bad_twilio_messages=self.twilio.bad_messages,
        )
        structlog.contextvars.unbind_contextvars("call_sid", "stream_sid")
