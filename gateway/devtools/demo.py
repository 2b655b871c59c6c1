"""`gateway demo`: the whole product on one machine with no keys.

The gateway runs as it does in production, a process of its own (`gateway serve`, with its embedded local
Live backend, on a free loopback port, in a clean environment: no keys, no settings of yours); this process
is only the caller. The caller simulator dials in as Twilio would with a caller recording synthesised
offline (or a WAV you pass) and paces it in real time, so the latencies it measures are the product's, not
those of a simulator sharing an event loop with the gateway and its recognizer. The call is followed live,
then printed as a conversation: each line stamped with when its speech started on the call's timeline (the
caller's from the simulator's speech detection, the agent's from when its audio began to play to the
caller), with the words from the gateway's own call record. At the end: each caller line's response
latency, what became of each time the caller talked over the agent, how many of the caller's frames went
out late, and a stereo WAV of the call. The gateway is stopped with SIGTERM however the demo ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

import gateway
from gateway.devtools.simulator import (
    CLEAR_BOUND_S,
    MIN_TURN_GAP_S,
    RATE,
    AgentSpeech,
    CallerLine,
    CallObserver,
    CallResult,
    CallScript,
    Event,
    PlayoutTracker,
    agent_speech,
    caller_lines,
    place_call,
    summarize,
    write_stereo_wav,
)
from gateway.devtools.wavfile import load_caller_wav
from gateway.local_live.word_errors import word_errors

# What the demo caller says, and how long it then waits before its next line: the story of a call. The
# agent answers each line; the last one talks over the agent's answer to the one before it (barge-in),
# and its goodbye ends the call (`end_call`). The lines and the voice are ones the local recognizer was
# measured to hear (`benchmarks/bench_asr.py` measures it on other voices and phrases).
CALLER_LINES: tuple[tuple[str, float], ...] = (
    ("Hello, my name is John.", 4.5),
    ("What time is it?", 4.5),
    ("Repeat after me: the weather is lovely today.", 6.0),
    ("I want to talk to a human.", 1.8),  # the answer (~4 s) is still playing when the next line starts
    ("Okay, goodbye.", 6.0),
)
CALLER_VARIANT = "m6"  # espeak-ng's voice for the caller (the agent speaks with m3 or f3)
CALLER_WPM = 150
GREETING_WAIT_S = 8.0

READY_TIMEOUT_S = 120.0  # the gateway's start-up: imports, and the local backend loading its models
STOP_TIMEOUT_S = 30.0  # SIGTERM -> exit: its drain with no call in progress takes well under a second
RECORD_TIMEOUT_S = 10.0  # the call's record is written just after the call ends, off the call's path
TRANSCRIPT_SLACK_S = 0.25  # a transcript line belongs to speech that started at most this long after it

# Only what a Python process needs from this environment: none of the gateway's settings (keys, PORT, the
# agent's voice...), which would make the demo something else than the product as it ships.
_KEPT_ENV = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
        "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "SYSTEMROOT", "PYTHONPATH", "VIRTUAL_ENV",
    }
)  # fmt: skip


class DemoError(RuntimeError):
    """The demo could not run (the gateway did not start, the call could not be placed)."""


def caller_recording() -> bytes:
    """The demo caller's audio at 8 kHz, made offline with the same synthesiser in another voice."""
    from gateway.local_live.tts import synthesize_repeatably

    parts = []
    for text, pause_s in CALLER_LINES:
        parts.append(synthesize_repeatably(text, rate=RATE, variant=CALLER_VARIANT, wpm=CALLER_WPM))
        parts.append(bytes(int(pause_s * RATE) * 2))
    return b"".join(parts)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audio", metavar="WAV", help="your own caller recording (default: synthesised lines)"
    )
    parser.add_argument(
        "--out",
        default="demo-call.wav",
        metavar="WAV",
        help="stereo recording of the call: caller left, agent right (default demo-call.wav)",
    )


# --- the gateway, a process of its own ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_env(calls_api_token: str) -> dict[str, str]:
    """The gateway's environment: this one's basics, none of its settings; records in its working directory,
    readable over HTTP with `calls_api_token` (the words of the conversation come from there)."""
    env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV or k.startswith("LC_")}
    # It runs in a directory of its own (no .env there, its database too): make it import this gateway.
    root = Path(gateway.__file__).resolve().parent.parent
    if root.name not in {"site-packages", "dist-packages"}:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    env.update(
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        WEB_CONCURRENCY="1",  # one call: one process (the default is one per core)
        CALLS_API_TOKEN=calls_api_token,
        DATABASE_URL="sqlite:///calls.sqlite3",
        RECORDS_SPOOL_DIR="records-spool",
    )
    return env


def _child_main(argv: list[str]) -> int:
    """`python -m gateway.devtools.demo PARENT_PID serve ...`: `gateway serve` that Linux stops (SIGTERM) if
    the demo dies without stopping it itself (SIGKILL, a crash), so the demo never leaves a gateway behind."""
    parent = int(argv[0])
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the demo's own clean-up stops it
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        return 0  # the demo was gone before the line above took effect
    from gateway.cli import main

    return main(argv[1:])


@dataclass
class GatewayProcess:
    """`gateway serve` started by the demo: where it listens, and how to read its call records."""

    proc: subprocess.Popen[bytes]
    url: str
    calls_api_token: str
    log_path: Path
    started_s: float = 0.0  # from spawn to /healthz answering
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int:
        """SIGTERM, as a platform stops it (it drains, then exits), then wait; SIGKILL if it does not exit in
        time or if the wait is interrupted (a second Ctrl-C). Blocking, and safe to call again."""
        if self.exit_code is not None:
            return self.exit_code
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
        finally:
            if self.proc.poll() is None:  # interrupted while waiting: do not leave it behind
                self.proc.kill()
            self.exit_code = self.proc.wait()
        return self.exit_code


def _spawn(workdir: Path, port: int, token: str, extra_env: dict[str, str] | None = None) -> GatewayProcess:
    log_path = workdir / f"gateway-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            # Started from this (the main) thread: Linux's parent-death signal follows the thread that forked.
            [sys.executable, "-m", "gateway.devtools.demo", str(os.getpid()), "serve", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=workdir, env={**gateway_env(token), **(extra_env or {})}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=log,
            start_new_session=True,  # the terminal's Ctrl-C is the demo's to handle: it stops the gateway
        )  # fmt: skip
    return GatewayProcess(proc, f"http://127.0.0.1:{port}", token, log_path)


async def _wait_ready(gw: GatewayProcess, timeout_s: float) -> bool:
    """True once /healthz answers 200; False if the process exits first."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
        while time.monotonic() - started < timeout_s:
            if gw.proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(gw.url + "/healthz")).status_code == 200:
                    gw.started_s = time.monotonic() - started
                    return True
            await asyncio.sleep(0.1)
    raise DemoError(f"the gateway did not answer {gw.url}/healthz within {timeout_s:.0f} s")


@contextlib.asynccontextmanager
async def gateway_process(
    workdir: Path,
    ready_timeout_s: float = READY_TIMEOUT_S,
    env_for_port: Callable[[int], dict[str, str]] | None = None,
) -> AsyncIterator[GatewayProcess]:
    """`gateway serve` on a free loopback port until the block ends, then stopped, whatever happens.
    `env_for_port`: settings of its own, given the port it will serve on (PUBLIC_URL, say)."""
    token = secrets.token_urlsafe(24)
    for _attempt in range(3):  # the free port may be taken between choosing it and the gateway binding it
        port = _free_port()
        gw = _spawn(workdir, port, token, env_for_port(port) if env_for_port else None)
        try:
            if await _wait_ready(gw, ready_timeout_s):
                break
        except BaseException:
            gw.stop()
            raise
        gw.stop()
        if "address already in use" not in gw.log_tail().lower():
            raise DemoError(f"the gateway exited at start-up (code {gw.exit_code}):\n{gw.log_tail()}")
    else:
        raise DemoError("no free loopback port for the gateway after 3 tries")
    try:
        yield gw
    finally:
        gw.stop()


async def _call_record(gw: GatewayProcess, call_sid: str) -> dict[str, Any] | None:
    """The call's record from the gateway (`GET /calls/{sid}`), once it is written; None if it never is."""
    headers = {"Authorization": f"Bearer {gw.calls_api_token}"}
    deadline = time.monotonic() + RECORD_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError, ValueError):
                response = await http.get(f"{gw.url}/calls/{call_sid}", headers=headers)
                if response.status_code == 200:
                    record: dict[str, Any] = response.json()
                    if record.get("ended_at"):
                        return record
            await asyncio.sleep(0.2)
    return None


# --- following the call ---


class _Clock(CallObserver):
    """Where the stream's timeline starts on the wall clock (the records stamp transcript lines with it)."""

    def __init__(self) -> None:
        self.wall_t0: float | None = None

    def stream_started(self, t0: float) -> None:
        self.wall_t0 = time.time() - (time.monotonic() - t0)


class _LiveFeed:
    """One line per thing a listener would notice, stamped on the call's timeline, as it happens."""

    def __init__(self) -> None:
        self.playout = PlayoutTracker()
        self.last_speech_end: float | None = None
        self.agent_since = False

    def __call__(self, event: Event) -> None:
        speech = self.playout.feed(event)
        if speech is not None:
            if speech.cleared_at is None:
                self.agent_since = True
                _say(speech.start, "agent", "speaking")
            else:
                _say(event.t, "gateway", f"the caller talked over the agent: playback cleared "
                     f"({speech.flushed_s:.1f} s of its audio dropped)")  # fmt: skip
        elif event.kind == "speech_start":
            gap = None if self.last_speech_end is None else event.t - self.last_speech_end
            if gap is not None and gap < MIN_TURN_GAP_S and not self.agent_since:
                _say(event.t, "caller", f"goes on after a {gap:.2f} s pause")
            else:
                _say(event.t, "caller", "speaking")
        elif event.kind == "speech_end":
            self.last_speech_end = event.t
            self.agent_since = False


def _say(t: float, who: str, text: str) -> None:
    print(f"{t:7.2f}s  {who:<7} {text}", flush=True)


# --- the conversation ---


@dataclass
class Said:
    """One line of the conversation: who, when their speech started, their words (from the record)."""

    at: float
    role: str
    texts: list[str] = field(default_factory=list)
    note: str = ""


def _agent_note(speech: AgentSpeech) -> str:
    if speech.cleared_at is not None:
        return f"[cut off by the caller: {speech.heard_s:.1f} s heard, {speech.flushed_s:.1f} s never played]"
    if speech.call_ended:
        return f"[cut off by the end of the call: {speech.heard_s:.1f} s of {speech.received_s:.1f} s heard]"
    return ""


def _caller_note(line: CallerLine) -> str:
    if not line.pauses:
        return ""
    pauses = ", ".join(f"{p:.2f} s" for p in line.pauses)
    which = "the pause of" if len(line.pauses) == 1 else "the pauses of"
    return f"[one line: the agent did not answer {which} {pauses} inside it]"


def conversation(
    lines: list[CallerLine],
    speeches: list[AgentSpeech],
    transcript: list[tuple[float, str, str]],
) -> list[Said]:
    """The caller's lines and the agent's speech in order, each with the words of the transcript lines
    (call time, role, text) that belong to it: the speech of that role that started last before the line was
    written (transcripts come as, or after, the speech starts). A transcript line that no speech can own
    (an agent line whose audio never played) is kept, stamped with when it was written."""
    said = [Said(line.start, "caller", note=_caller_note(line)) for line in lines]
    said += [Said(speech.start, "agent", note=_agent_note(speech)) for speech in speeches]
    said.sort(key=lambda s: s.at)
    orphans = []
    for at, role, text in transcript:
        owners = [s for s in said if s.role == role and s.at <= at + TRANSCRIPT_SLACK_S]
        if owners:
            owners[-1].texts.append(text)
        else:
            orphans.append(Said(at, role, [text], note="[stamped when its transcript was written]"))
    return sorted(said + orphans, key=lambda s: s.at)


def _transcript_on_timeline(
    record: dict[str, Any] | None, wall_t0: float | None
) -> list[tuple[float, str, str]]:
    if record is None or wall_t0 is None:
        return []
    out = []
    for line in record.get("transcript", []):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            at = datetime.fromisoformat(line["at"]).timestamp() - wall_t0
            out.append((at, str(line["role"]), str(line["text"])))
    return out


def _print_conversation(
    result: CallResult, record: dict[str, Any] | None, wall_t0: float | None, script: list[str] | None
) -> list[tuple[str, str]]:
    """Print the conversation; return (said, heard) for each caller line of ``script`` (what the demo caller
    was made to say, in order; None for a recording of the user's own)."""
    lines = caller_lines(result.turns)
    said = conversation(lines, agent_speech(result), _transcript_on_timeline(record, wall_t0))
    print(
        "\nthe conversation (each line stamped with when its speech started: the caller's as the simulator"
        "\ndetected it, the agent's when its audio began to play to the caller; the words are the gateway's"
        "\nrecord of what its recognizer heard and what the agent said"
        + ("; under each caller line, what was said):" if script else "):")
    )
    if record is None:
        print("  (the gateway's call record could not be read: the words are missing)")
    pairs: list[tuple[str, str]] = []
    caller_index = 0
    for s in said:
        text = " ".join(s.texts) if s.texts else "(no transcript)"
        print(f"{s.at:7.2f}s  {s.role:<7} {text}" + (f"  {s.note}" if s.note else ""))
        if s.role == "caller" and script is not None and not s.note.startswith("[stamped"):
            if caller_index < len(script):
                print(f"{'':9}{'':8}(said: {script[caller_index]})")
                pairs.append((script[caller_index], " ".join(s.texts)))
            caller_index += 1
    return pairs


def word_accuracy(pairs: list[tuple[str, str]]) -> tuple[float, int] | None:
    """1 - word error rate over the caller's lines, and how many words were said (None: nothing said)."""
    errors = total = 0
    for said, heard in pairs:
        e, n = word_errors(said, heard)
        errors, total = errors + e, total + n
    return (max(0.0, 1 - errors / total), total) if total else None


def _write_recording(path: str, result: CallResult) -> str:
    """The call as a stereo WAV (caller left, agent right); where it is."""
    write_stereo_wav(path, result.sent, result.heard, RATE)
    return os.path.abspath(path)


def _how_it_ended(result: CallResult, record: dict[str, Any] | None) -> str:
    outcome = (record or {}).get("outcome", "")
    if outcome == "agent_hung_up":
        return "the agent said goodbye and hung up (end_call), and the gateway closed the line"
    return f"closed by the {result.closed_by or 'nobody'}" + (f" (outcome: {outcome})" if outcome else "")


# --- the command ---


async def run_demo(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopped_by: list[int] = []

    def on_signal(signum: int) -> None:  # SIGTERM, SIGHUP: end as Ctrl-C does, stopping the gateway first
        stopped_by.append(signum)
        if task is not None:
            task.cancel()

    handled = []
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)  # no SIGHUP on Windows, nor add_signal_handler
        with contextlib.suppress(NotImplementedError, RuntimeError):
            if signum is not None:
                loop.add_signal_handler(signum, on_signal, signum)
                handled.append(signum)
    try:
        return await _run_demo(args)
    except DemoError as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        if not stopped_by:
            raise  # Ctrl-C: asyncio.run turns it back into KeyboardInterrupt
        print(f"gateway demo: stopped by {signal.Signals(stopped_by[0]).name}", file=sys.stderr)
        return 128 + stopped_by[0]
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _run_demo(args: argparse.Namespace) -> int:
    audio = b""
    if args.audio:
        try:
            audio, channels = load_caller_wav(args.audio)
        except (OSError, ValueError) as exc:
            raise DemoError(f"cannot read --audio {args.audio}: {exc}") from exc
        if channels > 1:
            print(
                f"{args.audio} has {channels} channels: the caller says the first (left) one", file=sys.stderr
            )
    # The caller's recording is made while the gateway starts.
    recording = None if args.audio else asyncio.ensure_future(asyncio.to_thread(caller_recording))
    print(
        "starting the gateway: `gateway serve`, a process of its own, with its local Live backend...",
        flush=True,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="gateway-demo-") as workdir:
            async with gateway_process(Path(workdir)) as gw:
                if recording is not None:
                    audio = await recording
                print(
                    f"gateway serve (pid {gw.pid}) ready at {gw.url} in {gw.started_s:.1f} s; the caller "
                    f"(this process) places a call of {len(audio) / 2 / RATE + GREETING_WAIT_S + 2:.0f} s\n",
                    flush=True,
                )
                clock = _Clock()
                try:
                    result = await place_call(
                        gw.url,
                        CallScript(audio=audio, leading_silence_s=GREETING_WAIT_S, trailing_silence_s=2.0),
                        on_event=_LiveFeed(),
                        observer=clock,
                    )
                except Exception as exc:
                    raise DemoError(f"the call failed: {exc!r}\n{gw.log_tail()}") from exc
                record = await _call_record(gw, result.call_sid)
            code = gw.stop()
    finally:
        if recording is not None and not recording.done():
            recording.cancel()
    script = None if args.audio else [text for text, _ in CALLER_LINES]
    pairs = _print_conversation(result, record, clock.wall_t0, script)
    print()
    print(summarize(result))
    latencies = [line.response_latency for line in caller_lines(result.turns)]
    if any(v is not None for v in latencies):
        print(
            "end of caller speech -> first agent audio: "
            + ", ".join("no answer" if v is None else f"{v * 1000:.0f} ms" for v in latencies)
        )
    accuracy = word_accuracy(pairs)
    if accuracy is not None:
        print(
            f"word accuracy of the local recognizer: {accuracy[0]:.0%} of {accuracy[1]} words "
            "(phone audio, 8 kHz mu-law; what was heard vs what was said, above)"
        )
    print(f"how the call ended: {_how_it_ended(result, record)}")
    print(
        f"(a caller line joins what the caller said across pauses the agent left unanswered under "
        f"{MIN_TURN_GAP_S:.1f} s; talking over the agent, a clear is due within {CLEAR_BOUND_S:.1f} s)"
    )
    print(f"gateway: a separate process, pid {gw.pid}, stopped with SIGTERM (exit code {code})")
    print(f"recording: {_write_recording(args.out, result)} (caller left, agent right, 8 kHz)")
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
