"""Recordings apart from the audio (tests/test_recording_timeline.py has the rules, test_recording_e2e.py
a recorded call): settings, the twilio mode's TwiML and callback, the route's refusals, the notice,
retention."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import wave
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY
from twilio.request_validator import RequestValidator

from gateway.agents import AgentsFileError, load_agents
from gateway.app import Gateway, create_app
from gateway.call.call import OutboundRole
from gateway.config import ConfigError, load_settings
from gateway.recording.notice import with_notice
from gateway.recording.recorder import RecordingLine
from gateway.recording.retention import Retention
from gateway.recording.storage import FileStorage, part_key
from gateway.server import running_gateway
from tests.support.call_doubles import STARTED, MemoryLine
from tests.support.gateway import logged, settings_for

LIVE = "ws://127.0.0.1:9/unused"
TOKEN, PUBLIC = "secret-token-42", "https://gw.example.com"
FORM = {"CallSid": "CA" + "a" * 32, "AccountSid": "AC1", "From": "+15551230000", "To": "+15559870000"}


# --- settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"RECORDING": "yes"}, "RECORDING="),
        ({"RECORDINGS_URL": "ftp://host/dir"}, "RECORDINGS_URL="),
        ({"RECORDINGS_URL": "s3:///prefix"}, "RECORDINGS_URL="),
        ({"RECORDING_NOTICE": "/nowhere/notice.wav"}, "RECORDING_NOTICE:"),
        ({"RECORDING_NOTICE": 'Say "this"'}, "RECORDING_NOTICE must"),
        ({"RECORDING_RETENTION_DAYS": "-1"}, "RECORDING_RETENTION_DAYS="),
        ({"RECORDING_RETENTION_DAYS": "a month"}, "RECORDING_RETENTION_DAYS="),
    ],
)
def test_a_bad_recording_setting_stops_start_up_naming_it(env, names):
    with pytest.raises(ConfigError) as raised:
        load_settings(env, env_file=None)
    assert str(raised.value).startswith(names) and "\n" not in str(raised.value)


def test_recordings_url_a_file_is_refused_and_the_defaults_are_off(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"RECORDINGS_URL=.*is a file"):
        load_settings({"RECORDINGS_URL": f"file://{tmp_path / 'file'}"}, env_file=None)
    settings = load_settings({}, env_file=None)
    assert (settings.recording, settings.recordings_url, settings.recording_notice) == (
        "off",
        "./recordings",
        "",
    )
    assert settings.recording_retention_days == 0
    s3 = load_settings({"RECORDING": "gateway", "RECORDINGS_URL": "s3://bucket/calls"}, env_file=None)
    assert s3.recordings_url == "s3://bucket/calls"


def test_each_agent_may_say_who_records_its_calls(tmp_path):
    default = load_settings({}, env_file=None).agent_book.default
    path = tmp_path / "agents.toml"
    path.write_text('[agents.sales]\nnumbers = ["+15005550001"]\nrecording = "twilio"\n[agents.quiet]\n')
    book = load_agents(str(path), default)
    assert book.for_number("+15005550001").recording == "twilio"
    assert book.named("quiet").recording == ""  # RECORDING's
    path.write_text('[agents.sales]\nrecording = "always"\n')
    with pytest.raises(AgentsFileError, match=r"line 2.*recording = 'always' must be off, gateway or twilio"):
        load_agents(str(path), default)


# --- RECORDING=twilio -------------------------------------------------------------------------------------


async def voice_twiml(env: dict[str, str], query: str = "") -> ET.Element:
    async with running_gateway(settings_for(LIVE, **env)) as url:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{url}/twilio/voice{query}", data=FORM)
    assert response.status_code == 200
    return ET.fromstring(response.text)


async def test_twilio_records_the_call_from_before_the_stream_when_asked_to():
    """<Start><Recording> before <Connect>: Twilio records the whole call, both sides on their own channels,
    and calls back when the recording is ready (https://www.twilio.com/docs/voice/twiml/recording)."""
    root = await voice_twiml({"RECORDING": "twilio", "PUBLIC_URL": PUBLIC})
    assert [child.tag for child in root] == ["Start", "Connect", "Hangup"]
    recording = root.find("Start/Recording")
    assert recording is not None
    assert recording.attrib == {
        "channels": "dual",
        "recordingStatusCallback": f"{PUBLIC}/twilio/recording",
        "recordingStatusCallbackEvent": "completed absent",
    }
    # A call a drain moved here is still being recorded since its first answer: not started twice.
    moved = await voice_twiml({"RECORDING": "twilio", "PUBLIC_URL": PUBLIC}, "?moved=1")
    assert moved.find("Start") is None
    # Recorded by the gateway, or not at all: nothing for Twilio to do.
    for mode in ("gateway", "off"):
        assert (await voice_twiml({"RECORDING": mode})).find("Start") is None


async def test_the_recording_callback_is_signed_and_puts_the_recording_in_the_calls_record(capsys):
    form = {
        "CallSid": FORM["CallSid"], "AccountSid": "AC1", "RecordingSid": "RE1",
        "RecordingStatus": "completed",
        "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
        "RecordingDuration": "42", "RecordingChannels": "2",
    }  # fmt: skip
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/recording", form)
    settings = settings_for(
        LIVE, PUBLIC_URL=PUBLIC, TWILIO_AUTH_TOKEN=TOKEN, RECORDING="twilio", CALLS_API_TOKEN="api"
    )
    app = create_app(settings)
    capsys.readouterr()
    async with running_gateway(settings, app=app) as url, httpx.AsyncClient(base_url=url) as client:
        for headers in ({}, {"X-Twilio-Signature": "bad"}):
            refused = await client.post("/twilio/recording", data=form, headers=headers)
            assert refused.status_code == 403
        signed = await client.post("/twilio/recording", data=form, headers={"X-Twilio-Signature": signature})
        assert signed.status_code == 204
        records = app.state.gateway.records
        await records.flush(5.0)
        record = await records.get_call(form["CallSid"])  # the call's own record may come before or after
    assert record is not None and record.recording_url == form["RecordingUrl"]
    assert (record.recording_s, record.recording_parts) == (42.0, 1)
    events = [e["event"] for e in logged(capsys)]
    assert events.count("recording_signature_rejected") == 2 and events.count("recording_status") == 1


# --- the route --------------------------------------------------------------------------------------------


async def test_the_recording_route_refuses_without_a_token_and_finds_no_path_outside_the_store(tmp_path):
    sid = FORM["CallSid"]
    (tmp_path / sid).mkdir()
    (tmp_path / sid / "20260101T000000000000Z.flac").write_bytes(b"fLaC" + bytes(100))
    (tmp_path / "secret.flac").write_bytes(b"not yours")
    env = {"RECORDING": "gateway", "RECORDINGS_URL": str(tmp_path)}
    async with running_gateway(settings_for(LIVE, **env)) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get(f"/calls/{sid}/recording")).status_code == 403  # no CALLS_API_TOKEN: off
    async with running_gateway(settings_for(LIVE, CALLS_API_TOKEN="api", **env)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                refused = await client.get(f"/calls/{sid}/recording", headers=headers)
                assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            auth = {"Authorization": "Bearer api"}
            ok = await client.get(f"/calls/{sid}/recording", headers=auth)
            assert ok.status_code == 200 and ok.content.startswith(b"fLaC")
            assert ok.headers["accept-ranges"] == "bytes" and ok.headers["x-recording-parts"] == "1"
            assert (await client.get(f"/calls/{sid}/recording?part=2", headers=auth)).status_code == 404
            assert (await client.get(f"/calls/{sid}/recording?part=x", headers=auth)).status_code == 400
            for other in ("CAnone", "..", "%2E%2E", "secret.flac", "a%2Fb"):
                assert (await client.get(f"/calls/{other}/recording", headers=auth)).status_code == 404


# --- the notice -------------------------------------------------------------------------------------------


def test_a_text_notice_comes_first_word_for_word_then_the_greeting():
    assert (
        with_notice("This call is recorded.", "")
        == '[Say this now, word for word, then stop: "This call is recorded."]'
    )
    composed = with_notice("This call is recorded.", "Greet the caller.")
    assert composed.startswith('[First say this, word for word: "This call is recorded."')
    assert composed.endswith("Greet the caller.")


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.astype("<i2").tobytes())


async def test_a_prompt_notice_is_played_before_anything_else_and_not_to_a_moved_call(tmp_path):
    prompt = tmp_path / "notice.wav"
    write_wav(prompt, np.full(16000, 1000), 16000)  # one second at 16 kHz: played at the line's 8 kHz
    settings = settings_for(LIVE, RECORDING="twilio", RECORDING_NOTICE=str(prompt))
    gw = Gateway(settings)
    async with contextlib.AsyncExitStack() as stack:
        await gw.recordings.start(stack, settings)
        line = MemoryLine()
        same, prepare, _ = await gw.recorded(line, STARTED, None)
        assert same is line  # Twilio records: the line is the carrier's own
        assert [len(pcm) for pcm in line.actions("play")] == [8000 * 2]  # type: ignore[arg-type]
        chosen = await prepare(STARTED, False)
        assert chosen.agent.greeting == settings.greeting  # the prompt says it: the greeting is the agent's
        moved = MemoryLine()
        await gw.recorded(moved, dataclasses.replace(STARTED, moved=True), None)
        assert moved.actions("play") == []  # told on the instance it came from


async def test_a_text_notice_is_the_agents_first_words_on_a_recorded_call_only(tmp_path):
    notice = "This call is recorded."
    env = {"RECORDING_NOTICE": notice, "RECORDINGS_URL": str(tmp_path)}
    recorded = Gateway(settings_for(LIVE, RECORDING="gateway", **env))
    async with contextlib.AsyncExitStack() as stack:
        await recorded.recordings.start(stack, recorded.settings)
        line, prepare, _ = await recorded.recorded(MemoryLine(), STARTED, None)
        assert isinstance(line, RecordingLine)
        chosen = await prepare(STARTED, False)
        assert chosen.agent.greeting == with_notice(notice, recorded.settings.greeting)
        _, prepare, role = await recorded.recorded(MemoryLine(), STARTED, OutboundRole(opening="Hi Ann."))
        assert role is not None and role.opening == "This call is recorded. Hi Ann."
        recorded.recordings.call_ended(line, _summary())
        await recorded.recordings.stored()
    not_recorded = Gateway(settings_for(LIVE, **env))
    _, prepare, _ = await not_recorded.recorded(MemoryLine(), STARTED, None)
    assert (await prepare(STARTED, False)).agent.greeting == not_recorded.settings.greeting


def _summary():
    from gateway.call.outcome import Outcome
    from gateway.call.summary import CallSummary

    now = datetime.now(UTC)
    return CallSummary(STARTED.call_sid, "", "", "", "", "m", now, now, Outcome.CALLER_HUNG_UP)


# --- retention ----------------------------------------------------------------------------------------------


class StubRecords:
    """The records store as retention sees it: told to let go of a call's recording, or down."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.cleared: list[str] = []

    async def clear_recording(self, call_sid: str) -> None:
        if self.down:
            raise ConnectionError("the records database is down")
        self.cleared.append(call_sid)


def stored_part(storage: FileStorage, call_sid: str, stored_at: datetime) -> str:
    key = part_key(call_sid, stored_at)
    path = storage.directory / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"fLaC")
    os.utime(path, (stored_at.timestamp(), stored_at.timestamp()))
    return key


async def test_retention_deletes_what_is_older_than_its_days_logs_each_and_clears_the_record(
    tmp_path, capsys
):
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    storage = FileStorage(tmp_path)
    old = stored_part(storage, "CAold", now - timedelta(days=31))
    older = stored_part(storage, "CAolder", now - timedelta(days=400))
    kept = stored_part(storage, "CAnew", now - timedelta(days=29, hours=23))
    abandoned = stored_part(storage, "CAkilled", now - timedelta(days=40)) + ".part"  # its process was killed
    (tmp_path / abandoned[: -len(".part")]).rename(tmp_path / abandoned)
    records = StubRecords(down=True)
    retention = Retention(storage, records, days=30, clock=lambda: now)  # type: ignore[arg-type]
    deleted_before = REGISTRY.get_sample_value("gateway_recordings_total", {"result": "deleted"}) or 0.0
    capsys.readouterr()
    assert await retention.sweep() == []  # the records database is down: nothing is deleted yet
    assert (tmp_path / old).exists() and (tmp_path / older).exists()
    records.down = False
    assert await retention.sweep() == [abandoned, old, older]
    assert records.cleared == ["CAkilled", "CAold", "CAolder"]
    assert not (tmp_path / old).exists() and not (tmp_path / "CAold").exists() and (tmp_path / kept).exists()
    lines = [
        e
        for e in logged(capsys)
        if e["event"] in ("recording_deleted", "recording_kept") and e["recording"] != abandoned
    ]
    assert [(e["event"], e["recording"]) for e in lines] == [
        ("recording_kept", old),
        ("recording_kept", older),
        ("recording_deleted", old),
        ("recording_deleted", older),
    ]
    assert lines[-1]["age_days"] == 400
    deleted = REGISTRY.get_sample_value("gateway_recordings_total", {"result": "deleted"})
    assert deleted == deleted_before + 3
    later = Retention(storage, records, days=30, clock=lambda: now + timedelta(days=1))  # type: ignore[arg-type]
    assert await later.sweep() == [kept]
