"""Caller simulator: dial the gateway the way Twilio does and measure what the caller experiences.

One call = the voice webhook (signed like Twilio), then a Media Stream WebSocket that carries the caller's
audio as real-time 20 ms mu-law frames; or the same in another carrier's words (`place_call(dialect=...)`,
`gateway call --carrier`: gateway.devtools.dialects, e.g. Telnyx's TeXML and L16 at 16 kHz), at that
carrier's rate. Audio the gateway sends back goes through a model of the carrier's playout buffer (drained
in real time, ``mark`` echoed once the audio before it has played, ``clear`` flushes), so
``CallResult.heard`` is what a caller would actually have heard, on the same timeline as ``sent``.

Used by the end-to-end tests, by ``gateway demo``, by ``gateway call`` and by the load harness
(``gateway load``), which watches its calls through a ``CallObserver`` and runs them with ``record=False``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from gateway.audio import resample_block
from gateway.config import read_environment
from gateway.devtools.dialects import (
    SIGNING_VARIABLES,
    Cleared,
    Dialect,
    DialectError,
    DialectStream,
    Heard,
    MarkSent,
    dialects,
)
from gateway.devtools.dialects.twilio import TwilioDialect, http_to_ws
from gateway.devtools.dialects.twilio import connect_stream as _connect_stream
from gateway.devtools.wavfile import load_caller_wav, load_wav, write_stereo_wav, write_wav

__all__ = [
    "CLEAR_BOUND_S",
    "MIN_TURN_GAP_S",
    "AgentSpeech",
    "CallObserver",
    "CallResult",
    "CallScript",
    "CallerLine",
    "Event",
    "Overlap",
    "PlayoutTracker",
    "SimulatorError",
    "Turn",
    "add_call_arguments",
    "add_signing_arguments",
    "agent_speech",
    "caller_lines",
    "describe_overlap",
    "load_wav",
    "overlaps",
    "pacing",
    "place_call",
    "run_call_command",
    "segment_speech",
    "signing_from_args",
    "summarize",
    "write_stereo_wav",
    "write_wav",
]

RATE = 8000
FRAME_S = 0.020
FRAME_SAMPLES = 160  # one Twilio media message: 20 ms of 8 kHz mu-law
FRAME_PCM_BYTES = FRAME_SAMPLES * 2
LATE_S = 0.005  # a frame sent more than this after its deadline counts as late
RESPONSE_GAP_S = 0.3  # media arriving after a pause this long starts a new agent answer
SILENT_PCM_FRAME = bytes(FRAME_PCM_BYTES)


class SimulatorError(RuntimeError):
    """The call could not be set up: webhook refused, no <Connect><Stream> in the TwiML, handshake refused."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class CallScript:
    """What the simulated caller does: the audio it says, silence around it, keys it presses, and whether it
    hangs up."""

    audio: bytes  # caller audio, PCM16LE mono at `rate` (load_wav() reads any WAV into this, at 8 kHz)
    leading_silence_s: float = 0.0
    trailing_silence_s: float = 3.0  # silence streamed after the audio, before `stop`
    dtmf: list[tuple[float, str]] = field(default_factory=list)  # (seconds from stream start, digit)
    hang_up: bool = True  # send `stop` and close at the end; False = wait for the gateway to close
    # Once its audio is over, the caller hangs up as soon as this says so (asked every 20 ms), at the latest
    # after trailing_silence_s: a test waits for what it expects, not for the longest it could take.
    hang_up_when: Callable[[], bool] | None = None
    max_duration_s: float = 600.0  # safety net for hang_up=False: the caller gives up after this long
    # The agent's audio coming back on the caller's side (a line's echo), this many dB below what played,
    # this long after it played (None: no echo).
    echo_db: float | None = None
    echo_delay_s: float = 0.12
    rate: int = 8000  # of `audio`: resampled to the carrier's rate where that differs


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened on the call; t is seconds since the `start` message (0 for what came before).

    kinds sent by the caller: webhook, connected, start, dtmf, mark_echo, stop;
    received from the gateway: media, mark, clear, bad_message, unexpected;
    local observations: speech_start, speech_end, barge_in, timeout, closed.
    """

    t: float
    kind: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Turn:
    """One caller utterance and the agent's answer to it (None: no answer before the caller spoke again)."""

    index: int
    speech_start: float  # seconds since stream start
    speech_end: float
    response_latency: float | None  # end of caller speech -> first agent media of a new answer received
    playout_latency: float | None  # end of caller speech -> that answer starts playing
    agent_audio_s: float  # agent audio heard between the end of this utterance and the start of the next


@dataclass
class CallResult:
    """What happened on a simulated call: both sides' audio on one timeline, events, turns with their
    latencies, barge-ins, marks, and how the stream closed."""

    call_sid: str
    stream_sid: str
    twiml: str
    stream_url: str
    custom_parameters: dict[str, str]
    heard: bytes  # PCM16LE at `rate` of what was played to the caller, one 20 ms frame per tick
    sent: bytes  # PCM16LE at `rate` of what the caller sent, same timeline as heard
    events: list[Event]
    turns: list[Turn]
    barge_ins: list[float]  # caller started over agent audio -> `clear` received (s)
    unanswered_barge_ins: list[float]  # stream times of barge-ins that never got a `clear`
    mark_round_trips: list[float]  # mark received -> echoed (s): the playback delay
    close_code: int | None
    closed_by: Literal["caller", "gateway"] | None
    media_frames_sent: int
    media_frames_received: int
    media_bytes_received: int  # samples of agent audio received (on Twilio, its mu-law bytes)
    late_frames_sent: int
    bad_messages: int
    duration_s: float
    rate: int = RATE  # of `heard` and `sent`: the carrier's (8 kHz on Twilio, 16 kHz on Telnyx)
    carrier: str = "twilio"


class CallObserver:
    """What a tool that measures calls (the load harness) sees of one call, as it happens.

    Pass an instance to `place_call(observer=...)` and override the methods you need; here they do nothing.
    Every `at` is `time.monotonic()`, one clock for every process on the machine, so stamps taken here can be
    matched with stamps taken by the gateway or by a Live peer. The methods are called synchronously on the
    call's event loop, on its audio path: keep them to a few appends (an exception ends the call, as one
    from `on_event` does). Without an observer the call does no work for one.
    """

    def stream_started(self, t0: float) -> None:
        """The stream timeline starts (`start` is being sent): caller frame n is due at t0 + n x 20 ms."""

    def media_sent(self, frame: int, at: float) -> None:
        """Caller media frame `frame` (0, 1, ...; silence past the script too) is about to be written."""

    def media_received(self, payload: bytes, at: float) -> None:
        """A `media` message from the gateway (its payload as the carrier sent it: mu-law on Twilio); `at`
        was stamped before parsing."""

    def mark_received(self, name: str, at: float) -> None:
        """A `mark` from the gateway; it is echoed once the audio queued before it has played."""

    def mark_echoed(self, name: str, at: float) -> None:
        """The caller echoes mark `name` (its audio has played out, or was flushed by a `clear`)."""

    def clear_received(self, at: float) -> None:
        """A `clear` from the gateway: the agent audio not yet played is flushed (barge-in)."""


class _Discarded:
    """Stands in for the audio buffers and the event list of a call placed with record=False."""

    __slots__ = ()

    def __iadd__(self, other: bytes) -> _Discarded:
        return self

    __add__ = __iadd__

    def __bytes__(self) -> bytes:
        return b""

    def append(self, item: object) -> None:
        pass


def _no_event(kind: str, **details: Any) -> None:
    pass


# --- caller speech segmentation ---


def _mixed(pcm: bytes, echo: bytes, gain: float) -> bytes:
    """The caller's frame with the line's echo of an agent frame added."""
    both = np.frombuffer(pcm, "<i2").astype(np.float32) + np.frombuffer(echo, "<i2").astype(np.float32) * gain
    return np.clip(both, -32768, 32767).astype("<i2").tobytes()


def segment_speech(
    pcm: bytes,
    *,
    offset_s: float = 0.0,
    rel_threshold: float = 0.1,
    floor_rms: float = 100.0,
    hangover_s: float = 0.3,
    min_speech_s: float = 0.06,
    rate: int = RATE,
) -> list[tuple[float, float]]:
    """Split PCM16 (8 kHz, or `rate`) into (start, end) utterances, in seconds (+offset_s), by frame energy.

    A frame is speech when its RMS exceeds rel_threshold x the loudest frame (and an absolute floor, so a
    silent script finds nothing); pauses shorter than hangover_s stay inside an utterance, as a person
    pausing mid-sentence does not hand over the turn.
    """
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float64)
    frame = round(rate * FRAME_S)
    n = len(samples) // frame
    if n == 0:
        return []
    rms = np.sqrt(np.mean(samples[: n * frame].reshape(n, frame) ** 2, axis=1))
    voiced = rms > max(rms.max() * rel_threshold, floor_rms)
    hangover = round(hangover_s / FRAME_S)
    segments: list[tuple[int, int]] = []  # frame index ranges [start, end)
    for i in np.flatnonzero(voiced).tolist():
        if segments and i - segments[-1][1] <= hangover:
            segments[-1] = (segments[-1][0], i + 1)
        else:
            segments.append((i, i + 1))
    min_frames = round(min_speech_s / FRAME_S)
    return [(offset_s + a * FRAME_S, offset_s + b * FRAME_S) for a, b in segments if b - a >= min_frames]


# --- webhook and TwiML ---


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _http_to_ws(url: str) -> str:
    return http_to_ws(url)


def parse_twiml(twiml: str, base_url: str) -> tuple[str, dict[str, str]]:
    """The <Connect><Stream> URL (relative ones resolved against base_url) and its <Parameter>s."""
    try:
        answered = _connect_stream(twiml, base_url)
    except DialectError as exc:
        raise SimulatorError(str(exc)) from None
    return answered.stream_url, answered.parameters


def _connect_url(stream_url: str, url: str, public_url: str | None) -> str:
    """Where to actually open the stream: behind a proxy, the TwiML names the public host, but the
    simulator talks to the gateway directly, so swap the public host for the one we were given."""
    if not public_url:
        return stream_url
    stream, public = urlsplit(stream_url), urlsplit(public_url)
    if stream.netloc != public.netloc:
        return stream_url
    direct = urlsplit(_http_to_ws(url))
    return urlunsplit((direct.scheme, direct.netloc, stream.path, stream.query, ""))


async def _post_webhook(
    dialect: Dialect, url: str, signed_url: str, params: dict[str, str], http: httpx.AsyncClient | None
) -> str:
    request = dialect.webhook(url, signed_url, params)

    async def send(client: httpx.AsyncClient) -> httpx.Response:
        return await client.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.data,
            content=request.content,
            params=request.params,
        )

    try:
        if http is not None:
            response = await send(http)
        else:
            # A client per call costs ~18 ms of TLS set-up: load runs pass one shared client instead.
            async with httpx.AsyncClient(timeout=15.0) as client:
                response = await send(client)
    except httpx.HTTPError as exc:
        raise SimulatorError(f"voice webhook {url} unreachable: {exc!r}") from exc
    if response.status_code != 200:
        raise SimulatorError(
            f"voice webhook {url} answered HTTP {response.status_code}: {response.text[:300]!r}",
            status=response.status_code,
        )
    return response.text


# --- the call itself ---


class _Call:
    """State of one streaming call: a single clock drives both directions so `sent` and `heard` line up."""

    def __init__(
        self,
        ws: ClientConnection,
        script: CallScript,
        stream: DialectStream,
        rate: int,
        on_event: Callable[[Event], None] | None,
        events: list[Event],
        observer: CallObserver | None,
        record: bool,
    ) -> None:
        self.ws = ws
        self.script = script
        self.stream = stream  # the carrier's words for what the caller's side sends and receives
        self.stream_sid = stream.stream_sid
        self.rate = rate
        self.frame_bytes = frame_bytes = round(rate * FRAME_S) * 2
        self.on_event = on_event
        self.events: list[Event] | _Discarded = events if record else _Discarded()
        self.observer = observer
        self.t0 = time.monotonic()
        if not record and on_event is None:
            # Nobody to tell: do not even build the Event (one per media message received).
            self.emit = _no_event  # type: ignore[method-assign]

        # Caller side: the whole timeline, frame-aligned, computed up front so the clock loop stays cheap.
        lead = round(script.leading_silence_s / FRAME_S) * frame_bytes
        audio = script.audio[: len(script.audio) // 2 * 2]
        if script.rate != rate:
            audio = resample_block(audio, script.rate, rate)
        audio += bytes(-len(audio) % frame_bytes)
        self.timeline = bytes(lead) + audio
        self.audio_frames = len(self.timeline) // frame_bytes
        self.trailing_frames = round(script.trailing_silence_s / FRAME_S)
        self.utterances = segment_speech(audio, offset_s=lead / 2 / rate, rate=rate)
        self.utterance_marks: dict[int, tuple[str, int]] = {}  # frame -> (speech_start|speech_end, index)
        for i, (start, end) in enumerate(self.utterances):
            self.utterance_marks[round(start / FRAME_S)] = ("speech_start", i)
            self.utterance_marks[round(end / FRAME_S)] = ("speech_end", i)
        self.dtmf = deque(sorted(script.dtmf))
        self.sent: bytearray | _Discarded = bytearray() if record else _Discarded()
        self.frames_sent = 0
        self.late_frames = 0

        # Playback side: a model of Twilio's playout buffer. Byte counters give marks their place in it.
        self.buffer = bytearray()  # PCM16 not yet played
        self.queued = 0  # PCM bytes ever queued (flushed audio counts as played, see _on_clear)
        self.played = 0  # PCM bytes whose playout has finished
        self.in_flight = 0  # PCM bytes playing during the current tick
        self.marks: deque[tuple[int, str, float]] = deque()  # (queued position, name, received at)
        self.heard: bytearray | _Discarded = bytearray() if record else _Discarded()
        self.agent_frames = bytearray()  # per tick: 1 if agent audio played
        self.media_times: list[float] = []
        self.clear_times: list[float] = []
        self.frames_received = 0
        self.bytes_received = 0
        self.mark_round_trips: list[float] = []
        self.pending_barge_ins: list[float] = []
        self.barge_ins: list[float] = []
        self.bad_messages = 0

        # The line's echo: frames played, replayed into what the caller sends after the echo delay.
        delay = max(1, round(script.echo_delay_s / FRAME_S))
        self.echo: deque[bytes] | None = deque(maxlen=delay) if script.echo_db is not None else None
        self.echo_gain = 10 ** ((script.echo_db or 0.0) / 20)

        self.hanging_up = False
        self.closed = asyncio.Event()
        self.closed_by: Literal["caller", "gateway"] | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def emit(self, kind: str, **details: Any) -> None:
        event = Event(round(self.now(), 4), kind, details)
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    async def send(self, message: str | bytes | None) -> None:
        if message is not None:  # None: the carrier has no such message
            await self.ws.send(message)

    # --- caller -> gateway ---

    async def run_clock(self) -> None:
        """Tick every 20 ms on absolute deadlines (t0 + n*20 ms) so pacing never drifts."""
        n = 0
        while not self.closed.is_set():
            delay = self.t0 + n * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.closed.is_set():
                break
            if self._call_over(n):
                break
            if time.monotonic() - (self.t0 + n * FRAME_S) > LATE_S:
                self.late_frames += 1
            try:
                await self._send_tick(n)
                await self._play_tick()
            except ConnectionClosed:
                break  # the receiver sees the close too and records who closed
            n += 1

    def _call_over(self, n: int) -> bool:
        if self.script.hang_up:
            done = self.script.hang_up_when
            return n >= self.audio_frames + self.trailing_frames or (
                n >= self.audio_frames and done is not None and done()
            )
        if n * FRAME_S >= self.script.max_duration_s:
            self.emit("timeout", after_s=self.script.max_duration_s)
            return True
        return False

    async def _send_tick(self, n: int) -> None:
        while self.dtmf and self.dtmf[0][0] <= n * FRAME_S + 1e-9:
            _, digit = self.dtmf.popleft()
            await self.send(self.stream.dtmf(digit))
            self.emit("dtmf", digit=digit)
        # Past the script, Twilio keeps sending (silence) frames while the line is open.
        step = self.frame_bytes
        pcm = self.timeline[n * step : (n + 1) * step] or bytes(step)
        if self.echo is not None and len(self.echo) == self.echo.maxlen:
            pcm = _mixed(pcm, self.echo[0], self.echo_gain)
        message = self.stream.media(pcm, timestamp_ms=n * 20)
        if self.observer is not None:
            self.observer.media_sent(n, time.monotonic())
        await self.send(message)
        self.sent += pcm
        self.frames_sent += 1
        if n in self.utterance_marks:
            kind, index = self.utterance_marks[n]
            self.emit(kind, utterance=index)
            if kind == "speech_start" and self.buffer:  # caller talks over agent audio still to play
                self.pending_barge_ins.append(self.now())
                self.emit("barge_in", utterance=index, buffered_s=len(self.buffer) / 2 / self.rate)

    async def hang_up(self) -> None:
        self.hanging_up = True
        try:
            await self.send(self.stream.stop())
            self.emit("stop")
            await self.ws.close()
        except ConnectionClosed:
            pass

    # --- playout ---

    async def _play_tick(self) -> None:
        # The frame taken at the previous tick has finished playing now: marks behind it are due.
        self.played += self.in_flight
        self.in_flight = 0
        await self._echo_marks(lambda pos: pos <= self.played)
        step = self.frame_bytes
        frame = bytes(self.buffer[:step])
        del self.buffer[:step]
        self.in_flight = len(frame)
        self.heard += frame + bytes(step - len(frame))
        if self.echo is not None:
            self.echo.append(frame + bytes(step - len(frame)))
        self.agent_frames.append(1 if frame else 0)

    async def _echo_marks(self, due: Callable[[int], bool]) -> None:
        while self.marks and due(self.marks[0][0]):
            _, name, received = self.marks.popleft()
            await self._echo(name, received)

    async def _echo(self, name: str, received: float) -> None:
        at = time.monotonic()
        after = at - self.t0 - received
        self.mark_round_trips.append(after)
        self.emit("mark_echo", name=name, after_s=round(after, 4))
        if self.observer is not None:
            self.observer.mark_echoed(name, at)
        # websockets writes a text message synchronously when send() is called, so building the message
        # and sending it without an await in between keeps sequence numbers in order on the wire.
        await self.send(self.stream.mark(name))

    # --- gateway -> caller ---

    async def run_receiver(self) -> None:
        try:
            async for raw in self.ws:
                # Stamped before parsing: the caller's own parse is not the gateway's latency.
                await self._on_message(raw, time.monotonic())
        except ConnectionClosed:
            pass  # abnormal close (no close frame): close_code says 1006
        finally:
            if self.closed_by is None:
                # Who sent the first close frame. Not `hanging_up` alone: the clock can run into the gateway's
                # close and "hang up" before this task has read that close (on a busy loop, it often does).
                first = self.ws.protocol.close_rcvd_then_sent  # None: no closing handshake (a dropped socket)
                self.closed_by = "gateway" if first or (first is None and not self.hanging_up) else "caller"
            self.emit("closed", by=self.closed_by, code=self.ws.close_code, reason=self.ws.close_reason)
            self.closed.set()

    async def _on_message(self, raw: str | bytes, at: float) -> None:
        try:
            message = self.stream.parse(raw)
        except DialectError as exc:
            self._bad(str(exc), raw)
            return
        if isinstance(message, Heard):
            self._on_media(message, at)
        elif isinstance(message, MarkSent):
            await self._on_mark(message.name, at)
        elif isinstance(message, Cleared):
            await self._on_clear(at)
        else:  # carrier-to-app messages (start, stop...) have no business coming from the app
            self.bad_messages += 1
            self.emit("unexpected", event=message.kind)

    def _bad(self, error: str, raw: str | bytes) -> None:
        self.bad_messages += 1
        self.emit("bad_message", error=error, raw=raw[:200])

    def _on_media(self, media: Heard, at: float) -> None:
        pcm = media.pcm
        self.buffer += pcm
        self.queued += len(pcm)
        self.media_times.append(at - self.t0)
        self.frames_received += 1
        samples = len(pcm) // 2
        self.bytes_received += samples
        buffered_s = round(len(self.buffer) / 2 / self.rate, 3)
        if self.rate == RATE:
            self.emit("media", bytes=samples, buffered_s=buffered_s)
        else:  # `bytes` counts samples: the rate says how long they last
            self.emit("media", bytes=samples, rate=self.rate, buffered_s=buffered_s)
        if self.observer is not None:
            self.observer.media_received(media.payload, at)

    async def _on_mark(self, name: str, at: float) -> None:
        received = at - self.t0
        self.emit("mark", name=name)
        if self.observer is not None:
            self.observer.mark_received(name, at)
        if self.queued <= self.played:  # nothing buffered or playing: the carrier echoes at once
            await self._echo(name, received)
        else:
            self.marks.append((self.queued, name, received))

    async def _on_clear(self, at: float) -> None:
        flushed = len(self.buffer)
        self.buffer.clear()
        # The flushed audio will never play: account it as played so later marks are placed correctly.
        self.queued = self.played + self.in_flight
        self.emit("clear", flushed_s=round(flushed / 2 / self.rate, 3))
        if self.observer is not None:
            self.observer.clear_received(at)
        await self._echo_marks(lambda _pos: True)  # Twilio echoes marks flushed by a clear at once
        now = self.now()
        self.clear_times.append(now)
        self.barge_ins += [now - t for t in self.pending_barge_ins]
        self.pending_barge_ins.clear()

    # --- after the call ---

    def turns(self) -> list[Turn]:
        """The caller's utterances as said: those the call ended before were never said (the gateway hung
        up, say), and one it ended during ends there."""
        said_s = self.frames_sent * FRAME_S
        utterances = [(start, min(end, said_s)) for start, end in self.utterances if start < said_s]
        turns = []
        for i, (start, end) in enumerate(utterances):
            window_end = utterances[i + 1][0] if i + 1 < len(utterances) else float("inf")
            received = self._first_response_received(end, window_end)
            heard = self._first_response_heard(end, window_end)
            first, last = (
                round(end / FRAME_S),
                min(len(self.agent_frames), round(min(window_end, 1e9) / FRAME_S)),
            )
            turns.append(
                Turn(
                    index=i,
                    speech_start=start,
                    speech_end=end,
                    response_latency=None if received is None else received - end,
                    playout_latency=None if heard is None else heard - end,
                    agent_audio_s=sum(self.agent_frames[first:last]) * FRAME_S,
                )
            )
        return turns

    def _first_response_received(self, end: float, window_end: float) -> float | None:
        """First media of a new burst after `end`: audio still streaming in from an earlier answer (a
        greeting, say) is not the answer to this utterance; a new one starts after a gap or a `clear`."""
        prev = max((t for t in self.media_times if t < end), default=float("-inf"))
        for t in self.media_times:
            if t < end:
                continue
            if t >= window_end:
                return None
            if t - prev >= RESPONSE_GAP_S or any(prev < c <= t for c in self.clear_times):
                return t
            prev = t
        return None

    def _first_response_heard(self, end: float, window_end: float) -> float | None:
        """First agent frame played after `end` that follows a silent one (same reasoning as above)."""
        first = max(1, round(end / FRAME_S))
        last = min(len(self.agent_frames), round(min(window_end, 1e9) / FRAME_S))
        for k in range(first, last):
            if self.agent_frames[k] and not self.agent_frames[k - 1]:
                return k * FRAME_S
        return None


async def place_call(
    url: str,
    script: CallScript,
    *,
    auth_token: str | None = None,
    from_: str = "+15005550006",
    to: str = "+15005550001",
    call_sid: str | None = None,
    account_sid: str = "AC" + "0" * 32,
    public_url: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    observer: CallObserver | None = None,
    record: bool = True,
    http: httpx.AsyncClient | None = None,
    stream_delay_s: float = 0.0,
    webhook_path: str | None = None,
    direction: str = "inbound",
    dialect: Dialect | None = None,
) -> CallResult:
    """Call the gateway at `url` (http(s)://host[:port]) as Twilio would, stream `script`, and report.

    auth_token: sign the webhook and the stream upgrade as Twilio does (X-Twilio-Signature); a gateway with
    TWILIO_AUTH_TOKEN refuses calls without it. public_url: the base URL Twilio would have used (and signed)
    if the gateway sits behind a proxy; the simulator still talks to `url` directly. on_event: told each
    `Event` as it happens. observer: a `CallObserver` that sees the call's frames with their stamps.
    record=False keeps neither the audio (`heard` and `sent` come back empty) nor the events (`events` is
    empty; on_event still sees them), for runs of hundreds of calls; turns, barge-ins and counters are
    measured either way. http: a client to post the webhook with (shared by many calls). stream_delay_s:
    Twilio's pause between the webhook's answer and opening the stream (TwiML processing, a TLS handshake
    across the internet). webhook_path: the voice webhook's path and query as Twilio was told it (a redirect
    can carry a query, signed with it). direction: Twilio's `Direction` (`outbound-api` for a call the gateway
    placed: the simulator is then the callee). dialect: the carrier the simulator speaks as (default
    Twilio's, signed with `auth_token`; see `dialect_for`); webhook_path defaults to that carrier's.
    Raises SimulatorError if the call cannot be set up.
    """
    dialect = dialect or TwilioDialect(auth_token)
    webhook_path = webhook_path or dialect.webhook_path
    call_sid = call_sid or dialect.new_call_sid()
    events: list[Event] = []

    def emit_early(kind: str, **details: Any) -> None:
        event = Event(0.0, kind, details)
        if record:
            events.append(event)
        if on_event is not None:
            on_event(event)

    webhook_url = url.rstrip("/") + webhook_path
    signed_url = (public_url or url).rstrip("/") + webhook_path
    params = {
        "CallSid": call_sid,
        "AccountSid": account_sid,
        "From": from_,
        "To": to,
        "CallStatus": "ringing" if direction == "inbound" else "in-progress",
        "Direction": direction,
        "ApiVersion": "2010-04-01",
    }
    started = time.monotonic()
    twiml = await _post_webhook(dialect, webhook_url, signed_url, params, http)
    try:
        answered = dialect.answered(twiml, signed_url)
    except DialectError as exc:
        raise SimulatorError(str(exc)) from None
    stream_url, custom_parameters = answered.stream_url, answered.parameters
    emit_early("webhook", stream_url=stream_url, took_s=round(time.monotonic() - started, 4))
    if stream_delay_s > 0:
        await asyncio.sleep(stream_delay_s)

    stream = dialect.stream(call_sid, account_sid, answered, params)
    try:
        ws = await connect(
            _connect_url(stream_url, url, public_url),
            additional_headers=dialect.upgrade_headers(stream_url),
            user_agent_header=dialect.user_agent,
            compression=None,  # carriers do not negotiate permessage-deflate
            max_size=None,  # the app may send media of any size
            proxy=None,
            open_timeout=10,
            close_timeout=5,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise SimulatorError(f"stream {stream_url} refused the handshake: HTTP {status}", status) from exc
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise SimulatorError(f"stream {stream_url} could not be opened: {exc!r}") from exc

    call = _Call(ws, script, stream, dialect.rate, on_event, events, observer, record)
    stream_sid = stream.stream_sid
    receiver = asyncio.create_task(call.run_receiver())
    try:
        try:
            await call.send(stream.connected())
            emit_early("connected")
            call.t0 = time.monotonic()  # the stream timeline starts with `start`
            if observer is not None:
                observer.stream_started(call.t0)
            await call.send(stream.start())
            call.emit("start", stream_sid=stream_sid, custom_parameters=custom_parameters)
            await call.run_clock()
        except ConnectionClosed:
            pass  # the gateway closed at once; the receiver records it
        if not call.closed.is_set():
            await call.hang_up()
        await receiver
    finally:
        # On cancellation or a failing on_event callback, still release the socket.
        if not receiver.done():
            receiver.cancel()
        await ws.close()

    return CallResult(
        call_sid=call_sid,
        stream_sid=stream_sid,
        twiml=twiml,
        stream_url=stream_url,
        custom_parameters=custom_parameters,
        heard=bytes(call.heard),
        sent=bytes(call.sent),
        events=events,
        turns=call.turns(),
        barge_ins=call.barge_ins,
        unanswered_barge_ins=call.pending_barge_ins,
        mark_round_trips=call.mark_round_trips,
        close_code=ws.close_code,
        closed_by=call.closed_by,
        media_frames_sent=call.frames_sent,
        media_frames_received=call.frames_received,
        media_bytes_received=call.bytes_received,
        late_frames_sent=call.late_frames,
        bad_messages=call.bad_messages,
        duration_s=call.now(),
        rate=dialect.rate,
        carrier=dialect.name,
    )


def dialect_for(carrier: str, signing_secret: str | None = None) -> Dialect:
    """The dialect of `carrier` (twilio, telnyx, ...), signing with its secret (None: unsigned)."""
    factories = dialects()
    if carrier not in factories:
        raise SimulatorError(f"unknown carrier {carrier!r}: one of {', '.join(sorted(factories))}")
    try:
        return factories[carrier](signing_secret)
    except ValueError as exc:
        raise SimulatorError(f"{carrier}: {exc}") from None


# --- reading a finished call: caller lines, the agent's speech as played, barge-ins ---

MIN_TURN_GAP_S = 1.0  # an unanswered pause shorter than this is inside one caller line, not a turn of its own
CLEAR_BOUND_S = (
    1.0  # caller over agent audio: a `clear` is due within this; audio that ends sooner needs none
)


@dataclass(frozen=True, slots=True)
class CallerLine:
    """What the caller said in one go: utterances (`Turn`s) joined across the pauses the agent left unanswered
    that are shorter than `MIN_TURN_GAP_S` (a pause between two sentences is not the end of a turn)."""

    index: int
    start: float  # seconds since stream start (the simulator's own speech detection)
    end: float
    pauses: tuple[float, ...]  # the pauses inside it, s
    response_latency: float | None  # end of the line -> first agent media of a new answer received
    playout_latency: float | None  # end of the line -> that answer starts playing
    agent_audio_s: float  # agent audio heard between the end of this line and the start of the next


def caller_lines(turns: list[Turn], min_gap_s: float = MIN_TURN_GAP_S) -> list[CallerLine]:
    """`turns` joined into caller lines: a turn the agent did not answer (no new answer before the caller
    spoke again) is one line with the next when the pause between them is shorter than `min_gap_s`."""
    groups: list[list[Turn]] = []
    for turn in turns:
        if groups:
            last = groups[-1][-1]
            if last.response_latency is None and turn.speech_start - last.speech_end < min_gap_s:
                groups[-1].append(turn)
                continue
        groups.append([turn])
    return [
        CallerLine(
            index=i,
            start=group[0].speech_start,
            end=group[-1].speech_end,
            pauses=tuple(b.speech_start - a.speech_end for a, b in itertools.pairwise(group)),
            response_latency=group[-1].response_latency,
            playout_latency=group[-1].playout_latency,
            agent_audio_s=sum(t.agent_audio_s for t in group),
        )
        for i, group in enumerate(groups)
    ]


@dataclass(frozen=True, slots=True)
class AgentSpeech:
    """A stretch of agent audio as the caller's playout played it: the greeting, or one answer."""

    start: float  # its first frame began to play (seconds since stream start)
    end: float  # its last frame finished playing, a `clear` flushed the rest, or the call ended
    received_s: float  # agent audio received for it
    cleared_at: float | None = None  # a `clear` cut it off then
    flushed_s: float = 0.0  # the audio that `clear` dropped, never played
    call_ended: bool = False  # the call ended while it was still playing

    @property
    def heard_s(self) -> float:
        return self.end - self.start

    @property
    def cut_off(self) -> bool:
        return self.cleared_at is not None or self.call_ended


class PlayoutTracker:
    """The agent's speech rebuilt from a call's events, as the simulator's playout model plays it: audio
    received while nothing plays starts at the next 20 ms tick and plays for its length; a dry spell shorter
    than RESPONSE_GAP_S with no `clear` stays inside one speech. Feed it live (from `place_call(on_event=)`)
    or afterwards (`agent_speech`)."""

    def __init__(self) -> None:
        self.finished: list[AgentSpeech] = []
        self.current: AgentSpeech | None = None

    def feed(self, event: Event) -> AgentSpeech | None:
        """Take one event; returns the speech it started or cut off, if it did either."""
        if event.kind == "media":
            length = event.details.get("bytes", 0) / event.details.get("rate", RATE)
            tick = math.ceil(event.t / FRAME_S - 1e-6) * FRAME_S
            cur = self.current
            if cur is not None and cur.cleared_at is None and tick < cur.end + RESPONSE_GAP_S:
                self.current = replace(
                    cur, end=max(cur.end, tick) + length, received_s=cur.received_s + length
                )
                return None
            if cur is not None:
                self.finished.append(cur)
            self.current = AgentSpeech(start=tick, end=tick + length, received_s=length)
            return self.current
        if event.kind == "clear" and self.current is not None and event.details.get("flushed_s", 0) > 0:
            self.current = replace(
                self.current,
                end=min(self.current.end, max(self.current.start, event.t)),
                cleared_at=event.t,
                flushed_s=float(event.details["flushed_s"]),
            )
            return self.current
        return None

    def speeches(self, call_ended_at: float | None = None) -> list[AgentSpeech]:
        """Every speech so far; the one still playing when the call ended (if given) is cut there."""
        out = list(self.finished)
        if self.current is not None:
            cur = self.current
            if call_ended_at is not None and cur.cleared_at is None and cur.end > call_ended_at:
                cur = replace(cur, end=max(cur.start, call_ended_at), call_ended=True)
            out.append(cur)
        return out


def agent_speech(result: CallResult) -> list[AgentSpeech]:
    """The agent's speech on a recorded call (`place_call(record=True)`), in order."""
    tracker = PlayoutTracker()
    for event in result.events:
        tracker.feed(event)
    return tracker.speeches(call_ended_at=result.duration_s)


@dataclass(frozen=True, slots=True)
class Overlap:
    """The caller started speaking while agent audio was playing (a barge-in, or a brief overlap)."""

    at: float  # seconds since stream start
    cleared_after: float | None  # -> the `clear` that cut that agent audio (None: no clear cut it)
    agent_went_on_s: float  # how long the agent's audio went on playing after `at`

    def verdict(self, bound_s: float = CLEAR_BOUND_S) -> Literal["cleared", "ended by itself", "not cleared"]:
        """cleared: a `clear` within `bound_s`; ended by itself: no clear, but the agent's audio ran out
        within `bound_s` (too short an overlap to need one); not cleared: neither."""
        if self.cleared_after is not None and self.cleared_after <= bound_s:
            return "cleared"
        if self.cleared_after is None and self.agent_went_on_s <= bound_s:
            return "ended by itself"
        return "not cleared"


def overlaps(result: CallResult, speeches: list[AgentSpeech] | None = None) -> list[Overlap]:
    """Each time the caller started speaking over agent audio on a recorded call, and what became of it."""
    speeches = agent_speech(result) if speeches is None else speeches
    out = []
    for event in result.events:
        if event.kind != "barge_in":
            continue
        playing = [s for s in speeches if s.start - FRAME_S <= event.t < s.end + FRAME_S]
        if not playing:  # a frame's rounding away from the model: what the buffer held is the best we know
            out.append(Overlap(event.t, None, float(event.details.get("buffered_s", 0.0))))
            continue
        speech = playing[-1]
        cleared = speech.cleared_at - event.t if speech.cleared_at is not None else None
        out.append(Overlap(event.t, cleared, max(0.0, speech.end - event.t)))
    return out


def describe_overlap(overlap: Overlap, bound_s: float = CLEAR_BOUND_S) -> str:
    verdict = overlap.verdict(bound_s)
    if verdict == "cleared":
        assert overlap.cleared_after is not None
        return f"{overlap.at:.2f} s: cleared after {overlap.cleared_after * 1000:.0f} ms"
    if verdict == "ended by itself":
        return (
            f"{overlap.at:.2f} s: over the agent's last {overlap.agent_went_on_s:.2f} s, which ended "
            "by itself (no clear needed)"
        )
    if overlap.cleared_after is not None:
        return (
            f"{overlap.at:.2f} s: NOT cleared within {bound_s:.1f} s "
            f"(cleared after {overlap.cleared_after:.2f} s)"
        )
    return f"{overlap.at:.2f} s: NOT cleared: the agent played on for {overlap.agent_went_on_s:.2f} s"


def pacing(result: CallResult) -> str:
    """How well the caller kept Twilio's pace: the share of its frames sent late."""
    sent = result.media_frames_sent
    share = result.late_frames_sent / sent * 100 if sent else 0.0
    return (
        f"caller pacing: {result.late_frames_sent} of {sent} frames late ({share:.1f}%; late = sent more "
        f"than {LATE_S * 1000:.0f} ms after its 20 ms deadline)"
    )


# --- `gateway call`: the command line around place_call ---


def summarize(
    result: CallResult, *, min_gap_s: float = MIN_TURN_GAP_S, clear_bound_s: float = CLEAR_BOUND_S
) -> str:
    """A few human-readable lines about a finished call (also used by the demo)."""

    def ms(value: float | None) -> str:
        return "no answer" if value is None else f"{value * 1000:.0f} ms"

    lines = [
        f"call {result.call_sid} ({result.duration_s:.1f} s): closed by {result.closed_by}, "
        f"code {result.close_code}",
        pacing(result),
        f"received {result.media_frames_received} media messages "
        f"({result.media_bytes_received / result.rate:.1f} s audio), {result.bad_messages} bad messages",
    ]
    for line in caller_lines(result.turns, min_gap_s):
        inside = ""
        if line.pauses:
            pauses = ", ".join(f"{p:.2f}" for p in line.pauses)
            inside = (
                f", pause{'s' if len(line.pauses) > 1 else ''} of {pauses} s inside (under {min_gap_s:.1f} s)"
            )
        lines.append(
            f"caller line {line.index + 1} ({line.start:.2f}-{line.end:.2f} s{inside}): response "
            f"{ms(line.response_latency)}, heard after {ms(line.playout_latency)}, "
            f"{line.agent_audio_s:.1f} s of agent audio"
        )
    if result.events:
        found = overlaps(result)
        if found:
            lines.append(
                f"caller over agent audio (a clear is due within {clear_bound_s:.1f} s): "
                + "; ".join(describe_overlap(o, clear_bound_s) for o in found)
            )
    elif result.barge_ins or result.unanswered_barge_ins:  # an unrecorded call: only the simulator's counts
        cleared = ", ".join(ms(b) for b in result.barge_ins) or "none"
        lines.append(
            f"barge-ins: cleared after {cleared}; {len(result.unanswered_barge_ins)} without a clear"
        )
    if result.mark_round_trips:
        longest = max(result.mark_round_trips)
        lines.append(f"marks echoed: {len(result.mark_round_trips)}, longest playback wait {longest:.2f} s")
    return "\n".join(lines)


class _Progress:
    """Prints call progress without one line per media message: agent audio is reported per burst."""

    def __init__(self) -> None:
        self.last_media = -1.0

    def __call__(self, event: Event) -> None:
        if event.kind == "media":
            if event.t - self.last_media > 0.5:
                print(f"{event.t:7.2f}s  agent audio starts arriving")
            self.last_media = event.t
        elif event.kind in ("mark", "mark_echo"):
            return  # bookkeeping, summarized at the end
        else:
            details = " ".join(f"{k}={v}" for k, v in event.details.items())
            print(f"{event.t:7.2f}s  {event.kind} {details}".rstrip())


def _parse_dtmf(spec: str) -> list[tuple[float, str]]:
    """'1.5:1,3:#' -> [(1.5, '1'), (3.0, '#')]"""
    out = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        at, _, digit = item.partition(":")
        out.append((float(at), digit))
    return out


def add_signing_arguments(parser: argparse.ArgumentParser) -> None:
    """--auth-token and --public-url, for every command that places calls (`gateway call`, `gateway load`):
    read them back with `signing_from_args`."""
    parser.add_argument("--auth-token", default=None, help="sign like Twilio (default: $TWILIO_AUTH_TOKEN)")
    parser.add_argument(
        "--public-url", default=None, help="the URL Twilio would use, behind a proxy (default: $PUBLIC_URL)"
    )


def signing_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(auth_token, public_url) for `place_call`, from the arguments or else the gateway's own settings in
    `env` (TWILIO_AUTH_TOKEN, PUBLIC_URL: `read_environment`, `.env` too, as the gateway reads them), so a
    caller on the gateway's machine signs as Twilio would."""
    auth_token = args.auth_token or env.get("TWILIO_AUTH_TOKEN") or None
    public_url = args.public_url or env.get("PUBLIC_URL") or None
    return auth_token, public_url


def local_gateway_url(env: Mapping[str, str]) -> str:
    """The gateway this machine runs (`gateway serve` on PORT of `env`, `.env` too): the default `--url`."""
    return f"http://127.0.0.1:{env.get('PORT') or '8080'}"


def add_call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=None,
        help="the gateway's base URL (default: http://127.0.0.1:$PORT, PORT default 8080)",
    )
    parser.add_argument(
        "--audio",
        "--wav",
        dest="audio",
        help="caller audio (any WAV; of a stereo one, the left channel: the caller's in `gateway demo`'s "
        "and --record-stereo's recordings); default: 3 s of silence",
    )
    parser.add_argument("--leading-silence", type=float, default=0.0, metavar="S")
    parser.add_argument(
        "--trailing-silence",
        type=float,
        default=3.0,
        metavar="S",
        help="silence streamed after the audio before hanging up (default 3)",
    )
    parser.add_argument("--dtmf", default="", metavar="T:D,...", help="digits to press, e.g. 1.5:1,3:#")
    parser.add_argument("--no-hang-up", action="store_true", help="wait for the gateway to end the call")
    parser.add_argument("--max-duration", type=float, default=600.0, metavar="S")
    add_signing_arguments(parser)
    parser.add_argument(
        "--carrier",
        default="twilio",
        choices=sorted(dialects()),
        help="speak as this carrier (default twilio): its webhook, its signature, its media stream and rate",
    )
    parser.add_argument(
        "--signing-key",
        default=None,
        help="another carrier's signing secret (default: $"
        + ", $".join(v for k, v in SIGNING_VARIABLES.items() if k != "twilio")
        + " for the carrier)",
    )
    parser.add_argument("--from", dest="from_", default="+15005550006")
    parser.add_argument("--to", default="+15005550001")
    parser.add_argument("--record", metavar="WAV", help="what the caller heard (mono, at the carrier's rate)")
    parser.add_argument("--record-stereo", metavar="WAV", help="the whole call: caller left, heard right")
    parser.add_argument("--quiet", action="store_true", help="no live progress, only the summary")


async def run_call_command(args: argparse.Namespace) -> int:
    env = read_environment()  # the gateway's settings, as it reads them
    url = args.url or local_gateway_url(env)
    audio = bytes(3 * RATE * 2)
    if args.audio:
        try:
            audio, channels = load_caller_wav(args.audio)
        except (OSError, ValueError) as exc:
            print(f"gateway call: cannot read --audio {args.audio}: {exc}", file=sys.stderr)
            return 2
        if channels > 1:
            print(
                f"gateway call: {args.audio} has {channels} channels: the caller says what is on the first "
                "(left) one, where `gateway demo` and --record-stereo put the caller",
                file=sys.stderr,
            )
    carrier = getattr(args, "carrier", "twilio")
    auth_token, public_url = signing_from_args(args, env)
    if carrier == "twilio":
        secret = auth_token
    else:
        variable = SIGNING_VARIABLES.get(carrier, "")
        secret = args.signing_key or (env.get(variable) if variable else None) or None
    try:
        dialect = dialect_for(carrier, secret)
    except SimulatorError as exc:
        print(f"gateway call: {exc}", file=sys.stderr)
        return 2
    if args.audio and dialect.rate != RATE:  # the carrier's own rate, not 8 kHz: a wideband caller
        audio = load_caller_wav(args.audio, rate=dialect.rate)[0]
    elif dialect.rate != RATE:
        audio = bytes(3 * dialect.rate * 2)
    script = CallScript(
        audio=audio,
        rate=dialect.rate,
        leading_silence_s=args.leading_silence,
        trailing_silence_s=args.trailing_silence,
        dtmf=_parse_dtmf(args.dtmf),
        hang_up=not args.no_hang_up,
        max_duration_s=args.max_duration,
    )
    try:
        result = await place_call(
            url,
            script,
            public_url=public_url,
            from_=args.from_,
            to=args.to,
            on_event=None if args.quiet else _Progress(),
            dialect=dialect,
        )
    except SimulatorError as exc:
        print(f"gateway call: {exc}", file=sys.stderr)
        return 1
    print(summarize(result))
    if args.record:
        write_wav(args.record, result.heard, result.rate)
        print(f"heard: {args.record}")
    if args.record_stereo:
        write_stereo_wav(args.record_stereo, result.sent, result.heard, result.rate)
        print(f"recording: {args.record_stereo} (caller left, heard right)")
    return 0
