"""The gateway under test: its settings, the stream token of an answered call, and its JSON log lines."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.config import Settings, load_settings
from gateway.devtools.simulator import parse_twiml
from gateway.live.protocol import LIVE_PATH

# Call records of tests go to a throw-away SQLite file, not the working directory's default.
_RECORDS_DIR = Path(tempfile.mkdtemp(prefix="gateway-test-records-"))
atexit.register(shutil.rmtree, _RECORDS_DIR, ignore_errors=True)  # one per test run, gone with it


# A Live URL nobody answers at, with the path GEMINI_LIVE_URL must have (for a gateway started in a process).
UNUSED_LIVE_URL = "ws://127.0.0.1:9" + LIVE_PATH.format(version="v1alpha")


def settings_for(live_url: str, **env: str) -> Settings:
    """Gateway settings pointed at a test Live peer; no .env file is read. Without a TWILIO_AUTH_TOKEN in
    `env` the gateway runs in development mode (no signature checks; stream tokens are still required).

    A placeholder URL nobody answers at (`ws://127.0.0.1:9/x`, a tarpit's `/ws`) gets Live's path, which
    GEMINI_LIVE_URL must have; test peers serve any path."""
    env.setdefault("DATABASE_URL", f"sqlite:///{_RECORDS_DIR / 'calls.sqlite3'}")
    env.setdefault("WEB_CONCURRENCY", "1")  # one process, whatever the machine's cores
    parts = urlsplit(live_url)
    if not parts.path.endswith("BidiGenerateContent"):
        live_url = f"{parts.scheme}://{parts.netloc}{LIVE_PATH.format(version='v1alpha')}"
    return load_settings({"GEMINI_LIVE_URL": live_url, "DEVELOPMENT_MODE": "true", **env}, env_file=None)


async def stream_token(url: str, call_sid: str) -> str:
    """Answer a call through the gateway's webhook and return the stream token its TwiML carries, as a test
    that opens the media socket by hand must present it in `start.customParameters`."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            url + "/twilio/voice", data={"CallSid": call_sid, "From": "+15550001111"}
        )
    return parse_twiml(response.text, url)[1]["token"]


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines in `text` (a captured stderr or a log file), parsed; other lines are skipped."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def logged(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The gateway's JSON log lines written to stderr since the last capture."""
    return json_lines(capsys.readouterr().err)


def postgres_url() -> str:
    """The PostgreSQL server of the records tests (TEST_DATABASE_URL): required in CI, else the test skips."""
    url = os.environ.get("TEST_DATABASE_URL", "")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must test PostgreSQL: .ci/run exports TEST_DATABASE_URL")
        pytest.skip("no PostgreSQL server: run `bash .ci/postgres.sh` and export TEST_DATABASE_URL")
    return url
