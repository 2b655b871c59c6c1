"""One phone call, top to bottom: the caller's line bridged to a Live session.

This is the only place where the two sides meet. The rules of the call live in `CallState` (pure, unit
tested); this module is the story, the awaits that carry them out:

1. The line has started (who is calling whom) and its stream token was checked: the app does both before it
   makes the Call, so a socket that never becomes a call costs no Call.
2. Choose the agent for the number called and take the Live session opened for this call while the phone
   rang (or open one now: setup from the agent's config); if there is a greeting, ask the agent to speak.
3. Run two loops until either side ends:
   - caller -> agent: PCM at the line's rate, resampled to Live's input rate, to Live;
   - agent -> caller: PCM 24 kHz from Live, resampled to the line's rate, to the line, with barge-in:
     on `interrupted`, the line is cleared at once, the resampler's history dropped, and late audio of the
     interrupted turn discarded until its `turnComplete`.
   A Live connection does not last the whole call: on `goAway` (or when it breaks) the agent loop switches
   to a new connection that resumes the session from the latest resumable handle, while the caller's audio
   is held and then replayed on the new connection, so nothing the caller says is lost.
   Tool calls run in their own tasks (see gateway.tools); `end_call` and `transfer_call` act on the line only
   once what the agent is saying has been heard: a mark after its turn comes back without a `clear`.
   Turn-taking (see gateway.call.turns): the caller loop hears the caller on the line itself, so talking
   over the agent's audio clears the line without waiting for Live's `interrupted` (BARGE_IN=local), and
   with TURN_DETECTION=local it marks the caller's speech for Live with activityStart/activityEnd. A caller's
   turn left unanswered wakes the agent loop's stall watchdog: a nudge, then a new connection, then the
   apology.
4. If Live cannot be brought back, apologise to the caller rather than leave dead air. Close both sides
   (closing the line hangs up: a Twilio stream runs the TwiML after </Connect>) and log a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from gateway.agents import Agent
from gateway.audio import Resampler, audioop, pcm16_to_ulaw, ulaw_to_pcm16
from gateway.call.answering import Answering, MachinePolicy
from gateway.call.caller_chunks import QUIET_PEAK, CallerChunks
from gateway.call.events import CallEvents
from gateway.call.line import CallerAudio, Ended, Keypress, Line, LineClosed, LineEvent, Played, Started
from gateway.call.outcome import Outcome, live_failure
from gateway.call.resumption import Resumption
from gateway.call.state import CallState
from gateway.call.summary import CallSummary
from gateway.call.turns import NOTHING, CallerSpeech, Heard, StallWatchdog, TurnRules
from gateway.call.voice import VoiceMeter, hear, level_dbfs
from gateway.deadline import Deadline
from gateway.live import protocol as lp
from gateway.live.session import (
    LiveConfigRejected,
    LiveConnectionLost,
    LiveError,
    LiveHandleRejected,
    LiveSession,
    LiveUnreachable,
)
from gateway.metrics import METRICS, SpeechEnd
from gateway.outbound.variables import speak
from gateway.tools import CallIds, LineAction, Toolbox, ToolResult, function_response

log = structlog.get_logger("gateway.call")

LiveOpener = Callable[[lp.LiveConfig, str | None], Awaitable[LiveSession]]
TranscriptObserver = Callable[[str, str, str], None]  # (call_sid, role, text)
FailureHandler = Callable[["Call"], Awaitable[None]]
ResumeLookup = Callable[[str], Awaitable[str]]  # call_sid -> the Live handle another instance left, or ""
# (started, take the pre-warmed session?) -> the agent; False when the call resumes its own session instead.
CallPreparer = Callable[[Started, bool], Awaitable["CallAgent"]]


class CallWatcher(Protocol):
    """Someone following one call as it happens (the browser softphone's page): never awaited."""

    def transcript(self, role: str, text: str) -> None:
        """A finished transcript line, as the call's record gets it."""

    def response(self, latency_s: float) -> None:
        """A turn's response latency: the caller's last sound to the agent's first audio sent to the line."""


# Attempts to bring a broken Live connection back: bounded, so a dead service ends in an apology, not a hang.
CONNECT_RETRY_DELAYS_S = (0.0, 0.25, 0.5, 1.0, 2.0)
LIVE_OUTPUT_RATE = 24000
# Said to the model when it leaves the caller's turn unanswered (the stall watchdog's first step). It asks for
# speech, so even a model that chose silence (proactive audio) answers; it is sent only between turns (no
# generation to interrupt, no tool waiting), in brackets like the other notes the gateway gives the model.
STALL_NUDGE = (
    "[The caller has finished speaking and is still waiting for your answer. Answer them now; if they asked "
    "you to wait, tell them briefly that you are still here.]"
)
DEFAULT_TURNS = TurnRules()
# With automatic activity detection, a pause in the caller's audio this long is told to Live (audioStreamEnd).
AUDIO_PAUSE_S = 1.0
# TURN_DETECTION=local: audio Live received before activityStart is discarded; this much is sent again after
# it, so the first syllable (heard before the onset was confirmed) is not lost.
ACTIVITY_PREROLL_FRAMES = 15


@dataclass(frozen=True)
class CallLimits:
    """Bounds on one call, so a stalled or hostile peer holds resources only for a bounded time."""

    idle_timeout_s: float = 20.0  # lines carry audio every 20 ms, silence too: this long without is dead
    max_duration_s: float = 4 * 3600.0
    # From the line's start to a set-up Live session, however it is had (pre-warmed, resumed or opened
    # here): one budget, never two timeouts back to back; past it the caller hears the apology. The same
    # bound holds for bringing a lost connection back during the call.
    live_setup_s: float = 6.0
    live_stall_s: float = 8.0  # Live silent this long after the caller made a sound: a stalled connection
    quiet_chunk_ms: int = 100  # caller audio per message to Live in a quiet (gateway.call.caller_chunks)
    speech_chunk_ms: int | None = None  # ... and while the caller may be speaking (None: 40, or less)


@dataclass(frozen=True)
class OutboundRole:
    """A call the gateway placed: its agent waits to know who answered (see gateway.call.answering)."""

    machine: MachinePolicy = "hang_up"
    opening: str = ""  # said when a person answered and nobody has spoken yet ("" for nothing)
    voicemail: str = ""  # said after a machine's beep with the `leave_message` policy
    wait_s: float = 32.0  # no answering-machine result this long after the line started: a person


@dataclass(frozen=True)
class CallAgent:
    """Who answers a call, chosen once the line says which number was called, and what it works with."""

    agent: Agent
    toolbox: Toolbox
    live: LiveSession | None = None  # opened and set up while the phone rang (see gateway.prewarm)


@dataclass
class CallStats:
    """What one call did; logged when it ends and kept for tests and records."""

    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    frames_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0  # agent audio sent to the line, PCM16 at its rate
    barge_ins: int = 0
    barge_ins_local: int = 0  # the gateway's own detector cleared the line
    barge_ins_server: int = 0  # Live's `interrupted` (or its transcript over a finished reply) cleared it
    late_chunks_dropped: int = 0
    dtmf: str = ""
    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0
    tokens_by_modality: dict[str, int] = field(default_factory=dict)
    switches: list[float] = field(default_factory=list)  # seconds each Live connection switch took
    outcome: Outcome = Outcome.UNKNOWN

    def add_usage(self, usage: lp.Usage) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.response_tokens += usage.response_tokens
        self.total_tokens += usage.total_tokens
        for name, count in usage.by_modality.items():
            self.tokens_by_modality[name] = self.tokens_by_modality.get(name, 0) + count


class Call:
    """One call: a line and a Live session, from the line's start to the end of both."""

    def __init__(
        self,
        line: Line,
        start: Started,
        open_live: LiveOpener,
        config: lp.LiveConfig,
        *,
        greeting: str = "",
        input_rate: int = 16000,
        limits: CallLimits = CallLimits(),
        on_transcript: TranscriptObserver | None = None,
        on_failure: FailureHandler | None = None,
        connect_retry_delays_s: tuple[float, ...] = CONNECT_RETRY_DELAYS_S,
        prepare: CallPreparer | None = None,
        resume: ResumeLookup | None = None,
        outbound: OutboundRole | None = None,
        turns: TurnRules = DEFAULT_TURNS,
        barge_in: str | None = None,
        watcher: CallWatcher | None = None,
    ) -> None:
        self.line = line
        self.watcher = watcher
        self._open_live = open_live
        self.config = config
        self.caps = config.caps
        self.greeting = greeting
        self.input_rate = input_rate
        self.limits = limits
        self.on_transcript = on_transcript
        self.on_failure = on_failure
        self.connect_retry_delays_s = connect_retry_delays_s
        self.prepare = prepare
        self.chosen: CallAgent | None = None
        self.resume = resume
        self.start = start
        self.live: LiveSession | None = None
        self.stats = CallStats()
        self.events = CallEvents(self.stats.started)  # the console's timeline: what happened, when
        self.state = CallState(
            resumption=Resumption(stall_s=limits.live_stall_s, transparent=config.transparent_resumption),
            watchdog=StallWatchdog(turns.stall_timeout_s),
        )
        self.turns = turns
        self._meter: VoiceMeter | None = None
        self._use_turn_rules(config, barge_in or turns.barge_in)
        # The last messages of caller audio sent (at least ACTIVITY_PREROLL_FRAMES frames), with the frames'
        # numbers, for TURN_DETECTION=local to send again inside an activity.
        self._recent_audio: deque[tuple[bytes, list[int]]] = deque()
        self._recent_frames = 0
        self._chunks = CallerChunks.of_ms(
            limits.quiet_chunk_ms, config.vad_silence_ms, limits.speech_chunk_ms
        )
        assert self._chunks.quiet_frames <= self.state.resumption.max_frames  # a quiet chunk is kept whole
        self._stream_paused = False  # audioStreamEnd sent for the pause in progress
        self._line_deadline = Deadline()  # bounds every wait for the line's next event, one timer for all
        # Resample only where the line's rate is not Live's (a wideband line may need neither).
        rates = line.audio
        self._inbound = Resampler(rates.in_rate, input_rate) if rates.in_rate != input_rate else None
        self._outbound = (
            Resampler(LIVE_OUTPUT_RATE, rates.out_rate) if rates.out_rate != LIVE_OUTPUT_RATE else None
        )
        self._mulaw = rates.mulaw  # caller frames are kept for replay as mu-law (exact: they came as it)
        self._speech_end = SpeechEnd()  # for the response latency metric
        self._tool_tasks: dict[str, asyncio.Task[None]] = {}
        self._moved = False  # handed to another instance by the drain
        self._ended_outside = asyncio.Event()  # end_unmoved(): the bridge stops
        # The agent loop's wait for Live's next message, and why to switch if it runs out: the caller loop
        # brings it forward when the caller speaks to a connection that may have stalled.
        self._live_wait: asyncio.Timeout | None = None
        self._live_wait_reason = ""
        self._watched_at = 0.0  # the caller's sound the wait was last moved for
        # An outbound call: who answered (Twilio's AMD result, told by the app), and what came of it.
        self.outbound = outbound
        self.answering: Answering | None = None
        if outbound is not None:
            self.answering = Answering(
                outbound.machine, outbound.wait_s, time.monotonic(), has_message=bool(outbound.voicemail)
            )
        self._amd_result: tuple[str, int | None] | None = None
        self._amd_came = asyncio.Event()
        self._callee_spoke = False
        self._machine_action = ""
        self._amd_duration_ms: int | None = None

    @property
    def call_sid(self) -> str:
        return self.start.call_sid

    def _use_turn_rules(self, config: lp.LiveConfig, barge_in: str) -> None:
        """The agent's turn-taking: barge-in and turn detection as it says; the local detector runs only
        when one of them needs it."""
        rules = replace(
            self.turns,
            barge_in="local" if barge_in == "local" else "server",
            turn_detection="local" if config.turn_detection == "local" else "server",
            end_silence_s=config.vad_silence_ms / 1000,
        )
        self.turns = rules
        self.state.speech = CallerSpeech(rules)
        rate = self.line.audio.in_rate
        self._meter = VoiceMeter(rate) if rules.listens and rate in (8000, 16000) else None

    @property
    def _local_turns(self) -> bool:
        return self.turns.turn_detection == "local"

    @property
    def resumption_handle(self) -> str:
        return self.state.resumption.handle

    @property
    def between_turns(self) -> bool:
        """Nobody mid-turn and a resumable handle covers the conversation: the moment to move the call."""
        return self.live is not None and not self.state.resumption.switching and self.state.between_turns

    async def run(self) -> None:
        METRICS.active_calls.inc()
        try:
            await self._run()
        finally:
            METRICS.active_calls.dec()
            METRICS.calls.labels(outcome=self.stats.outcome.value).inc()
            METRICS.barge_in_guarded.inc(self.state.speech.guarded)
            METRICS.stall_recoveries.inc(self.state.watchdog.recoveries)
            self._log_summary()

    async def _run(self) -> None:
        structlog.contextvars.bind_contextvars(call_sid=self.start.call_sid, stream_sid=self.start.stream_sid)
        log.info("call_started", caller=self.start.caller, called=self.start.called)
        try:
            try:
                try:
                    async with asyncio.timeout(self.limits.live_setup_s):
                        self.live = await self._first_live()
                except TimeoutError:
                    raise LiveUnreachable(f"no Live session within {self.limits.live_setup_s:.0f}s") from None
                if self.greeting and not self.resumption_handle:  # a resumed conversation was greeted already
                    await self._ask_agent(self.greeting)
            except LiveError as exc:
                self.stats.outcome = live_failure(exc, opening=True)
                log.error("live_session_failed", error=str(exc), code=exc.code)
                return
            await self._bridge()
        finally:
            if self.live is not None:
                await self.live.close()
            if self.stats.outcome.is_failure and self.on_failure is not None:
                with contextlib.suppress(LineClosed):
                    await self.on_failure(self)
            await self.line.close()

    async def _first_live(self) -> LiveSession:
        """The agent for the number called, and its Live session: the one set up while the phone rang if
        there is one, so the greeting does not wait for a connect and setup round trip; but a call moved
        here by another instance (a deploy) resumes its own session instead, context and all."""
        # Was this call moved here by another instance? Only such a call has a handle to look up (a new call
        # never waits on the records store), and then the session pre-warmed while it rang here is not
        # waited for (a fresh session would not know the conversation).
        handle = await self.resume(self.call_sid) if self.start.moved and self.resume is not None else ""
        self.state.resumption.handle = handle
        prewarmed: LiveSession | None = None
        if self.prepare is not None:
            self.chosen = chosen = await self.prepare(self.start, not handle)
            self.config, self.greeting = chosen.agent.live, chosen.agent.greeting
            self.caps = self.config.caps
            self._use_turn_rules(self.config, chosen.agent.barge_in)
            self.state.resumption.transparent = self.config.transparent_resumption
            log.info("agent_chosen", agent=chosen.agent.name, prewarmed=chosen.live is not None)
            prewarmed = chosen.live
        if handle:
            try:
                live = await self._open_live(self.config, handle)
                log.info("live_session_resumed_from_another_instance")
                return live
            except LiveHandleRejected as exc:
                # Unknown or expired: the call goes on in a fresh session (the context is lost, not the call).
                log.warning("resumption_handle_rejected", reason=exc.reason)
                self.state.resumption.handle_rejected()
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
        # An outbound call also waits to know who answered; that task's end does not end the call.
        answer = None if self.answering is None else asyncio.create_task(self._who_answered())
        tasks = [
            asyncio.create_task(self._caller_to_agent(), name="caller_to_agent"),
            asyncio.create_task(self._agent_to_caller(), name="agent_to_caller"),
            asyncio.create_task(self._ended_outside.wait(), name="ended_from_outside"),  # end_unmoved()
        ]
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=self.limits.max_duration_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                self.stats.outcome = Outcome.MAX_DURATION
                log.warning("call_too_long", max_duration_s=self.limits.max_duration_s)
        finally:
            for task in tasks if answer is None else [*tasks, answer]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if answer is not None:
                await asyncio.gather(answer, return_exceptions=True)
            await self._cancel_tools(list(self._tool_tasks), reason="call_ended")
        for task in done:
            exc = task.exception()
            # Both loops can end in the same moment (the caller's `stop`, and a send that finds the line
            # gone): what ended the call first is its outcome.
            decided = self.stats.outcome is not Outcome.UNKNOWN
            if isinstance(exc, LiveError):
                log.error("live_session_ended", error=str(exc), code=exc.code)
                if not decided:
                    self.stats.outcome = live_failure(exc, opening=False)
            elif isinstance(exc, LineClosed) and not decided:
                self.stats.outcome = Outcome.CALLER_GONE
            elif exc is not None and not isinstance(exc, LineClosed):
                self.stats.outcome = Outcome.ERROR
                log.error("call_failed", exc_info=exc)

    # --- caller -> agent ---------------------------------------------------------------------------------

    async def _caller_to_agent(self) -> None:
        stats = self.stats
        while True:
            event = await self._next_line_event()
            if event is None:
                stats.outcome = Outcome.MEDIA_IDLE
                log.warning("no_media", idle_timeout_s=self.limits.idle_timeout_s)
                return
            if isinstance(event, CallerAudio):
                stats.frames_in += 1
                if self.answering is not None and not self.answering.sends_caller_audio:
                    continue  # a machine is recording: nobody there to hear (see gateway.call.answering)
                now = time.monotonic()
                heard = await self._caller_speech(event.pcm, now)
                loud = self._speech_end.frame(event.pcm)
                if loud:
                    self._callee_spoke = True
                    if self._meter is None and not self.state.playout.playing:
                        self.state.watchdog.caller_sound(now)  # no detector: the line's level says
                    self._watch_for_stall()
                self.events.caller_frame(now, heard.speaking if self._meter is not None else loud, loud)
                await self._send_caller_audio(event.pcm, loud)
                if heard.end and self._local_turns:
                    await self._activity_end()
            elif isinstance(event, Played):
                took, action = self.state.played(event.name, time.monotonic())
                self._log_transcripts(released_only=True)  # the agent's line, once heard
                if took is not None:
                    log.info("agent_turn_played", mark=event.name, playback_s=round(took, 3))
                    self.events.agent_played(event.name, time.monotonic())
                if action is not None and await self._carry_out(action):
                    return
            elif isinstance(event, Keypress):
                stats.dtmf += event.digit
                log.info("dtmf", digit=event.digit)
                self.events.dtmf(time.monotonic(), event.digit)
                await self._send_keypress(
                    f"[The caller pressed the {event.digit} key on their phone keypad.]"
                )
            elif isinstance(event, Ended):
                if self.live is not None and not self.state.resumption.switching:
                    with contextlib.suppress(LiveError):
                        await self._send_unsent()  # the last of a quiet: Live has all the caller said
                hung_up = Outcome.CALLER_HUNG_UP if self.outbound is None else Outcome.CALLEE_HUNG_UP
                stats.outcome = Outcome.MOVED if self._moved else hung_up
                log.info("line_ended", how=event.how)
                return
            else:
                log.warning("unexpected_line_event", kind=type(event).__name__)

    async def _next_line_event(self) -> LineEvent | None:
        """The line's next event; None when it has been silent for the idle timeout (a dead line). A pause in
        the caller's audio is told to Live (audioStreamEnd) where the reference says so: only with Live's
        automatic activity detection."""
        idle_s = self.limits.idle_timeout_s
        if not self._local_turns and not self._stream_paused and idle_s > AUDIO_PAUSE_S:
            try:
                return await self._line_deadline.wait(self.line.receive(), AUDIO_PAUSE_S)
            except TimeoutError:
                self._stream_paused = True
                if self.live is not None and not self.state.resumption.switching:
                    with contextlib.suppress(LiveError):
                        await self._send_unsent()  # the pause's audio first, then its end
                        await self.live.send(lp.audio_stream_end_message())
                idle_s -= AUDIO_PAUSE_S
        try:
            event = await self._line_deadline.wait(self.line.receive(), idle_s)
        except TimeoutError:
            return None
        if isinstance(event, CallerAudio):
            self._stream_paused = False
        return event

    async def _caller_speech(self, pcm: bytes, now: float) -> Heard:
        """The caller's frame through the gateway's own detector (`gateway.call.voice`, judged by
        `gateway.call.turns`): talking over the agent clears the line here, at once; the start of the
        caller's speech wakes the stall watchdog and, with TURN_DETECTION=local, opens Live's activity."""
        if self._meter is None:
            return NOTHING
        heard = hear(self._meter, self.state.speech, pcm, now)
        if self.state.caller_heard(heard, now):
            await self._clear_line(self.state.barged_in(now), source="local")
            self._log_transcripts()
            log.info("barge_in", turn=self.state.playout.turn, source="local")
        if heard.onset:
            self._watch_for_stall(now_armed=True)  # an answer is due: wake the agent loop for it
            if self._local_turns:
                await self._activity_start()
        return heard

    async def _activity_start(self) -> None:
        """TURN_DETECTION=local: the caller started speaking. Live discarded what it got of this speech
        before now (outside any activity), so the frames since just before the onset go again."""
        await self._send_activity(lp.activity_start_message())
        if self.live is None or self.state.resumption.switching:
            return
        try:
            for audio, seqs in list(self._recent_audio):
                index = await self.live.send_audio(audio, self.input_rate)
                for seq in seqs:  # sent again: only this copy is in an activity
                    self.state.resumption.frame_sent(index, seq)
        except LiveError:
            self.state.resumption.broke()

    async def _activity_end(self) -> None:
        """TURN_DETECTION=local: the caller stopped speaking. A chunk still held goes first: after the
        activity's end, Live would not count it as part of the turn."""
        live = self.live
        if live is not None and not self.state.resumption.switching:
            try:
                await self._send_unsent()
            except LiveError:
                if self.live is live:  # (a send on a connection already replaced breaks nothing)
                    self.state.resumption.broke()
                return
        await self._send_activity(lp.activity_end_message())

    async def _send_activity(self, message: str) -> None:
        if self.live is None or self.state.resumption.switching:
            return  # the new connection learns the caller's speech from the replay
        try:
            await self.live.send(message)
        except LiveError:
            self.state.resumption.broke()

    async def _send_caller_audio(self, pcm: bytes, sound: bool) -> None:
        """Keep the frame for replay and send it to Live: a few frames to a message while the caller may be
        speaking, more in a quiet (`gateway.call.caller_chunks`)."""
        resumption = self.state.resumption
        kept = pcm16_to_ulaw(pcm) if self._mulaw else pcm
        # The soft start of a word is below the speech threshold: it goes as speech too.
        sound = sound or audioop.max(pcm, 2) > QUIET_PEAK
        if not resumption.keep(kept):
            self._chunks.heard(sound)
            if not resumption.hold(kept):
                METRICS.frames_dropped.labels(direction="caller").inc()
            return
        if not self._chunks.send_now(sound, resumption.unsent):
            return
        live = self.live
        try:
            await self._send_unsent(pcm)
        except LiveError:
            # The connection broke under us; the agent loop is bringing it back, and its replay carries what
            # was kept (these frames too). A send that failed on a connection already replaced breaks nothing.
            if self.live is live:
                resumption.broke()

    async def _send_unsent(self, last: bytes | None = None) -> None:
        """Send the caller frames kept and not sent yet, as one message (`last`: the newest of them, as PCM,
        when the caller has it at hand). Raises LiveError."""
        resumption = self.state.resumption
        if not resumption.unsent:
            return
        assert self.live is not None
        frames = resumption.unsent_frames()
        if last is None:
            pcm = b"".join(self._kept_pcm(frame) for frame in frames)
        else:  # the newest frame as it came: only the ones held before it are decoded again
            pcm = b"".join([*(self._kept_pcm(frame) for frame in frames[:-1]), last])
        audio = self._to_live(pcm)
        seqs = resumption.unsent_seqs()  # before `unsent_sent` empties them
        index = await self.live.send_audio(audio, self.input_rate)
        resumption.unsent_sent(index)
        if self._local_turns:  # kept message by message, at least the pre-roll's frames
            self._keep_recent(audio, list(seqs))

    def _keep_recent(self, audio: bytes, seqs: list[int]) -> None:
        recent = self._recent_audio
        recent.append((audio, seqs))
        self._recent_frames += len(seqs)
        while self._recent_frames - len(recent[0][1]) >= ACTIVITY_PREROLL_FRAMES:
            self._recent_frames -= len(recent.popleft()[1])

    async def _send_keypress(self, text: str) -> None:
        resumption = self.state.resumption
        if resumption.keypress(text):  # else held: told once the new connection is up
            try:
                await self._send_unsent()  # the quiet before the key first, in order
                await self._ask_agent(text)
            except LiveConnectionLost:
                resumption.broke()  # the agent loop is bringing the connection back: tell it there
                resumption.keypress(text)

    def _kept_pcm(self, frame: bytes) -> bytes:
        """A frame kept for replay, as the PCM it was."""
        return ulaw_to_pcm16(frame) if self._mulaw else frame

    def _to_live(self, pcm: bytes) -> bytes:
        return pcm if self._inbound is None else self._inbound.process(pcm)

    # --- agent -> caller ---------------------------------------------------------------------------------

    async def _agent_to_caller(self) -> None:
        """Relay Live to the caller across as many Live connections as the call needs."""
        while True:
            reason = await self._relay()
            if reason is None:
                self.stats.outcome = Outcome.LIVE_CLOSED
                log.info("live_session_closed")
                return
            await self._switch_connection(reason)

    async def _relay(self) -> str | None:
        """Carry one connection's events to the caller. Returns why to switch connections, or None when
        Live ended the session. Raises LiveError when Live cannot go on."""
        assert self.live is not None
        live = self.live
        resumption = self.state.resumption
        heard_from_server = False
        while True:
            if self.state.switch_now():
                return "go_away"  # switch now, well before the deadline
            wait_s, self._live_wait_reason = self._next_wait(time.monotonic())
            try:
                async with asyncio.timeout(wait_s) as self._live_wait:
                    events = await live.receive()
            except TimeoutError:
                self._live_wait = None  # over: the caller loop must not move it any more
                then = self._live_wait_reason
                if then == "unanswered":
                    if await self._unstall(live):
                        return then
                    continue
                if then == "stalled":  # no word since the caller spoke: Live stopped reading or serving
                    log.warning("live_stalled", stall_s=resumption.stall_s)
                    live.abort()
                return then  # or the goAway deadline: the server may go quiet after goAway
            except LiveConnectionLost as exc:
                self._live_wait = None
                log.warning("live_connection_lost", error=str(exc), code=exc.code)
                if resumption.connection_lost(heard_from_server):
                    # Live accepts the setup but cannot serve the session: no configuration error, a loss.
                    raise LiveConnectionLost(
                        f"Live keeps dropping new connections: {exc}", exc.code, exc.reason
                    ) from None
                return "connection_lost"
            self._live_wait = None
            heard_from_server = True
            if events is None:
                return "go_away" if resumption.switch_by is not None else None
            for event in events:
                await self._on_live_event(event)
            resumption.heard(
                time.monotonic()
            )  # after its events: a handle in the first one is judged as such

    def _next_wait(self, now: float) -> tuple[float | None, str]:
        """How long the agent loop waits for Live's next message, and why it stops waiting: a goAway deadline
        or a stalled connection (`Resumption.wait`), or the caller's turn left unanswered (the watchdog)."""
        wait_s, reason = self.state.resumption.wait(now, self._speech_end.last_voice)
        stall_s = self.state.watchdog.wait(now, self.state.tools.busy)
        if stall_s is not None and (wait_s is None or stall_s < wait_s):
            return stall_s, "unanswered"
        return wait_s, reason

    async def _unstall(self, live: LiveSession) -> bool:
        """The caller's turn has gone unanswered for STALL_TIMEOUT_S: the watchdog's next step. True when it
        is a switch to a new connection (this one is aborted); raises when Live is given up on."""
        step = self.state.watchdog.take_step(time.monotonic(), self.state.tools.busy)
        if step is None:
            return False  # not due after all (the caller spoke again, or a tool started)
        log.warning("agent_stalled", step=step, stall_timeout_s=self.state.watchdog.timeout_s)
        self.events.stall(time.monotonic(), step)
        METRICS.stalls.labels(step=step).inc()
        if step == "nudge":
            with contextlib.suppress(LiveConnectionLost):  # a broken connection shows in the receive
                await self._ask_agent(STALL_NUDGE)
            return False
        if step == "switch":
            live.abort()
            return True
        raise LiveConnectionLost("the agent left the caller unanswered after a nudge and a new connection")

    def _watch_for_stall(self, now_armed: bool = False) -> None:
        """The caller made a sound: if Live has said nothing since, it must say something within the stall
        time of the caller's last sound; move the agent loop's wait to then (forward when it had none,
        later while the caller goes on talking: at most once a second, as this runs per loud frame, so the
        stall time counts from the caller's last sound give or take a second). `now_armed`: the caller's
        speech just began, so the stall watchdog waits for an answer: move the wait at once."""
        wait, sound_at = self._live_wait, self._speech_end.last_voice
        if not now_armed and (wait is None or sound_at is None or sound_at - self._watched_at < 1.0):
            return  # the common case, on most loud frames: nothing to compute
        if wait is None:
            return
        if sound_at is not None:
            self._watched_at = sound_at
        wait_s, reason = self._next_wait(time.monotonic())
        if wait_s is None:
            return
        when = asyncio.get_running_loop().time() + wait_s
        scheduled = wait.when()
        if scheduled is None or when < scheduled or when - scheduled > 1.0:
            self._live_wait_reason = reason
            wait.reschedule(when)

    async def _on_live_event(self, event: lp.LiveEvent, released: bool = False) -> None:
        if not released and self.answering is not None and self.answering.holds(event):
            return  # not for the line until it is known who answered (see `_who_answered`)
        state = self.state
        if isinstance(event, lp.AgentAudio):
            await self._play(event.pcm)
        elif isinstance(event, lp.Interrupted):
            await self._barge_in()
        elif isinstance(event, lp.TurnComplete):
            if event.reason and event.reason != "NEED_MORE_INPUT":
                # Live refused the turn (a blocked input, a rejected response, a malformed function call):
                # the caller heard nothing for it, which the operator should be able to see.
                log.warning("live_turn_refused", reason=event.reason)
            await self._end_agent_turn()
            state.live_turn_ended()
        elif isinstance(event, lp.GenerationComplete):
            # Live has generated the whole turn; on 3.x its turnComplete may wait for the playout. End the
            # turn on the line now: its mark follows its last audio (a hang-up after it is not held up), and
            # a caller talking over the rest of the playout is cleared here (no `interrupted` comes for it).
            await self._end_agent_turn()
        elif isinstance(event, lp.InterimInputTranscript):
            if state.caller_interim():
                # The earliest sign the caller talks over a finished reply still playing out: clear it now,
                # not a final transcript later.
                await self._clear_line(state.cleared(time.monotonic()), source="server")
                log.info("barge_in", turn=state.playout.turn, during="playout", source="interim_transcript")
        elif isinstance(event, lp.InputTranscript):
            if state.caller_transcript(event.text):
                # Live has finished this reply, so it sends no `interrupted`, but the line is still playing
                # it out: the caller is talking over it, so stop it here.
                await self._clear_line(state.cleared(time.monotonic()), source="server")
                log.info("barge_in", turn=state.playout.turn, during="playout", source="server")
        elif isinstance(event, lp.OutputTranscript):
            state.agent_transcript(event.text)
        elif isinstance(event, lp.Usage):
            self.stats.add_usage(event)
            METRICS.count_tokens(event.by_modality)
        elif isinstance(event, lp.ResumptionUpdate):
            state.handle_update(event.handle, event.resumable, time.monotonic(), event.consumed_index)
        elif isinstance(event, lp.ToolCall):
            await self._start_tools(event)
        elif isinstance(event, lp.ToolCallCancellation):
            await self._cancel_tools(list(event.ids), reason="cancelled_by_live")
        elif isinstance(event, lp.GoAway):
            state.resumption.go_away(event.time_left_s, time.monotonic())
            log.info("live_go_away", time_left_s=event.time_left_s)

    async def _switch_connection(self, reason: str) -> None:
        """Close the old connection, open a new one resuming from the latest handle, replay held audio."""
        began = time.monotonic()
        state = self.state
        # Everything said since the handle must reach the new connection; anything arriving meanwhile too.
        in_turn = state.begin_switch()
        old = self.live
        assert old is not None
        await old.close()  # first: the server rejects a resume while the old connection is open
        if in_turn:
            await self._end_agent_turn()  # that turn is over: its tail and mark go out, nothing waits for it
        try:
            async with asyncio.timeout(self.limits.live_setup_s * 2):  # a few attempts, never open-ended
                self.live = await self._connect_again()
        except TimeoutError:
            raise LiveUnreachable(f"Live not back within {self.limits.live_setup_s * 2:.0f}s") from None
        # TURN_DETECTION=local: Live takes audio only inside an activity, so the replay is one.
        marked = self._local_turns and bool(state.resumption.held)
        if marked:
            await self.live.send(lp.activity_start_message())
        # The replay, and frames held meanwhile, in order; in chunks as large as a quiet's (seconds of audio:
        # fewer sends make the switch shorter).
        while chunk := state.resumption.next_held_chunk(self._chunks.quiet_frames):
            pcm = b"".join(self._kept_pcm(frame) for frame, _ in chunk)
            index = await self.live.send_audio(self._to_live(pcm), self.input_rate)
            for _, seq in chunk:
                state.resumption.frame_sent(index, seq)
        if marked and not state.speech.speaking:  # else the caller's activityEnd closes it
            await self.live.send(lp.activity_end_message())
        for text in state.resumption.take_keys():
            await self._ask_agent(text)
        if reason == "unanswered":
            await self._ask_agent(STALL_NUDGE)  # the new connection is asked too
        took = time.monotonic() - began
        self.stats.switches.append(took)
        self.events.switch(began, reason, took)
        METRICS.live_switches.labels(reason=reason).inc()
        log.info("live_switched", reason=reason, took_s=round(took, 3), resumed=bool(self.resumption_handle))

    async def _connect_again(self) -> LiveSession:
        last: LiveError | None = None
        for delay in self.connect_retry_delays_s:
            await asyncio.sleep(delay)
            try:
                return await self._open_live(self.config, self.resumption_handle or None)
            except LiveConfigRejected:
                raise
            except LiveHandleRejected as exc:
                last = exc
                # The handle is unknown or expired: a fresh session loses the context, not the call.
                log.warning("resumption_handle_rejected", reason=exc.reason)
                self.state.resumption.handle_rejected()
            except LiveError as exc:
                last = exc
                log.warning("live_connect_failed", error=str(exc), code=exc.code)
        assert last is not None
        raise last

    async def _play(self, pcm: bytes) -> None:
        state = self.state
        if not state.agent_audio():
            self.stats.late_chunks_dropped += 1
            METRICS.frames_dropped.labels(direction="agent").inc()
            return
        out = pcm if self._outbound is None else self._outbound.process(pcm)
        if out:
            state.speech.agent_played(level_dbfs(out))  # its echo may come back from the caller's side
            seconds = len(out) / (2 * self.line.audio.out_rate)
            first = state.agent_audio_sent(seconds, time.monotonic())
            self.events.agent_audio(time.monotonic(), seconds, state.playout.turn, first)
            if first:
                turn = state.playout.turn
                if turn == 1:
                    METRICS.first_agent_audio.observe(time.monotonic() - self.stats.started)
                latency = self._speech_end.answered()
                if latency is not None and self.watcher is not None:
                    self.watcher.response(latency)
                self._log_transcripts("caller")  # the caller's turn is over once the agent answers
                log.debug("agent_audio_started", turn=turn)
                if self.answering is not None and self.answering.turn_started():
                    # The voicemail message is on the line: hang up once all of it has been heard.
                    self.state.ask(LineAction("hang_up"), "voicemail", time.monotonic())
            self.stats.frames_out += 1
            self.stats.bytes_out += len(out)
            await self.line.play(out)

    async def _barge_in(self) -> None:
        """Live says the caller talked over the agent: silence the line, drop the rest of the turn."""
        state = self.state
        if state.cut_off:  # the gateway's own barge-in was first: the line is clear already
            state.interrupted(time.monotonic())
            log.info("barge_in_confirmed", turn=state.playout.turn)
            return
        # The state first: a mark echoed while the clear is on its way proves nothing either.
        await self._clear_line(state.interrupted(time.monotonic()), source="server")
        self._log_transcripts()
        log.info("barge_in", turn=state.playout.turn, source="server")

    async def _clear_line(self, withdrawn: LineAction | None, source: str) -> None:
        """Empty the line's playout buffer now and forget what was queued (flushed marks echo too)."""
        await self.line.clear()
        if self._outbound is not None:
            self._outbound.reset()
        if withdrawn is not None:  # "wait, one more thing": the agent may ask again
            log.info("line_action_withdrawn", action=withdrawn.kind, reason="caller_talked_over_it")
        self.stats.barge_ins += 1
        self.events.barge_in(time.monotonic(), source)
        if source == "local":
            self.stats.barge_ins_local += 1
        else:
            self.stats.barge_ins_server += 1
        METRICS.barge_ins.labels(source=source).inc()

    async def _end_agent_turn(self) -> None:
        turn_mark = self.state.turn_complete(time.monotonic())
        if turn_mark is not None:
            # The resampler holds its last couple of milliseconds back; without this the end of every
            # reply is clipped.
            tail = b"" if self._outbound is None else self._outbound.flush()
            if tail:
                await self.line.play(tail)
            await self.line.mark(turn_mark)
        action_mark = self.state.turn_over(time.monotonic())  # only now: a hang-up follows the whole turn
        self._log_transcripts()
        if action_mark is not None:
            await self.line.mark(action_mark)

    # --- tools and line actions (hang up, transfer) -------------------------------------------------------

    async def _start_tools(self, event: lp.ToolCall) -> None:
        """Each call runs in its own task, so a slow HTTP tool never holds up the agent's audio."""
        if self.chosen is None:
            await self._refuse_tools(event)
            return
        self.state.watchdog.agent_answered()  # the model acts on the caller's turn
        for call in event.calls:
            self.events.tool_call(time.monotonic(), call.name)
            self.state.tools.started(call.id)
            self._tool_tasks[call.id] = asyncio.create_task(self._run_tool(call), name=f"tool-{call.name}")

    async def _run_tool(self, call: lp.FunctionCall) -> None:
        assert self.chosen is not None
        start = self.start
        ids = CallIds(start.call_sid, start.stream_sid, start.caller, start.called)
        try:
            result = await self.chosen.toolbox.run(self.chosen.agent, call, ids)
        except Exception:  # a bug, not a tool failure: the model still gets an answer, not silence
            log.exception("tool_crashed", tool=call.name)
            result = ToolResult({"error": f"{call.name} failed inside the gateway"})
        self._tool_tasks.pop(call.id, None)
        self.state.tools.answered(call.id)
        if result.action is not None:
            mark = self.state.ask(result.action, call.id, time.monotonic())
            if mark is not None:  # no turn in progress: only the audio already queued is waited for
                with contextlib.suppress(LineClosed):  # the caller is gone: nothing left to hang up or move
                    await self.line.mark(mark)
        response = function_response(self.chosen.agent, call, result.response)
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
        withdrawn = self.state.tools.cancelled(ids)
        if withdrawn is not None:
            log.info("line_action_withdrawn", action=withdrawn.kind, reason=reason)
        if tasks:
            log.info("tool_calls_cancelled", ids=ids, reason=reason)

    async def _carry_out(self, action: LineAction) -> bool:
        """Hang up or transfer now. True when the call is over for this line."""
        self.events.line_action(time.monotonic(), action.kind, action.target)
        if action.kind == "hang_up":
            if self.answering is not None and self.answering.message == "playing":
                self._machine_action = "message_left"
            self.stats.outcome = Outcome.AGENT_HUNG_UP
            log.info("agent_hung_up")
            return True  # closing the line hangs up
        try:
            moved = await self.line.transfer(action.target)
        except Exception as exc:  # the carrier refused, a network error: the caller is still on the line
            log.error("transfer_failed", target=action.target, error=str(exc))
            with contextlib.suppress(LiveError):
                await self._ask_agent(
                    f"[The transfer to {action.target} failed. Tell the caller, and offer another way.]"
                )
            return False
        # The carrier now connects the caller elsewhere and ends this line: that end is the transfer.
        self.stats.outcome = Outcome.TRANSFERRED if moved else Outcome.CALLER_GONE
        log.info("call_transferred" if moved else "transfer_after_call_ended", target=action.target)
        return True

    # --- who answered an outbound call ---------------------------------------------------------------------

    def answered_by(self, answered_by: str, duration_ms: int | None = None) -> None:
        """Twilio's answering-machine detection result for this call (its AMD callback, or one that came
        before the stream did). Only the first counts."""
        if self.answering is not None and self._amd_result is None:
            self._amd_result = (answered_by, duration_ms)
            self._amd_came.set()

    async def _who_answered(self) -> None:
        """Wait for the AMD result (or its bound), then carry out what `Answering` decides: play what the
        agent has said meanwhile, or hang up, or leave the voicemail message."""
        answering, role = self.answering, self.outbound
        assert answering is not None and role is not None
        # The voicemail's own Live connection is opened while the detector listens, so that its set-up
        # round trip is not heard after the beep; closed unused if a person answers.
        message_live = None
        if answering.policy == "leave_message" and answering.has_message:
            message_live = asyncio.create_task(self._open_message_live(), name="voicemail_live")
        try:
            await self._decide_who_answered(answering, role, message_live)
        finally:
            if message_live is not None:  # unused (a person), or used: closed either way
                message_live.cancel()
                await asyncio.gather(message_live, return_exceptions=True)
                if not message_live.cancelled() and message_live.exception() is None:
                    await message_live.result().close()

    async def _open_message_live(self) -> LiveSession:
        config = dataclasses.replace(self.config, tools=())  # a message to say, nothing to call
        async with asyncio.timeout(self.limits.live_setup_s):
            return await self._open_live(config, None)

    async def _decide_who_answered(
        self, answering: Answering, role: OutboundRole, message_live: asyncio.Task[LiveSession] | None
    ) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, answering.deadline - time.monotonic())):
                await self._amd_came.wait()
        now = time.monotonic()
        if self._amd_result is not None:
            answered_by, duration_ms = self._amd_result
            decision = answering.result(answered_by, now, callee_spoke=self._callee_spoke)
        else:
            duration_ms = None
            decision = answering.timed_out(now, callee_spoke=self._callee_spoke)
        if decision is None:
            return
        self._amd_duration_ms = duration_ms
        METRICS.answered_by.labels(verdict=decision.verdict).inc()
        log.info(
            "who_answered",
            verdict=decision.verdict,
            answered_by=decision.answered_by,
            wait_ms=answering.wait_ms,
            held_events=len(answering.held),
        )
        if decision.hang_up:
            self._machine_action = "hung_up"
            self._end_from_here(Outcome.AGENT_HUNG_UP)
            return
        try:
            if decision.leave_message and message_live is not None:
                await self._leave_message(role.voicemail, message_live)
                return
            while (event := answering.next_released()) is not None:
                await self._on_live_event(event, released=True)
            if decision.greet and role.opening:
                await self._ask_agent(speak(role.opening))
        except LiveError as exc:  # the agent loop is bringing the connection back, or ending the call
            log.warning("who_answered_not_carried_out", error=str(exc))

    async def _leave_message(self, text: str, opening: asyncio.Task[LiveSession]) -> None:
        """Say the voicemail text through a Live connection of its own (opened while the detector listened):
        the call's session heard the greeting and the beep and may still answer them (see
        gateway.call.answering), this one heard nothing but the text to say. Its audio goes to the line like
        any turn's; the hang-up waits for the mark after it. If it cannot be said, the call hangs up."""
        try:
            live = await opening
        except (LiveError, TimeoutError) as exc:
            log.error("voicemail_not_left", error=str(exc) or "no Live session in time")
            self._end_from_here(Outcome.AGENT_HUNG_UP)
            return
        try:
            caps = lp.model_capabilities(self.config.model)
            turn = lp.client_turn_message if caps.client_content_mid_session else lp.text_input_message
            await live.send(turn(speak(text)))
            while (events := await live.receive()) is not None:
                for event in events:
                    await self._on_live_event(event, released=True)
                    if isinstance(event, lp.TurnComplete):
                        return  # the message and its hang-up mark are on the line
        except LiveError as exc:
            log.error("voicemail_not_left", error=str(exc))
            self._end_from_here(Outcome.AGENT_HUNG_UP)
        finally:
            await live.close()

    def hang_up_by_operator(self) -> None:
        """Someone hung this call up from the console: the line closes now (no apology: a person decided)."""
        if self.stats.outcome is Outcome.UNKNOWN:
            self.events.line_action(time.monotonic(), "operator_hang_up")
            log.info("operator_hung_up")
            self._end_from_here(Outcome.OPERATOR_HUNG_UP)

    def _end_from_here(self, outcome: Outcome) -> None:
        """End the call now (the bridge stops and the line closes), with this outcome."""
        self.stats.outcome = outcome
        self._ended_outside.set()

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

    async def play_and_wait(self, pcm: bytes, timeout_s: float) -> None:
        """Play audio (PCM16LE at the line's rate) to the caller and return once the line says it has
        played (or the caller is gone)."""
        await self.line.clear()
        await self.line.play(pcm)
        await self.line.mark("final")
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    event = await self.line.receive()
                    if isinstance(event, Ended) or (isinstance(event, Played) and event.name == "final"):
                        return
        except TimeoutError:
            log.warning("final_audio_not_confirmed", timeout_s=timeout_s)

    # --- transcripts and the end -------------------------------------------------------------------------

    def _log_transcripts(self, *roles: str, released_only: bool = False) -> None:
        transcript = self.state.transcript
        for role, text in transcript.flush_released() if released_only else transcript.flush(*roles):
            log.info("transcript", role=role, chars=len(text))  # the words go to the records, never a log
            if self.on_transcript is not None:
                self.on_transcript(self.call_sid, role, text)
            if self.watcher is not None:
                self.watcher.transcript(role, text)

    def _agent_named(self) -> str:
        """Who answered, as the record names it: the Live model, after the agent's name when AGENTS_FILE
        chose one ("support (gemini-...)"), so the console's agent filter finds either."""
        if self.chosen is None:
            return self.config.model
        agent = self.chosen.agent
        return agent.live.model if agent.name == "default" else f"{agent.name} ({agent.live.model})"

    def summary(self) -> CallSummary:
        """What the call's record keeps (built once, when the call has ended)."""
        s, start = self.stats, self.start
        return CallSummary(
            call_sid=self.call_sid,
            stream_sid=start.stream_sid,
            account_sid=start.account_sid,
            caller=start.caller,
            called=start.called,
            agent=self._agent_named(),
            started_at=s.started_at,
            ended_at=s.started_at + timedelta(seconds=time.monotonic() - s.started),
            outcome=s.outcome,
            prompt_tokens=s.prompt_tokens,
            response_tokens=s.response_tokens,
            total_tokens=s.total_tokens,
            tokens_by_modality=dict(s.tokens_by_modality),
            switches=len(s.switches),
            resumption_handle=self.resumption_handle,
            **self._outbound_summary(),
            barge_ins_local=s.barge_ins_local,
            barge_ins_server=s.barge_ins_server,
            barge_ins_guarded=self.state.speech.guarded,
            stalls=self.state.watchdog.stalls,
            stall_recoveries=self.state.watchdog.recoveries,
            carrier=start.carrier,
            events=tuple(self.events.finish(time.monotonic())),
        )

    def _outbound_summary(self) -> dict[str, Any]:
        answering = self.answering
        if answering is None:
            return {}
        action = self._machine_action
        if answering.verdict == "machine" and not action:
            action = "message_not_finished"  # the line ended before the message had been heard
        return {
            "direction": "outbound",
            "answered_by": answering.answered_by,
            "amd_wait_ms": answering.wait_ms,
            "amd_duration_ms": self._amd_duration_ms,
            "machine_action": action,
        }

    def _log_summary(self) -> None:
        # The call is over: a line still held was heard as far as its audio had played (a caller who hung up
        # mid-reply, an apology that cleared the rest).
        self.state.transcript.cut_held(time.monotonic())
        self._log_transcripts()
        s = self.stats
        log.info(
            "call_ended",
            outcome=s.outcome.value,
            duration_s=round(time.monotonic() - s.started, 2),
            frames_in=s.frames_in,
            frames_out=s.frames_out,
            barge_ins=s.barge_ins,
            barge_ins_local=s.barge_ins_local,
            barge_ins_server=s.barge_ins_server,
            barge_ins_guarded=self.state.speech.guarded,
            stalls=self.state.watchdog.stalls,
            stall_recoveries=self.state.watchdog.recoveries,
            late_chunks_dropped=s.late_chunks_dropped,
            caller_frames_dropped=self.state.resumption.dropped,
            live_switches=len(s.switches),
            longest_switch_s=round(max(s.switches, default=0.0), 3),
            prompt_tokens=s.prompt_tokens,
            response_tokens=s.response_tokens,
            total_tokens=s.total_tokens,
            tokens_by_modality=s.tokens_by_modality,
            bad_line_messages=self.line.bad_messages,
        )
        structlog.contextvars.unbind_contextvars("call_sid", "stream_sid")

    # --- moved, or ended, by the drain (gateway.drain) ----------------------------------------------------

    def moved(self) -> None:
        """The drain handed this call to another instance: the end of its line here is the move."""
        self._moved = True

    def end_unmoved(self) -> None:
        """A drain could not move this call to another instance: end it as a call that Live failed ends,
        with the failure message before the line closes, rather than leave the shutdown to cut it off.
        Nothing to do if the call is already ending by itself."""
        if self.stats.outcome is Outcome.UNKNOWN:
            self.stats.outcome = Outcome.NOT_MOVED
        self._ended_outside.set()
