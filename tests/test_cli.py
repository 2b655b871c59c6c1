"""The `gateway` command as users run it: real processes, real ports."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import wave
from datetime import UTC, datetime

import httpx
import pytest

from gateway.records import CallRecord, SqliteStore, TranscriptLine
from tests.support.gateway import json_lines
from tests.support.processes import clean_env, free_port

pytestmark = pytest.mark.e2e


def test_serve_without_keys_starts_the_local_backend_and_says_so(tmp_path):
    port = free_port()
    # An auth token without PUBLIC_URL is warned about, not refused (a Heroku button deploys like this).
    env = clean_env(PORT=str(port), TWILIO_AUTH_TOKEN="tok3n-for-the-test")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["status"] == "ok"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    lines = json_lines(err)
    events = [line["event"] for line in lines]
    assert "using_local_live_backend" in events and "gateway_ready" in events
    assert "resampler_not_compiled" not in events  # the install built gateway/_fir.c
    # once ready, it says where it listens
    (listening,) = [line for line in lines if line["event"] == "listening"]
    assert listening["port"] == port and listening["url"] == f"http://0.0.0.0:{port}"
    assert events.index("gateway_ready") < events.index("listening")
    (warning,) = [line for line in lines if line["event"] == "public_url_not_set"]
    assert warning["level"] == "warning" and "PUBLIC_URL" in warning["note"]


@pytest.mark.parametrize("processes", ["1", "2"])
def test_serve_on_a_port_in_use_says_so_in_one_line_at_once(tmp_path, processes):
    """Before anything slow (the local backend's models, which log as they load): one line, exit 1, whatever
    WEB_CONCURRENCY."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(PORT=str(port), WEB_CONCURRENCY=processes)
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"gateway serve: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another process there? set PORT or --port)"
    ], done.stderr


def test_bad_configuration_fails_at_start_up_with_a_useful_message(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"], env=clean_env(AGENT_LANGUAGE="en-GB"), cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "AGENT_LANGUAGE" in proc.stderr and "en-US" in proc.stderr


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LOG_PII", "sometimes", "true or false"),
        ("HTTP_HEADER_TIMEOUT_S", "0.1", "between 1 and 60"),
        ("HTTP_MAX_CONNECTIONS", "3", "at least 16"),
    ],
)
def test_log_and_slow_client_settings_are_checked_at_start_up(tmp_path, name, value, says):
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"], env=clean_env(**{name: value}), cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert name in proc.stderr and says in proc.stderr


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PORT": "99999"}, "PORT=99999 is not a TCP port: use 1 to 65535"),  # it listened on 34463
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL='verbose' must be one of debug, info"),  # was KeyError
        ({"GEMINI_MODEL": "nonsense"}, "GEMINI_MODEL='nonsense' is not a Live model"),  # every call failed
        ({"GEMINI_LIVE_URL": "wss://generativelanguage.googleapis.com", "TWILIO_AUTH_TOKEN": "tok3n-x"},
         "has no path: Live is served at a path ending in BidiGenerateContent"),  # every call got 404
        ({"AGENT_VOICE": "Nonsense"}, "AGENT_VOICE='Nonsense' is not a Live API voice"),
    ],
)  # fmt: skip
def test_settings_that_would_fail_every_call_stop_start_up_in_one_line(tmp_path, env, says):
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"], env=clean_env(**env), cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("gateway: configuration error: ") and says in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_port_flag_out_of_range_is_refused(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "70000"], env=clean_env(), cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2  # it listened on 4464
    assert "--port: 70000 is not a TCP port: use 1 to 65535" in proc.stderr


def gateway_calls(cwd, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "calls", *args], env=clean_env(**env), cwd=cwd,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_calls_reads_a_database_and_never_makes_one(tmp_path):
    # PORT is `gateway serve`'s: a bad one does not stop `gateway calls`
    proc = gateway_calls(tmp_path, PORT="abc")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "no call records at gateway-calls.sqlite3" in proc.stderr and "DATABASE_URL" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # it created no empty database


def test_calls_json_has_each_calls_transcript(tmp_path):
    async def write() -> None:
        store = SqliteStore(str(tmp_path / "gateway-calls.sqlite3"))
        await store.open()
        began = datetime.now(UTC)
        await store.save_call(CallRecord("CA1", started_at=began, ended_at=began, outcome="caller_hung_up"))
        await store.save_call(CallRecord("CA2", started_at=began, ended_at=began, outcome="caller_hung_up"))
        await store.add_transcript("CA1", TranscriptLine(began, "agent", "Hello, how can I help?"))
        await store.add_transcript("CA1", TranscriptLine(began, "caller", "What time is it?"))
        await store.close()

    asyncio.run(write())
    proc = gateway_calls(tmp_path, "--json", PORT="abc")
    assert proc.returncode == 0, proc.stderr
    calls = {c["call_sid"]: c for c in json.loads(proc.stdout)}
    assert [(line["role"], line["text"]) for line in calls["CA1"]["transcript"]] == [
        ("agent", "Hello, how can I help?"),
        ("caller", "What time is it?"),
    ]
    assert calls["CA2"]["transcript"] == []
    table = gateway_calls(tmp_path)
    assert table.returncode == 0 and "CA1" in table.stdout and "CA2" in table.stdout


def test_call_with_a_stereo_recording_says_it_uses_the_left_channel(tmp_path):
    stereo = tmp_path / "demo-call.wav"
    with wave.open(str(stereo), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(4 * 8000))
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "call", "--url", f"http://127.0.0.1:{free_port()}",
         "--audio", str(stereo)], env=clean_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "has 2 channels: the caller says what is on the first (left) one" in proc.stderr
    assert proc.returncode == 1 and "unreachable" in proc.stderr and "Traceback" not in proc.stderr


LATE_SHARE_BOUND = 0.10  # the demo's caller shared a process with the gateway: 34-40% late on 2 busy cores
STAMPED = re.compile(r"^ *(\d+\.\d\d)s  (caller|agent) +(.*)$")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan whose new parent has not reaped it yet is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_demo_runs_a_whole_call_offline(tmp_path):
    out, tmp = tmp_path / "call.wav", tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run(
        # PORT is `gateway serve`'s: the demo serves on free loopback ports, and a bad PORT does not stop it
        [sys.executable, "-m", "gateway", "demo", "--out", str(out)], cwd=tmp_path,
        env=clean_env(PORT="abc", TMPDIR=str(tmp)), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()

    # The gateway was a process of its own, stopped at the end: nothing left running, nothing left behind.
    pid = int(
        re.search(r"^gateway serve \(pid (\d+)\) ready at http://127\.0\.0\.1:\d+ ", proc.stdout, re.M)[1]
    )
    assert not alive(pid)
    assert f"gateway: a separate process, pid {pid}, stopped with SIGTERM (exit code 0)" in lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call.wav", "tmp"] and not any(tmp.iterdir())

    # The caller kept Twilio's pace, and says how well.
    late, sent = map(
        int, re.search(r"^caller pacing: (\d+) of (\d+) frames late", proc.stdout, re.M).groups()
    )
    assert sent > 1500 and late / sent < LATE_SHARE_BOUND

    # The conversation: lines stamped on the call's timeline, in order; the greeting first, then the
    # script's five caller lines (the pause inside the third is not a turn of its own), each with what was
    # said under what was heard.
    start = next(i for i, line in enumerate(lines) if line.startswith("the conversation"))
    end = lines.index("", start)
    said = [m.groups() for line in lines[start:end] if (m := STAMPED.match(line))]
    stamps = [float(at) for at, _, _ in said]
    assert stamps == sorted(stamps)
    assert said[0][1] == "agent" and "local offline test agent" in said[0][2] and stamps[0] < 8.0
    caller = [at for at, role, _ in said if role == "caller"]
    assert len(caller) == 5 and all(float(at) >= 8.0 for at in caller)  # after the 8 s left for the greeting
    assert [line for line in lines if line.startswith("caller line ")][-1].startswith("caller line 5 (")
    assert sum(line.strip().startswith("(said: ") for line in lines[start:end]) == 5
    assert re.search(r"^word accuracy of the local recognizer: \d+% of 26 words", proc.stdout, re.M)
    # The last line is a goodbye over the agent's answer (its voice and words are measured to be heard:
    # benchmarks/bench_asr.py --demo): the agent hangs up.
    assert "caller over agent audio" in proc.stdout
    assert "how the call ended: the agent said goodbye and hung up (end_call)" in proc.stdout
    assert sum(role == "agent" for _, role, _ in said) >= 2
    assert any(line.startswith("end of caller speech -> first agent audio:") for line in lines)
    with wave.open(str(out)) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        assert wav.getnframes() > 8000 * 20


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, -9)]
)
def test_demo_never_leaves_its_gateway_running(tmp_path, sig, code):
    """Ctrl-C, a SIGTERM, even a SIGKILL (Linux then SIGTERMs the gateway) in the middle of the call."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--out", str(tmp_path / "call.wav")], cwd=tmp_path,
        env=clean_env(TMPDIR=str(tmp_path)), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        # As at a terminal: a test run in the background (`cmd &` in a script: CI's, say) has SIGINT
        # ignored, and a child inherits that, so the demo would never see this Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    pid = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if found := re.match(r"gateway serve \(pid (\d+)\) ready", line):
                pid = int(found[1])
                break
        assert pid is not None and alive(pid)
        time.sleep(1.0)  # the call is under way
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_command_is_found_after_the_global_option() -> None:
    """`gateway --log-format json serve` is `serve` too (its metrics are set up for several processes)."""
    from gateway.cli import _command

    assert _command(["serve"]) == "serve"
    assert _command(["--log-format", "json", "serve", "--port", "8080"]) == "serve"
    assert _command(["--log-format=json", "serve"]) == "serve"
    assert _command(["--log-format", "json", "calls"]) == "calls"
    assert _command(["--help"]) is None
