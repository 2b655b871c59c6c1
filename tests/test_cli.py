"""The `gateway` command as users run it: real processes, real ports."""

from __future__ import annotations

import subprocess
import sys
import time
import wave

import httpx
import pytest

from tests.support.gateway import json_lines
from tests.support.processes import clean_env, free_port

pytestmark = pytest.mark.e2e


def test_serve_without_keys_starts_the_local_backend_and_says_so(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"], env=clean_env(PORT=str(port)), cwd=tmp_path,
        stderr=subprocess.PIPE, text=True,
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
    events = [line["event"] for line in json_lines(err)]
    assert "using_local_live_backend" in events and "gateway_ready" in events


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


def test_demo_runs_a_whole_call_offline(tmp_path):
    out = tmp_path / "call.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--out", str(out)], env=clean_env(), cwd=tmp_path,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(" agent " in line and "local offline test agent" in line for line in lines)
    assert any(" caller " in line for line in lines)
    assert any(line.startswith("end of caller speech -> first agent audio:") for line in lines)
    with wave.open(str(out)) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        assert wav.getnframes() > 8000 * 20
