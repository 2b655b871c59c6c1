"""Load harness: many concurrent simulated calls against a running gateway, and what they measured.

Calls are placed with the caller simulator (`gateway.devtools.simulator.place_call`, one implementation:
signed like Twilio when given the gateway's auth token, watched through its public `CallObserver`, with no
audio or event list kept per call): each call speaks sentences (eSpeak NG) separated by silences, some long
(the agent answers and is heard out), some short (the caller talks over the answer: barge-in).
Calls start ramped over `ramp_s` seconds.

With the scripted Live peer (`gateway.devtools.scripted_peer`) behind the gateway, stamps on both sides (one
monotonic clock for every process on the machine) give the gateway-added latency of every frame:

* inbound: harness sends Twilio media frame k -> the peer receives the session's k-th 20 ms of realtimeInput
  audio (a message may carry several: timed from the newest of them, the wait for the rest apart);
* outbound: peer sends reply chunk j of a turn -> harness receives that turn's j-th Twilio media;
* barge-in: peer sends `interrupted` -> harness receives `clear` (unless the gateway's own barge-in, which
  hears the caller on the line, cleared first: counted apart; the caller's speech -> `clear` is timed too).

A peer session is tied to its call by DTMF (the call's index, then `#`), which the gateway passes on.
`run_direct_baseline` measures the same paths with the harness talking to the peer directly (no gateway), the
loopback floor to subtract. With a gateway pid, the gateway's CPU and resident memory are sampled from /proc
(its descendants included).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import functools
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import sys
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from gateway.audio import Resampler
from gateway.config import read_environment
from gateway.devtools import simulator, turn_corpus
from gateway.devtools.scripted_peer import PeerOptions, PeerSessionRecord, ScriptedPeer
from gateway.devtools.simulator import (
    CallObserver,
    CallScript,
    SimulatorError,
    add_signing_arguments,
    local_gateway_url,
    place_call,
    signing_from_args,
)
from gateway.live import protocol as lp

FRAME_S = simulator.FRAME_S
LATE_FRAME_S = 0.020  # a frame delivered more than one frame period after it was sent counts as late
HARNESS_OVERLOADED = 0.01  # more than 1% of caller frames sent >5 ms late: the harness, not the gateway, lags
OVERLOADED_NOTE = "  ** HARNESS OVERLOADED: the figures below overstate the gateway's share **"
SETUP_SETTLE_S = 0.05  # caller frames sent before the Live session is up queue in the gateway: not counted


# --- caller audio ---------------------------------------------------------------------------------------


def caller_audio(seconds: float, seed: int, rate: int = 8000) -> bytes:
    """The caller's sentences (eSpeak NG, as in `gateway.devtools.turn_corpus`: about 0.5-3 s each)
    separated by silences: mostly long enough to hear the answer out (2-4 s), about a third short
    (0.45-0.7 s) so the caller talks over an answer still streaming (barge-in). Spoken words, not a
    speech-like tone: the gateway's own speech detector confirms them, as it would a caller, so its barge-in
    (the default) is exercised and costs what it costs on a real call."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * rate), dtype="<i2")
    t = rng.uniform(0.3, 1.5)  # the greeting, if any, starts first
    while t < seconds - 1.0:
        voice = _sentence(int(rng.integers(0, len(turn_corpus.CALLER_SENTENCES))), rate)
        voice = voice[: max(0, int((seconds - 0.5 - t) * rate))]
        start = int(t * rate)
        out[start : start + len(voice)] = voice[: len(out) - start]
        t += len(voice) / rate + (rng.uniform(0.45, 0.7) if rng.random() < 0.35 else rng.uniform(2.0, 4.0))
    return out.tobytes()


@functools.cache
def _sentence(index: int, rate: int) -> np.ndarray:
    """One of the caller's sentences at `rate`, the same in every run (synthesised once per process)."""
    x = turn_corpus.voice(turn_corpus.CALLER_SENTENCES[index], agent=False, level_dbfs=-20.0, repeatably=True)
    pcm = np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()
    if rate != turn_corpus.RATE:
        pcm = Resampler(turn_corpus.RATE, rate).process(pcm)
    return np.frombuffer(pcm, "<i2")


def _id_keys(call_id: int) -> list[tuple[float, str]]:
    """DTMF that tells the peer which call this is; distinct tiny times keep the digits in order."""
    return [(i * 1e-12, key) for i, key in enumerate(f"{call_id}#")]


# --- what the harness keeps of a call -------------------------------------------------------------------


@dataclass
class Segment:
    """One agent turn as the caller received it: media arrival times, ended by a `mark` or a `clear`."""

    media: array = field(default_factory=lambda: array("d"))
    end: str = ""  # "mark", "clear", or "" (still open when the call ended)
    end_at: float = 0.0


@dataclass
class CallTrace(CallObserver):
    """The harness side of one call, as plain data; as the simulator's observer it stamps the call's frames
    (the direct baseline fills it by hand)."""

    call_id: int
    t0: float = 0.0  # stream start (`start` sent / session set up), monotonic
    send_times: array = field(default_factory=lambda: array("d"))  # caller audio frame k sent
    segments: list[Segment] = field(default_factory=lambda: [Segment()])

    def close_segment(self, end: str, at: float) -> None:
        segment = self.segments[-1]
        if end == "mark" and segment.end:  # a mark with no audio before it: nothing to close
            return
        segment.end, segment.end_at = end, at
        self.segments.append(Segment())

    # CallObserver: one append per frame, nothing else on the audio path.

    def stream_started(self, t0: float) -> None:
        self.t0 = t0

    def media_sent(self, frame: int, at: float) -> None:
        self.send_times.append(at)

    def media_received(self, payload: bytes, at: float) -> None:
        self.segments[-1].media.append(at)

    def mark_received(self, name: str, at: float) -> None:
        self.close_segment("mark", at)

    def clear_received(self, at: float) -> None:
        self.close_segment("clear", at)


# --- where the peer's records come from ----------------------------------------------------------------


class PeerLink(Protocol):
    """The scripted Live peer a run talks to, in this process or a child process: where it listens, its pid
    (for CPU samples), and the records of its sessions."""

    url: str
    pid: int

    async def take_records(self) -> list[PeerSessionRecord]: ...


class InProcessPeer:
    """The scripted peer in this process and event loop (tests, small runs)."""

    def __init__(self, port: int = 0, options: PeerOptions | None = None) -> None:
        self._peer = ScriptedPeer(port=port, options=options)
        self.url = ""
        self.pid = os.getpid()

    async def __aenter__(self) -> InProcessPeer:
        await self._peer.__aenter__()
        self.url = self._peer.url()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._peer.__aexit__(*exc)

    async def take_records(self) -> list[PeerSessionRecord]:
        return self._peer.take_records()


def _peer_child(conn: multiprocessing.connection.Connection, port: int, options: PeerOptions) -> None:
    """Child process: serve the peer; answer `take` with the records, stop on `stop`."""

    async def serve() -> None:
        async with ScriptedPeer(port=port, options=options) as peer:
            conn.send(peer.url())
            # Blocking pipe calls in a thread: the event loop keeps serving sessions meanwhile.
            while await asyncio.to_thread(conn.recv) != "stop":
                await asyncio.to_thread(conn.send, peer.take_records())

    _run(serve())


class ChildProcessPeer:
    """The scripted peer in its own process: the harness and the peer then do not share one core."""

    def __init__(self, port: int = 0, options: PeerOptions | None = None) -> None:
        self.port = port
        self.options = options or PeerOptions()
        self.url = ""
        self.pid = 0
        self._conn: multiprocessing.connection.Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None

    async def __aenter__(self) -> ChildProcessPeer:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_peer_child, args=(child, self.port, self.options), daemon=True)
        self._process.start()
        self.pid = self._process.pid or 0
        self.url = await asyncio.to_thread(self._recv, 30.0)
        return self

    def _recv(self, timeout: float) -> Any:
        assert self._conn is not None
        if not self._conn.poll(timeout):
            raise RuntimeError("the scripted peer process did not answer")
        return self._conn.recv()

    async def take_records(self) -> list[PeerSessionRecord]:
        assert self._conn is not None
        self._conn.send("take")
        return await asyncio.to_thread(self._recv, 60.0)

    async def __aexit__(self, *exc: object) -> None:
        assert self._conn is not None and self._process is not None
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        await asyncio.to_thread(self._process.join, 10)
        if self._process.is_alive():
            self._process.kill()


# --- /proc sampling --------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def child_processes(pid: int, *, descendants: bool = True) -> list[int]:
    """The children of pid, and theirs unless `descendants` is false (a gateway could run workers or an
    embedded backend as processes).

    From /proc/PID/task/TID/children: scanning every /proc entry instead can take tens of milliseconds."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            if descendants:
                todo += kids
    return found


class Usage(NamedTuple):
    """What a process (with its descendants, if asked) has used: CPU seconds (user and system, plus reaped
    children), the part of them in the kernel (system time: socket I/O, mostly), and resident bytes."""

    cpu: float
    kernel: float
    rss: int


def _usage(pid: int) -> Usage:
    """One process's `Usage`, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = sum(int(v) for v in fields[11:15]) / _TICK  # utime stime cutime cstime
    kernel = (int(fields[12]) + int(fields[14])) / _TICK  # stime cstime
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
    return Usage(cpu, kernel, rss)


def sample_process(pid: int, children: bool = True) -> Usage:
    """The `Usage` of pid and (by default) its descendants; (nan, nan, 0) once it is gone."""
    try:
        total = _usage(pid)
    except (OSError, IndexError, ValueError):
        return Usage(math.nan, math.nan, 0)
    for child in child_processes(pid) if children else ():
        with contextlib.suppress(OSError, IndexError, ValueError):
            one = _usage(child)
            total = Usage(total.cpu + one.cpu, total.kernel + one.kernel, total.rss + one.rss)
    return total


@dataclass
class Sample:
    """One reading taken during a run: calls in progress, cumulative CPU seconds of the gateway (with its
    children), the harness and the peer, and the gateway's memory."""

    t: float
    active: int
    gateway_cpu: float = math.nan
    gateway_kernel_cpu: float = math.nan
    gateway_rss: int = 0
    harness_cpu: float = math.nan
    peer_cpu: float = math.nan


# --- the run ---------------------------------------------------------------------------------------------


@dataclass
class LoadOptions:
    """One `gateway load` run: which gateway to call (and sample), and how many calls over how long."""

    url: str
    calls: int = 10
    duration_s: float = 30.0
    ramp_s: float = 5.0
    gateway_pid: int | None = None
    seed: int = 1
    variants: int = 16  # distinct caller recordings, shared between calls to save harness memory
    # The gateway's TWILIO_AUTH_TOKEN: sign webhooks and upgrades as Twilio does. Kept out of the repr.
    auth_token: str | None = field(default=None, repr=False)
    public_url: str | None = None  # the gateway's PUBLIC_URL, which Twilio signs (the harness dials `url`)


@dataclass
class CallOutcome:
    """One simulated call of a run: its trace, and its result or why it failed."""

    call_id: int
    trace: CallTrace
    result: simulator.CallResult | None = None
    error: str = ""
    started: float = 0.0
    ended: float = 0.0


@dataclass
class LoadRun:
    """Everything a run measured, for the report: the calls, the peer's session records, the samples."""

    options: LoadOptions
    outcomes: list[CallOutcome]
    records: list[PeerSessionRecord] | None
    samples: list[Sample]
    started: float
    ended: float


class _Active:
    def __init__(self) -> None:
        self.count = 0


async def run_load(options: LoadOptions, peer: PeerLink | None = None) -> LoadRun:
    """Place the calls, sample the processes, collect the peer's records."""
    audio = [caller_audio(options.duration_s, options.seed * 100 + v) for v in range(options.variants)]
    active = _Active()
    started = time.monotonic() + 0.2
    step = options.ramp_s / max(1, options.calls - 1) if options.calls > 1 else 0.0
    samples: list[Sample] = []
    monitor = asyncio.create_task(_monitor(samples, active, options.gateway_pid, peer))
    async with httpx.AsyncClient(timeout=15.0) as http:  # one client for every webhook of the run
        outcomes = await asyncio.gather(
            *(
                _one_call(options, i, audio[i % len(audio)], started + i * step, active, http)
                for i in range(options.calls)
            )
        )
    ended = time.monotonic()
    await asyncio.sleep(0.3)  # let the gateway finish closing Live sessions before the peer is asked
    monitor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor
    records = await peer.take_records() if peer is not None else None
    return LoadRun(options, outcomes, records, samples, started, ended)


async def _one_call(
    options: LoadOptions, call_id: int, audio: bytes, at: float, active: _Active, http: httpx.AsyncClient
) -> CallOutcome:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    trace = CallTrace(call_id)
    outcome = CallOutcome(call_id, trace, started=time.monotonic())
    script = CallScript(audio=audio, trailing_silence_s=0.2, dtmf=_id_keys(call_id))
    active.count += 1
    try:
        outcome.result = await place_call(
            options.url,
            script,
            auth_token=options.auth_token,
            public_url=options.public_url,
            observer=trace,
            record=False,  # hundreds of calls: no per-call audio or event list
            http=http,
        )
        if outcome.result.closed_by == "gateway":
            outcome.error = f"gateway closed the call (code {outcome.result.close_code})"
    except SimulatorError as exc:
        outcome.error = str(exc)
    except Exception as exc:  # a load run reports failures; it does not stop at the first
        outcome.error = f"{exc.__class__.__name__}: {exc}"
    finally:
        active.count -= 1
        outcome.ended = time.monotonic()
    return outcome


async def _monitor(
    samples: list[Sample], active: _Active, gateway_pid: int | None, peer: PeerLink | None
) -> None:
    own = os.getpid()
    peer_pid = peer.pid if peer is not None and peer.pid != own else None
    while True:
        # In a thread: /proc reads are system calls, and the event loop must keep the calls' pace.
        samples.append(await asyncio.to_thread(_sample, active.count, gateway_pid, own, peer_pid))
        await asyncio.sleep(0.5)


def _sample(active: int, gateway_pid: int | None, own: int, peer_pid: int | None) -> Sample:
    sample = Sample(time.monotonic(), active)
    if gateway_pid:
        sample.gateway_cpu, sample.gateway_kernel_cpu, sample.gateway_rss = sample_process(gateway_pid)
    sample.harness_cpu = sample_process(own, children=False).cpu
    if peer_pid:
        sample.peer_cpu = sample_process(peer_pid, children=False).cpu
    return sample


# --- the direct baseline: the same paths without the gateway ---------------------------------------------


async def run_direct_baseline(peer: PeerLink, calls: int, seconds: float, ramp_s: float = 2.0) -> LoadRun:
    """The harness speaks Live to the peer itself: one loopback hop each way, the floor under every figure."""
    audio = caller_audio(seconds, 7, rate=16000)
    started = time.monotonic() + 0.2
    step = ramp_s / max(1, calls - 1)
    outcomes = await asyncio.gather(
        *(_direct_call(peer.url, i, audio, started + i * step, seconds) for i in range(calls))
    )
    ended = time.monotonic()
    await asyncio.sleep(0.3)
    records = await peer.take_records()
    options = LoadOptions(url=peer.url, calls=calls, duration_s=seconds, ramp_s=ramp_s)
    return LoadRun(options, list(outcomes), records, [], started, ended)


async def _direct_call(url: str, call_id: int, audio: bytes, at: float, seconds: float) -> CallOutcome:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    trace = CallTrace(call_id)
    outcome = CallOutcome(call_id, trace, started=time.monotonic())
    frame = int(FRAME_S * 16000) * 2
    try:
        # A plain client, as lean as the gateway's Live client: the same library and options.
        ws = await connect(url, compression=None, max_size=2**24, open_timeout=10)
    except Exception as exc:
        outcome.error = f"{exc.__class__.__name__}: {exc}"
        return outcome
    try:
        await ws.send(json.dumps({"setup": {"model": "models/scripted"}}))
        await ws.recv()  # setupComplete
        for _, key in _id_keys(call_id):
            await ws.send(lp.client_turn_message(f"[The caller pressed the {key} key.]"))
        receiver = asyncio.create_task(_direct_receive(ws, trace))
        trace.t0 = time.monotonic()
        for n in range(int(seconds / FRAME_S)):
            await asyncio.sleep(max(0.0, trace.t0 + n * FRAME_S - time.monotonic()))
            message = lp.audio_message(audio[n * frame : (n + 1) * frame], 16000)
            trace.send_times.append(time.monotonic())
            await ws.send(message)
        receiver.cancel()
    except Exception as exc:
        outcome.error = f"{exc.__class__.__name__}: {exc}"
    finally:
        await ws.close()
        outcome.ended = time.monotonic()
    return outcome


async def _direct_receive(ws: ClientConnection, trace: CallTrace) -> None:
    interrupted = False
    async for raw in ws:
        now = time.monotonic()
        for event in lp.parse_server_message(raw):
            if isinstance(event, lp.AgentAudio):
                trace.segments[-1].media.append(now)
            elif isinstance(event, lp.Interrupted):
                trace.close_segment("clear", now)  # what the gateway turns into a Twilio `clear`
                interrupted = True
            elif isinstance(event, lp.TurnComplete):
                if not interrupted:
                    trace.close_segment("mark", now)
                interrupted = False


# --- analysis --------------------------------------------------------------------------------------------


@dataclass
class Figures:
    """Everything a load run measured; latencies in seconds."""

    calls: int
    completed: int
    errors: Counter[str]
    duration_s: float
    identified: int = 0
    caller_frames_sent: int = 0
    caller_frames_late_sent: int = 0  # by the harness (>5 ms after their deadline), whole run
    window_s: tuple[float, float] = (0.0, 0.0)  # latencies and lateness: frames sent in this steady window
    harness_lateness: list[float] = field(default_factory=list)
    caller_frames_received: int = 0  # by the peer
    caller_messages_received: int = 0  # the messages that carried them (a quiet may go several to one)
    caller_frames_missing: int = 0
    # Frames with sound: harness send of the newest frame in their message -> peer. While the caller may be
    # speaking the gateway sends LIVE_SPEECH_CHUNK_MS to a message (gateway.call.caller_chunks): how long a
    # frame waited for the rest of its chunk is `inbound_held`; this is how long the gateway then took.
    inbound: list[float] = field(default_factory=list)
    inbound_held: list[float] = field(default_factory=list)
    # Frames of the harness's pauses (digital silence): the gateway may hold a quiet for up to
    # LIVE_QUIET_CHUNK_MS and send it in one message, so they are apart (send -> peer, hold included).
    inbound_quiet: list[float] = field(default_factory=list)
    agent_frames_sent: int = 0  # by the peer
    agent_frames_missing: int = 0
    agent_frames_cleared: int = 0  # of turns ended by a `clear`: dropped after the barge-in, by design
    outbound: list[float] = field(default_factory=list)
    barge_in: list[float] = field(default_factory=list)  # peer `interrupted` -> harness `clear`
    barge_in_unanswered: int = 0
    barge_in_first: int = 0  # turns the gateway's own barge-in cleared before the peer's `interrupted`
    caller_barge_in: list[float] = field(default_factory=list)  # caller speech over audio -> `clear`
    response: list[float] = field(default_factory=list)  # caller speech end -> first agent media
    setup: list[float] = field(default_factory=list)  # stream start -> Live session set up
    unpaired_turns: int = 0
    gateway_cpu_pct: float = math.nan
    gateway_ms_per_call_s: float = math.nan
    gateway_kernel_share: float = math.nan  # of the gateway's CPU, the part in the kernel (socket I/O)
    gateway_rss_idle: int = 0
    gateway_rss_steady: int = 0
    gateway_rss_peak: int = 0
    rss_per_call: float = math.nan
    harness_cpu_pct: float = math.nan
    peer_cpu_pct: float = math.nan
    steady_calls: float = 0.0

    @property
    def harness_late_in_window(self) -> float:
        late = sum(x > simulator.LATE_S for x in self.harness_lateness)
        return late / len(self.harness_lateness) if self.harness_lateness else 0.0

    @property
    def harness_overloaded(self) -> bool:
        return self.harness_late_in_window > HARNESS_OVERLOADED

    @property
    def late_inbound(self) -> int:
        return sum(x > LATE_FRAME_S for x in self.inbound)

    @property
    def late_outbound(self) -> int:
        return sum(x > LATE_FRAME_S for x in self.outbound)


def analyze(run: LoadRun) -> Figures:
    ok = [o for o in run.outcomes if not o.error]
    errors = Counter(_error_kind(o.error) for o in run.outcomes if o.error)
    fig = Figures(
        calls=len(run.outcomes), completed=len(ok), errors=errors, duration_s=run.ended - run.started
    )
    fig.window_s = steady_window(run)
    for outcome in run.outcomes:
        result = outcome.result
        if result is not None:
            fig.caller_frames_late_sent += result.late_frames_sent
            fig.caller_barge_in += result.barge_ins
            fig.response += [t.response_latency for t in result.turns if t.response_latency is not None]
            if result.bad_messages:
                errors["bad messages from the gateway"] += result.bad_messages
        trace = outcome.trace
        fig.caller_frames_sent += len(trace.send_times)
        t0 = result_t0(outcome)
        lo, hi = fig.window_s
        fig.harness_lateness += [
            s - (t0 + k * FRAME_S) for k, s in enumerate(trace.send_times) if t0 and lo <= s <= hi
        ]
    if run.records is not None:
        _match_peer(run, fig)
    _process_figures(run, fig)
    return fig


def steady_window(run: LoadRun) -> tuple[float, float]:
    """When every call was up: after the ramp (setting calls up costs the harness too) until the first
    call ends."""
    opts = run.options
    lo, hi = run.started + opts.ramp_s + 1.0, run.started + opts.duration_s - 0.5
    return (lo, hi) if hi - lo >= 1.0 else (run.started, run.ended)


def result_t0(outcome: CallOutcome) -> float:
    """The stream start of a call: the first frame's deadline (frame k is due at t0 + k x 20 ms)."""
    trace = outcome.trace
    if trace.t0:
        return trace.t0
    if not trace.send_times:
        return 0.0
    return trace.send_times[0]  # frame 0 goes out at once on `start`: near enough its deadline


_URL = re.compile(r"\S+://\S+\s?")
_KIND = re.compile(r"[^:]*(?:: HTTP \d+)?")


def _error_kind(error: str) -> str:
    """An error without what differs from call to call (URLs, response bodies, exception details):
    "voice webhook answered HTTP 403", "stream refused the handshake: HTTP 403", "TimeoutError"."""
    match = _KIND.match(_URL.sub("", error))
    return (match.group() if match else error)[:80]


def _match_peer(run: LoadRun, fig: Figures) -> None:
    assert run.records is not None
    by_id = {r.call_id: r for r in run.records if r.call_id is not None}
    fig.identified = len(by_id)
    for outcome in run.outcomes:
        record = by_id.get(outcome.call_id)
        if record is None:
            continue
        trace = outcome.trace
        if trace.send_times:
            fig.setup.append(record.setup_done - trace.send_times[0])
        _match_inbound(trace, record, fig)
        _match_outbound(trace, record, fig)


def _match_inbound(trace: CallTrace, record: PeerSessionRecord, fig: Figures) -> None:
    sent, received = trace.send_times, record.audio_times
    fig.caller_frames_received += len(received)
    fig.caller_messages_received += record.audio_messages
    fig.caller_frames_missing += max(0, len(sent) - len(received))
    lo, hi = fig.window_s
    lo = max(lo, record.setup_done + SETUP_SETTLE_S)
    silent, last = record.audio_silent, record.audio_last
    count = min(len(sent), len(received))
    newest = list(range(count))  # the newest frame of each frame's message (itself when sent alone)
    for k in range(count - 2, -1, -1):
        if k < len(last) and not last[k]:
            newest[k] = newest[k + 1]
    for k in range(count):
        if lo <= sent[k] <= hi:
            if k < len(silent) and silent[k]:
                fig.inbound_quiet.append(received[k] - sent[k])
            else:
                fig.inbound.append(received[k] - sent[newest[k]])
                fig.inbound_held.append(sent[newest[k]] - sent[k])


def _match_outbound(trace: CallTrace, record: PeerSessionRecord, fig: Figures) -> None:
    """Each of the peer's turns with the caller's segments that hold its audio: chunk j -> media j (a
    completed turn's extra last media is the resampler's tail); an interrupted turn ends in a `clear`.

    Paired by time, not by count: a segment belongs to the latest turn whose first chunk was sent before its
    first media arrived. A `clear` after a turn's `mark` (the caller talked over a reply the line was still
    playing out) closes a segment with no media: it holds no turn, and counting it would shift every pairing
    after it."""
    turns = [turn for turn in record.turns if len(turn.chunk_times)]
    starts = [turn.chunk_times[0] for turn in turns]
    held: dict[int, list[Segment]] = {}
    for segment in trace.segments:
        if not len(segment.media):
            continue
        i = bisect.bisect_right(starts, segment.media[0]) - 1
        if i < 0:
            fig.unpaired_turns += 1  # audio before any turn of the peer's: not this call's
            continue
        held.setdefault(i, []).append(segment)
    lo, hi = fig.window_s
    for i, turn in enumerate(turns):
        chunks = turn.chunk_times
        fig.agent_frames_sent += len(chunks)
        segments = held.get(i, [])
        if not segments:
            fig.unpaired_turns += 1
        media = [at for segment in segments for at in segment.media]
        cleared = any(segment.end == "clear" for segment in segments)
        # A turn the gateway cleared itself (local barge-in: before the peer's `interrupted`) drops, by
        # design, the chunks that reach it after its decision: counted apart, not as missing.
        short = max(0, len(chunks) - len(media))
        if cleared:
            fig.agent_frames_cleared += short
        else:
            fig.agent_frames_missing += short
        fig.outbound += [
            media[j] - chunks[j] for j in range(min(len(chunks), len(media))) if lo <= chunks[j] <= hi
        ]
        if turn.interrupted_at is not None and lo <= turn.interrupted_at <= hi:
            ends = [s.end_at for s in segments if s.end == "clear"]
            if not ends:
                fig.barge_in_unanswered += 1
            elif ends[-1] < turn.interrupted_at:
                fig.barge_in_first += 1  # the gateway heard the caller first: no relay to time
            else:
                fig.barge_in.append(ends[-1] - turn.interrupted_at)


def _process_figures(run: LoadRun, fig: Figures) -> None:
    """CPU and memory over the window when every call was up (or the whole run, if there was none)."""
    samples = run.samples
    if not samples:
        return
    opts = run.options
    lo, hi = run.started + opts.ramp_s + 1.0, run.started + opts.duration_s - 1.0
    window = [s for s in samples if lo <= s.t <= hi]
    if len(window) < 3:
        window = samples
    first, last = window[0], window[-1]
    span = last.t - first.t
    fig.steady_calls = float(np.mean([s.active for s in window]))
    if span > 0:
        fig.gateway_cpu_pct = (last.gateway_cpu - first.gateway_cpu) / span * 100
        fig.harness_cpu_pct = (last.harness_cpu - first.harness_cpu) / span * 100
        fig.peer_cpu_pct = (last.peer_cpu - first.peer_cpu) / span * 100
        if fig.steady_calls > 0:
            fig.gateway_ms_per_call_s = fig.gateway_cpu_pct * 10 / fig.steady_calls
        used = last.gateway_cpu - first.gateway_cpu
        if used > 0:
            fig.gateway_kernel_share = (last.gateway_kernel_cpu - first.gateway_kernel_cpu) / used
    rss = [s.gateway_rss for s in samples if s.gateway_rss]
    if rss:
        fig.gateway_rss_idle = samples[0].gateway_rss
        fig.gateway_rss_steady = int(np.median([s.gateway_rss for s in window]))
        fig.gateway_rss_peak = max(rss)
        if fig.steady_calls > 0:
            fig.rss_per_call = (fig.gateway_rss_steady - fig.gateway_rss_idle) / fig.steady_calls


# --- report ----------------------------------------------------------------------------------------------


def percentiles(values: list[float], scale: float = 1000.0) -> str:
    if not values:
        return "n/a"
    a = np.asarray(values) * scale
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return f"p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f}  max {a.max():.2f} ms  (n={len(a)})"


def report(fig: Figures) -> str:
    def pct(part: int, whole: int) -> str:
        return f"{part} ({part / whole * 100:.2f}%)" if whole else str(part)

    lo, hi = fig.window_s
    late_window = sum(x > simulator.LATE_S for x in fig.harness_lateness)
    lines = [
        f"calls: {fig.calls} placed, {fig.completed} completed, errors: "
        + (", ".join(f"{k} x{v}" for k, v in fig.errors.items()) or "none"),
        f"caller frames: {fig.caller_frames_sent} sent, "
        f"{pct(fig.caller_frames_late_sent, fig.caller_frames_sent)} sent >5 ms late by the harness"
        + (OVERLOADED_NOTE if fig.harness_overloaded else ""),
        f"steady window (all calls up) {hi - lo:.1f} s: the figures below; harness sent "
        f"{pct(late_window, len(fig.harness_lateness))} frames >5 ms late in it",
        f"  harness send lateness: {percentiles(fig.harness_lateness)}",
    ]
    if fig.identified or fig.inbound:
        lines += [
            f"peer: {fig.identified}/{fig.calls} sessions identified, {fig.unpaired_turns} unpaired turns",
            f"caller frames at the peer: {fig.caller_frames_received} received, "
            f"{fig.caller_frames_missing} missing, {pct(fig.late_inbound, len(fig.inbound))} late (>20 ms), "
            f"in {fig.caller_messages_received} messages",
            f"  inbound latency (harness -> gateway -> peer, from the newest frame of the message): "
            f"{percentiles(fig.inbound)}",
            f"  frames held for their chunk (LIVE_SPEECH_CHUNK_MS): {percentiles(fig.inbound_held)}",
            f"  quiet frames (pauses, sent several to a message): {percentiles(fig.inbound_quiet)}",
            f"agent frames: {fig.agent_frames_sent} sent by the peer, {fig.agent_frames_missing} missing "
            f"({fig.agent_frames_cleared} more dropped in turns the caller talked over), "
            f"{pct(fig.late_outbound, len(fig.outbound))} late (>20 ms)",
            f"  outbound latency (peer -> gateway -> harness): {percentiles(fig.outbound)}",
            f"barge-in (peer interrupted -> harness clear): {percentiles(fig.barge_in)}, "
            f"{fig.barge_in_unanswered} unanswered, {fig.barge_in_first} cleared by the gateway before it",
            f"Live setup (stream start -> setupComplete): {percentiles(fig.setup)}",
        ]
    lines += [
        f"caller-heard response (speech end -> agent audio, incl. peer VAD): {percentiles(fig.response)}",
        f"caller-heard barge-in (speech start -> clear, incl. peer VAD): {percentiles(fig.caller_barge_in)}",
    ]
    if not math.isnan(fig.gateway_cpu_pct):
        lines += [
            f"gateway: CPU {fig.gateway_cpu_pct:.1f}% at {fig.steady_calls:.0f} calls = "
            f"{fig.gateway_ms_per_call_s:.2f} ms CPU per call-second "
            f"(~{1000 / fig.gateway_ms_per_call_s:.0f} calls per core; "
            f"{fig.gateway_kernel_share * 100:.0f}% of it in the kernel)"
            if fig.gateway_ms_per_call_s > 0
            else f"gateway: CPU {fig.gateway_cpu_pct:.1f}%",
            f"gateway RSS: idle {fig.gateway_rss_idle / 2**20:.1f} MiB, "
            f"steady {fig.gateway_rss_steady / 2**20:.1f} MiB, peak {fig.gateway_rss_peak / 2**20:.1f} MiB, "
            f"{fig.rss_per_call / 2**10:.0f} KiB per call",
        ]
    load = f"harness CPU {fig.harness_cpu_pct:.0f}%"
    if not math.isnan(fig.peer_cpu_pct):
        load += f", peer CPU {fig.peer_cpu_pct:.0f}%"
    lines.append(load + " (100% = one core)")
    return "\n".join(lines)


# --- `gateway load` --------------------------------------------------------------------------------------


def _run(main: Any) -> Any:
    """Run a coroutine on uvloop when it is installed (uvicorn[standard] brings it): the harness and the
    peer must spend their core on calls, not on the event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="the gateway's base URL (default http://127.0.0.1:$PORT)")
    parser.add_argument("--calls", type=int, default=10, metavar="N")
    parser.add_argument("--duration", type=float, default=30.0, metavar="S", help="length of each call")
    parser.add_argument("--ramp", type=float, default=5.0, metavar="R", help="start the calls over R seconds")
    parser.add_argument("--gateway-pid", type=int, default=None, metavar="P", help="sample its CPU and RSS")
    add_signing_arguments(parser)  # as `gateway call`: a gateway with an auth token refuses unsigned calls
    parser.add_argument(
        "--peer-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also run the scripted Live peer on PORT (start the gateway with GEMINI_LIVE_URL at it) for "
        "per-frame and barge-in latencies",
    )
    parser.add_argument("--peer-in-process", action="store_true", help="the peer shares this process")
    parser.add_argument("--seed", type=int, default=1)


@contextlib.asynccontextmanager
async def _peer_for(args: argparse.Namespace) -> AsyncIterator[PeerLink | None]:
    if args.peer_port is None:
        yield None
        return
    link: Any = InProcessPeer(args.peer_port) if args.peer_in_process else ChildProcessPeer(args.peer_port)
    async with link:
        print(f"scripted Live peer at {link.url} (the gateway's GEMINI_LIVE_URL)", flush=True)
        yield link


def load_options_from_args(args: argparse.Namespace) -> LoadOptions:
    """`gateway load`'s arguments as LoadOptions; the URL and the signing default as `gateway call`'s do."""
    env = read_environment()
    auth_token, public_url = signing_from_args(args, env)
    return LoadOptions(
        url=args.url or local_gateway_url(env),
        calls=args.calls,
        duration_s=args.duration,
        ramp_s=args.ramp,
        gateway_pid=args.gateway_pid,
        seed=args.seed,
        auth_token=auth_token,
        public_url=public_url,
    )


async def _load_main(args: argparse.Namespace) -> int:
    options = load_options_from_args(args)
    async with _peer_for(args) as peer:
        run = await run_load(options, peer)
    figures = analyze(run)
    print(report(figures))
    if any("HTTP 403" in kind for kind in figures.errors):
        print(
            "gateway load: the gateway refused the calls (HTTP 403): sign them with its TWILIO_AUTH_TOKEN "
            "(--auth-token) and, behind a proxy, its PUBLIC_URL (--public-url)",
            file=sys.stderr,
        )
    return 1 if figures.errors or figures.completed < figures.calls else 0


def run_load_command(args: argparse.Namespace) -> int:
    if args.duration <= 1.0 or args.calls < 1:
        print("gateway load: need --calls >= 1 and --duration > 1", file=sys.stderr)
        return 2
    return _run(_load_main(args))
