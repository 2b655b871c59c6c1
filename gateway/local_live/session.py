"""One Live session's behaviour after setup: listen, transcribe, reply, get interrupted, call tools.

Async and I/O-free apart from the ``send`` callable it is given, so the server owns the socket. Blocking
work (VAD, recognition, synthesis) runs in the server's thread pool; one session's input is processed in
order by its own input task.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog

from . import protocol as p
from . import tts
from .agent import HistoryTurn, LocalAgent, Reply
from .asr import RecognizerPool
from .consumed import ConsumedLedger
from .inbound import PREROLL_MS, Inbound, InboundEvent, SpeechEnded, SpeechStarted
from .options import LocalLiveOptions

Send = Callable[[dict[str, Any]], Awaitable[None]]
_BATCH = 64  # input items handed to one thread call at most


@dataclass(slots=True)
class _ReplyState:
    text: str
    sentences: list[str]
    audio_s: float = 0.0  # audio sent so far
    spoken: list[str] = field(default_factory=list)  # sentences whose audio was completely sent
    current: str = ""  # sentence being sent
    current_total_s: float = 0.0
    current_sent_s: float = 0.0
    finishing: bool = False  # turnComplete is on its way: too late to interrupt

    def spoken_text(self) -> str:
        """What the caller could have heard: whole sentences plus the sent share of the current one."""
        parts = list(self.spoken)
        if self.current and self.current_total_s > 0:
            words = self.current.split()
            n = int(len(words) * min(1.0, self.current_sent_s / self.current_total_s))
            if n:
                parts.append(" ".join(words[:n]) + "...")
        return " ".join(parts)


class Session:
    """One set-up Live connection of the local backend: takes the client's messages and sends what the service
    would (transcripts, reply audio, turn events, tool calls, resumption updates)."""

    def __init__(
        self,
        cfg: p.SessionConfig,
        send: Send,
        *,
        pool: RecognizerPool,
        executor: Executor,
        options: LocalLiveOptions,
        history: list[HistoryTurn],
        on_turn_boundary: Callable[[list[HistoryTurn]], str | None],
        log: Any = None,
    ) -> None:
        self.cfg = cfg
        self.history = history
        self._send = send
        self._executor = executor
        self._options = options
        self._on_turn_boundary = on_turn_boundary
        self._log = log or structlog.get_logger("gateway.local_live")
        tools = {f.name: f.parameters for f in cfg.functions if f.name != "end_call"}
        can_end_call = any(f.name == "end_call" for f in cfg.functions)
        self.agent = LocalAgent(
            can_end_call=can_end_call, proactive=cfg.proactive_audio, tools=tools, clock=options.clock
        )
        self._inbound = Inbound(cfg.vad, pool)
        self._inbound_lock = threading.Lock()  # a cancelled input task may leave its thread running
        self._queue: asyncio.Queue[tuple[int, p.ClientEvent]] = asyncio.Queue()
        # Transparent resumption: the server sets `message_index` before each `handle` (the setup is 0).
        self.message_index = 0
        self._ledger = ConsumedLedger(PREROLL_MS / 1000)
        self._reply_task: asyncio.Task[None] | None = None
        self._reply_state: _ReplyState | None = None
        self._pending_tools: dict[str, str] = {}
        self._tool_responses: dict[str, Any] = {}
        self._tools_answered = asyncio.Event()
        # NON_BLOCKING calls: the turn went on without them; each answer is spoken per its scheduling.
        self._behaviors = {f.name: f.behavior for f in cfg.functions}
        self._async_tools: dict[str, str] = {}
        self._answer_tasks: set[asyncio.Task[None]] = set()
        self._saw_realtime_input = False
        self._seeding = cfg.initial_history_in_client_content and not history  # a resumed session has its own
        self._closed = False
        self._input_task = asyncio.create_task(self._input_loop(), name="local-live-input")

    # -- client events -----------------------------------------------------------------------------------

    async def handle(self, event: p.ClientEvent) -> None:
        if isinstance(event, p.ClientContent):
            await self._client_content(event)
        elif isinstance(event, p.ToolResponse):
            for response in event.responses:
                if (name := self._async_tools.pop(response.id, None)) is not None:
                    self._answer_later(name, response)
                elif self._pending_tools.pop(response.id, None) is not None:
                    self._tool_responses[response.id] = response.response
            if not self._pending_tools:
                self._tools_answered.set()
        else:
            self._saw_realtime_input = True
            self._queue.put_nowait((self.message_index, event))

    async def _client_content(self, event: p.ClientContent) -> None:
        # historyConfig.initialHistoryInClientContent: until the first turnComplete (and before any realtime
        # input), clientContent is history. It may end with the model's turn, and it starts no reply.
        seeding = self._seeding and not self._saw_realtime_input
        if not self.cfg.model.client_content_mid_session and not seeding:
            raise p.ProtocolError(
                p.CLOSE_INVALID,
                f"client_content is only accepted to seed the initial history on {self.cfg.model.name}.",
            )
        for turn in event.turns:
            role = "model" if turn.role == "model" else "user"
            self.history.append(HistoryTurn(role, turn.text, source="content"))
        if seeding:
            self._seeding = not event.turn_complete
            return
        if event.turn_complete:
            await self._interrupt()
            user = [t for t in event.turns if t.role != "model"]
            text = user[-1].text if user else ""
            reply = self.agent.respond(text, self.history[: -len(event.turns)], source="content")
            if reply is not None:
                self._start_reply(reply)

    # -- input path -----------------------------------------------------------------------------------------

    def _process(self, batch: list[tuple[int, p.ClientEvent]]) -> list[InboundEvent | p.TextIn]:
        """Runs in a worker thread: the session's audio through VAD and recognition, in order."""
        out: list[InboundEvent | p.TextIn] = []
        with self._inbound_lock:
            if self._closed:
                return out
            for index, event in batch:  # one by one, to note which message each speech event came from
                before_s, first = self._inbound.audio_in_s, len(out)
                self._process_locked([event], out)
                if any(isinstance(e, SpeechStarted) for e in out[first:]):
                    self._ledger.speech_started(before_s)
                self._ledger.processed(index, self._inbound.audio_in_s)
        return out

    def _process_locked(self, batch: list[p.ClientEvent], out: list[InboundEvent | p.TextIn]) -> None:
        for event in batch:
            if isinstance(event, p.AudioIn):
                out.extend(self._inbound.audio(event.pcm, event.rate))
            elif isinstance(event, p.ActivityStart):
                out.extend(self._inbound.activity_start())
            elif isinstance(event, p.ActivityEnd):
                out.extend(self._inbound.activity_end())
            elif isinstance(event, p.AudioStreamEnd):
                out.extend(self._inbound.stream_end())
            elif isinstance(event, p.TextIn):
                out.append(event)

    async def _input_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < _BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                for result in await loop.run_in_executor(self._executor, self._process, batch):
                    await self._on_input(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("local_live.input_failed")

    async def _on_input(self, event: InboundEvent | p.TextIn) -> None:
        if isinstance(event, SpeechStarted):
            self._log.debug("local_live.speech_started")
            if self.cfg.vad.interrupts:
                await self._interrupt()
            return
        if isinstance(event, SpeechEnded):
            self._log.info("local_live.speech_ended", text=event.text, audio_s=round(event.audio_s, 2))
            if event.text and self.cfg.input_transcription:
                await self._send(p.input_transcription(event.text))
            self._ledger.speech_ended()  # in the history from here on (before any handle below)
            await self._user_turn(event.text, event.audio_s, "audio")
            return
        if not event.text.strip():
            await self._nudged()
            return
        await self._interrupt()  # new text input supersedes the reply in progress
        await self._user_turn(event.text, 0.0, "text")

    async def _nudged(self) -> None:
        """A blank `realtimeInput.text`: clients send one after seeding history, to have the model take its
        turn. It is no new turn: a reply under way goes on (the opening turn is not cut off), and with none
        the model answers the conversation as it stands (the seeded user turn, if it ends with one)."""
        if self._reply_task is not None and not self._reply_task.done():
            return
        if self.history and self.history[-1].role == "user":
            reply = self.agent.respond(self.history[-1].text, self.history[:-1], source="content")
        else:
            reply = self.agent.respond("", self.history, source="text")
        if reply is not None:
            self._start_reply(reply)

    async def _user_turn(self, text: str, audio_s: float, source: str) -> None:
        previous = list(self.history)
        self.history.append(HistoryTurn("user", text, audio_s, source))
        reply = self.agent.respond(text, previous, source=source)
        if reply is not None:
            self._start_reply(reply)
        elif self.cfg.resumption and (self._reply_task is None or self._reply_task.done()):
            # The state changed with no reply to wait for (proactive audio ignored it): a fresh handle now,
            # as the service gives, so a resume does not lose this turn.
            await self._send(self._resumption_update(self._on_turn_boundary(self.history)))

    # -- replies --------------------------------------------------------------------------------------------

    def _start_reply(self, reply: Reply) -> None:
        previous = self._reply_task
        state = _ReplyState(reply.text, tts.sentences(reply.text))
        self._reply_state = state
        self._reply_task = asyncio.create_task(
            self._run_reply(reply, state, previous), name="local-live-reply"
        )

    async def _run_reply(self, reply: Reply, state: _ReplyState, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            # Only without barge-in (NO_INTERRUPTION) can a reply still be running: answer after it.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(previous)
        self._reply_state = state
        loop = asyncio.get_running_loop()
        opts = self._options
        try:
            if self.cfg.resumption:
                await self._send(p.resumption_update(None))  # not resumable while generating
            start = loop.time()
            await self._speak(state.sentences, state, start)
            if reply.tool and self._behaviors.get(reply.tool) == "NON_BLOCKING":
                # The conversation does not wait: the call goes out and the turn ends ("let me check"); the
                # answer is spoken when it comes (see `_answer_later`).
                call_id = f"call-{uuid.uuid4().hex[:16]}"
                self._async_tools[call_id] = reply.tool
                await self._send(p.tool_call([(call_id, reply.tool, reply.args)]))
            elif reply.tool:
                # The service asks for the call mid-turn and finishes the turn once it is answered.
                call_id = f"call-{uuid.uuid4().hex[:16]}"
                self._pending_tools[call_id] = reply.tool
                self._tools_answered.clear()
                await self._send(p.tool_call([(call_id, reply.tool, reply.args)]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._tools_answered.wait(), opts.tool_response_timeout_s)
                self._pending_tools.clear()
                response = self._tool_responses.pop(call_id, None)
                if response is not None and _answered_aloud(reply.tool, response):
                    follow_up = self.agent.after_tool(reply.tool, response)
                    state.text += " " + follow_up
                    await self._speak(tts.sentences(follow_up), state, start)
            await self._send(p.generation_complete())
            state.finishing = True
            await self._finish_turn(state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection went away mid-reply, most likely
            self._log.debug("local_live.reply_aborted", error=repr(exc))

    def _answer_later(self, name: str, response: p.FunctionResponse) -> None:
        task = asyncio.create_task(self._answer(name, response), name="local-live-async-answer")
        self._answer_tasks.add(task)
        task.add_done_callback(self._answer_tasks.discard)

    async def _answer(self, name: str, response: p.FunctionResponse) -> None:
        """A NON_BLOCKING call's answer, as its `scheduling` asks: SILENT only adds it to the context,
        WHEN_IDLE (the default) waits for the reply in progress to end, INTERRUPT cuts it off."""
        scheduling = response.scheduling or "WHEN_IDLE"
        self._log.info("local_live.async_tool_answered", tool=name, scheduling=scheduling)
        if scheduling == "SILENT" or not _answered_aloud(name, response.response):
            self.history.append(HistoryTurn("user", f"[{name} answered]", 0.0, "tool"))
            return
        if scheduling == "INTERRUPT":
            await self._interrupt()
        else:
            while self._reply_task is not None and not self._reply_task.done():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.shield(self._reply_task)
        self._start_reply(Reply(self.agent.after_tool(name, response.response)))

    async def _speak(self, sentences: list[str], state: _ReplyState, start: float) -> None:
        loop = asyncio.get_running_loop()
        opts = self._options
        for sentence in sentences:
            state.current, state.current_sent_s = sentence, 0.0
            if self.cfg.modality == "TEXT":
                await self._send(p.text_part(sentence + " "))
                state.spoken.append(sentence)
                continue
            synth = partial(
                tts.synthesize, sentence, rate=p.OUTPUT_RATE, voice_name=self.cfg.voice_name,
                language=self.cfg.language_code, wpm=opts.speaking_rate_wpm,
            )  # fmt: skip
            pcm = await loop.run_in_executor(self._executor, synth)
            state.current_total_s = len(pcm) / (2 * p.OUTPUT_RATE)
            if self.cfg.output_transcription:
                await self._send(p.output_transcription(sentence + " "))
            step = max(2, int(p.OUTPUT_RATE * opts.chunk_ms / 1000) * 2)
            for i in range(0, len(pcm), step):
                # Run ahead of real time by audio_lead_s, as the service does, but no further, so
                # that a caller talking over a long reply still interrupts it.
                delay = start + state.audio_s - opts.audio_lead_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                chunk = pcm[i : i + step]
                await self._send(p.audio_chunk(chunk))
                state.audio_s += len(chunk) / (2 * p.OUTPUT_RATE)
                state.current_sent_s += len(chunk) / (2 * p.OUTPUT_RATE)
            state.spoken.append(sentence)
            state.current = ""

    async def _finish_turn(self, state: _ReplyState) -> None:
        spoken = state.spoken_text()
        self.history.append(HistoryTurn("model", spoken, state.audio_s, "audio"))
        await self._send(p.turn_complete(self._usage(state)))
        self._log.info("local_live.turn_complete", reply=spoken, audio_s=round(state.audio_s, 2))
        if self.cfg.resumption:
            handle = self._on_turn_boundary(self.history)
            await self._send(self._resumption_update(handle))

    def _resumption_update(self, handle: str | None) -> dict[str, Any]:
        consumed = self._ledger.consumed(self._inbound.audio_in_s) if self.cfg.transparent else None
        return p.resumption_update(handle, consumed)

    async def _interrupt(self) -> None:
        task, state = self._reply_task, self._reply_state
        if task is None or task.done() or state is None:
            return
        if state.finishing:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(task)
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        self._log.info("local_live.interrupted", heard=state.spoken_text())
        await self._send(p.interrupted())
        if self._pending_tools:
            await self._send(p.tool_call_cancellation(list(self._pending_tools)))
            self._pending_tools.clear()
        await self._finish_turn(state)

    def _usage(self, state: _ReplyState) -> dict[str, Any]:
        """Honest token counts: the context this turn was answered from, and what was sent."""
        prompt_audio = prompt_text = 0.0
        prompt_text += p.text_tokens(self.cfg.system_instruction)
        for turn in self.history[:-1]:  # the last entry is this reply
            if turn.audio_s > 0:
                prompt_audio += turn.audio_s * p.AUDIO_TOKENS_PER_S
            else:
                prompt_text += p.text_tokens(turn.text)
        if self.cfg.modality == "TEXT":
            return p.usage(round(prompt_audio), round(prompt_text), 0, p.text_tokens(state.spoken_text()))
        return p.usage(
            round(prompt_audio), round(prompt_text), round(state.audio_s * p.AUDIO_TOKENS_PER_S), 0
        )

    # -- lifetime -------------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._input_task, self._reply_task, *self._answer_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # The inbound path may still be inside a worker thread; release its decoder there, in order.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_inbound)

    def _close_inbound(self) -> None:
        with self._inbound_lock:
            self._inbound.close()


def _answered_aloud(tool: str, response: object) -> bool:
    """Whether the agent speaks a tool's answer: a hang-up or a transfer that went ahead needs no words (the
    goodbye or the "I will transfer you" came before it), but one that failed does, or the caller is left in
    silence."""
    failed = isinstance(response, dict) and "error" in response
    return failed or tool not in ("end_call", "transfer_call")
