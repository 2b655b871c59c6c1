"""`gateway twilio configure` and `gateway twilio numbers`, as run by people, against the REST stand-in."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tests.support.processes import clean_env
from tests.support.twilio_api import fake_twilio_api

pytestmark = pytest.mark.e2e

ACCOUNT, TOKEN = "AC" + "3" * 32, "admin-test-auth-token"


async def gateway_twilio(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "twilio", *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_configure_points_the_number_at_the_service_and_says_what_changed():
    async with fake_twilio_api(ACCOUNT, TOKEN) as (api_url, api):
        api.add_number("+15550001111", voice_url="https://old.example.com/voice")
        other = api.add_number("+15550002222", voice_url="https://elsewhere.example.com/in")
        creds = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_API_BASE_URL": api_url}

        done = await gateway_twilio(
            "configure", "--number", "+15550001111", "--url", "https://voice.example.com/", **creds
        )
        listed = await gateway_twilio("numbers", **creds)
        unknown = await gateway_twilio(
            "configure", "--number", "+15559999999", "--url", "https://x.io", **creds
        )
        no_creds = await gateway_twilio("numbers", TWILIO_API_BASE_URL=api_url)
        wrong = await gateway_twilio("numbers", **{**creds, "TWILIO_AUTH_TOKEN": "wrong-token"})

    assert done.returncode == 0, done.stderr
    assert "voice_url: https://old.example.com/voice -> https://voice.example.com/twilio/voice" in done.stdout
    assert "status_callback: (none) -> https://voice.example.com/twilio/status" in done.stdout
    assert "voice_method: POST (unchanged)" in done.stdout
    (sid, form), *rest = api.number_updates
    assert not rest and sid == api.numbers[0]["sid"]
    assert form == {
        "VoiceUrl": "https://voice.example.com/twilio/voice",
        "VoiceMethod": "POST",
        "StatusCallback": "https://voice.example.com/twilio/status",
        "StatusCallbackMethod": "POST",
    }
    assert other["voice_url"] == "https://elsewhere.example.com/in"  # only the named number changed

    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    assert len(rows) == 2
    assert "+15550001111" in rows[0] and "POST https://voice.example.com/twilio/voice" in rows[0]
    assert "+15550002222" in rows[1] and "https://elsewhere.example.com/in" in rows[1]

    assert unknown.returncode == 2 and "+15559999999 is not a number of this account" in unknown.stderr
    assert no_creds.returncode == 2 and "TWILIO_ACCOUNT_SID" in no_creds.stderr
    # one line that says what to check, no traceback, and never the token
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert "HTTP 401" in wrong.stderr and "TWILIO_AUTH_TOKEN" in wrong.stderr
    assert "wrong-token" not in wrong.stderr


async def test_ordinary_failures_are_one_line_each_and_unrelated_settings_do_not_matter():
    async with fake_twilio_api(ACCOUNT, TOKEN) as (api_url, api):
        api.add_number("+15550001111")
        # PORT and LOG_LEVEL are `gateway serve`'s: bad ones do not stop `gateway twilio`
        creds = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_API_BASE_URL": api_url,
                 "PORT": "abc", "LOG_LEVEL": "verbose"}  # fmt: skip
        plain = await gateway_twilio("configure", "--number", "+15550001111", "--url", "http://x.io", **creds)
        wrong = await gateway_twilio(
            "configure", "--number", "+15550001111", "--url", "https://x.io",
            **{**creds, "TWILIO_AUTH_TOKEN": "wrong-token"},
        )  # fmt: skip
    gone = await gateway_twilio("numbers", **creds)  # the stand-in has stopped: nothing listens there

    assert plain.returncode == 0, plain.stderr
    assert "voice_url: (none) -> http://x.io/twilio/voice" in plain.stdout
    assert "warning: http://x.io is not https" in plain.stderr and "wss://" in plain.stderr
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1 and "HTTP 401" in wrong.stderr
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1, gone.stderr
    assert f"cannot reach Twilio's REST API at {api_url}" in gone.stderr
    assert "Connection refused" in gone.stderr and "Traceback" not in gone.stderr
