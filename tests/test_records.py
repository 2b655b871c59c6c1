"""Call records and transcripts in both databases: SQLite (default) and a real PostgreSQL server.

PostgreSQL: `.ci/run` starts one and exports TEST_DATABASE_URL; locally, `bash .ci/postgres.sh` prints one.
Without it the PostgreSQL cases skip, except in CI, where they must run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from gateway.devtools.simulator import CallScript, place_call
from gateway.records import CallRecord, Records, SqliteStore, TranscriptLine, open_store, parse_since
from gateway.server import running_gateway
from tests.support.audio import agent_tone, caller_tone
from tests.support.gateway import postgres_url, settings_for
from tests.support.live_peer import LivePeer, PeerSession
from tests.support.processes import clean_env

TOKEN = "calls-api-token-for-tests"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    return postgres_url()


def new_sid() -> str:
    return "CA" + uuid.uuid4().hex


async def talk(session: PeerSession) -> None:
    """The agent answers with audio, a transcript and usage; the caller's words are transcribed."""
    await session.send({"serverContent": {"inputTranscription": {"text": "What time is it?"}}})
    await session.send_audio(agent_tone(0.4))
    await session.send({"serverContent": {"outputTranscription": {"text": "It is noon."}}})
    await session.send(
        {
            "serverContent": {"turnComplete": True},
            "usageMetadata": {
                "promptTokenCount": 10,
                "responseTokenCount": 25,
                "totalTokenCount": 35,
                "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 25}],
            },
        }
    )


async def _get_when_written(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> httpx.Response:
    """The record is written off the audio path, just after the call: wait for it (bounded)."""
    async with asyncio.timeout(10):
        while True:
            response = await client.get(url, headers=headers)
            if response.status_code != 404:
                return response
            await asyncio.sleep(0.05)


@pytest.mark.e2e
async def test_a_simulated_call_is_recorded_with_its_transcript(database_url):
    sid = new_sid()
    async with LivePeer(talk) as peer:
        settings = settings_for(
            peer.url, AGENT_GREETING="none", DATABASE_URL=database_url, CALLS_API_TOKEN=TOKEN
        )
        async with running_gateway(settings) as url:
            await place_call(
                url,
                CallScript(audio=caller_tone(0.5), trailing_silence_s=1.0),
                call_sid=sid,
                from_="+15551230000",
                to="+15559870000",
            )
            async with httpx.AsyncClient() as client:
                record = await _get_when_written(
                    client, f"{url}/calls/{sid}", {"Authorization": f"Bearer {TOKEN}"}
                )
                no_token = await client.get(f"{url}/calls/{sid}")
                wrong = await client.get(f"{url}/calls/{sid}", headers={"Authorization": "Bearer nope"})
                unknown = await client.get(
                    f"{url}/calls/CAunknown", headers={"Authorization": f"Bearer {TOKEN}"}
                )
    assert no_token.status_code == 401 and wrong.status_code == 401 and unknown.status_code == 404
    assert record.status_code == 200
    body = record.json()
    assert body["call_sid"] == sid and body["stream_sid"].startswith("MZ")
    assert (body["from_number"], body["to_number"]) == ("+15551230000", "+15559870000")
    assert body["agent"].startswith("gemini-2.5-flash-native-audio")
    assert body["outcome"] == "caller_hung_up" and body["switches"] == 0
    assert body["total_tokens"] == 35 and body["tokens_by_modality"] == {"response_audio": 25}
    started, ended = datetime.fromisoformat(body["started_at"]), datetime.fromisoformat(body["ended_at"])
    assert timedelta(seconds=1) < ended - started < timedelta(seconds=30)
    assert "resumption_handle" not in body  # it would let anyone continue the conversation
    lines = [(line["role"], line["text"]) for line in body["transcript"]]
    assert lines == [("caller", "What time is it?"), ("agent", "It is noon.")]

    # the same record, straight from the database
    store = open_store(database_url)
    await store.open()
    try:
        stored = await store.get_call(sid)
        listed = await store.list_calls(since=started - timedelta(seconds=1))
    finally:
        await store.close()
    assert stored is not None and stored.total_tokens == 35 and len(stored.transcript) == 2
    assert sid in [r.call_sid for r in listed]


async def test_a_call_handed_between_instances_adds_up_in_one_record(database_url):
    sid = new_sid()
    t0 = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    first = CallRecord(
        sid, stream_sid="MZ1", from_number="+1555", to_number="+1666", agent="m", started_at=t0,
        ended_at=t0 + timedelta(minutes=5), outcome="moved", total_tokens=100,
        tokens_by_modality={"AUDIO": 80, "TEXT": 20}, switches=1, resumption_handle="h-1",
    )  # fmt: skip
    second = CallRecord(
        sid, stream_sid="MZ2", from_number="+1555", to_number="+1666", agent="m",
        started_at=t0 + timedelta(minutes=5, seconds=1), ended_at=t0 + timedelta(minutes=9),
        outcome="caller_hung_up", total_tokens=50, tokens_by_modality={"AUDIO": 50}, switches=2,
    )  # fmt: skip
    store = open_store(database_url)
    await store.open()
    try:
        await store.save_handle(sid, "h-0")  # the draining instance stores the handle before redirecting
        await store.save_call(first)
        assert (await store.get_call(sid)).resumption_handle == "h-1"  # type: ignore[union-attr]
        await store.save_call(second)
        await store.add_transcript(sid, TranscriptLine(t0, "caller", "hello"))
        merged = await store.get_call(sid)
    finally:
        await store.close()
    assert merged is not None
    assert (merged.started_at, merged.ended_at) == (t0, t0 + timedelta(minutes=9))
    assert merged.outcome == "caller_hung_up" and merged.stream_sid == "MZ2"
    assert merged.total_tokens == 150 and merged.tokens_by_modality == {"AUDIO": 130, "TEXT": 20}
    assert merged.switches == 3
    assert [(line.role, line.text) for line in merged.transcript] == [("caller", "hello")]


# The calls table as databases created before Live switches were called so: the column was `reconnects`.
OLD_CALLS_TABLE = """
CREATE TABLE calls (
    call_sid TEXT PRIMARY KEY, stream_sid TEXT NOT NULL DEFAULT '', account_sid TEXT NOT NULL DEFAULT '',
    from_number TEXT NOT NULL DEFAULT '', to_number TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL DEFAULT '',
    started_at {time}, ended_at {time}, outcome TEXT NOT NULL DEFAULT '',
    prompt_tokens BIGINT NOT NULL DEFAULT 0, response_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens BIGINT NOT NULL DEFAULT 0, tokens_by_modality TEXT NOT NULL DEFAULT '{{}}',
    reconnects INTEGER NOT NULL DEFAULT 0, resumption_handle TEXT NOT NULL DEFAULT ''
)
"""
OLD_STARTED = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def old_database_url(request, tmp_path):
    """A database with an older calls table, holding one call that switched Live connections 4 times.
    PostgreSQL: in a schema of its own (dropped afterwards), so the shared test database is left alone."""
    if request.param == "sqlite":
        path = tmp_path / "old.sqlite3"
        db = sqlite3.connect(path)
        with db:
            db.execute(OLD_CALLS_TABLE.format(time="TEXT"))
            db.execute(
                "INSERT INTO calls (call_sid, started_at, outcome, reconnects) VALUES (?, ?, ?, ?)",
                ("CAold", OLD_STARTED.isoformat(), "moved", 4),
            )
        db.close()
        yield f"sqlite:///{path}"
        return
    import asyncpg

    url = postgres_url()
    schema = f"old_calls_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        await admin.execute(f"SET search_path TO {schema}")
        await admin.execute(OLD_CALLS_TABLE.format(time="TIMESTAMPTZ"))
        await admin.execute(
            "INSERT INTO calls (call_sid, started_at, outcome, reconnects) VALUES ($1, $2, $3, $4)",
            "CAold", OLD_STARTED, "moved", 4,
        )  # fmt: skip
        yield f"{url}{'&' if '?' in url else '?'}search_path={schema}"  # asyncpg: a server setting
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def test_an_older_database_has_its_reconnects_column_renamed_to_switches(old_database_url):
    later = CallRecord(
        "CAold", started_at=OLD_STARTED + timedelta(minutes=5), ended_at=OLD_STARTED + timedelta(minutes=9),
        outcome="caller_hung_up", switches=1,
    )  # fmt: skip
    store = open_store(old_database_url)
    await store.open()
    try:
        before = await store.get_call("CAold")
        await store.save_call(later)
    finally:
        await store.close()
    assert before is not None and before.switches == 4 and before.outcome == "moved"
    store = open_store(old_database_url)
    await store.open()  # a second start finds nothing left to rename
    try:
        after = await store.get_call("CAold")
        listed = await store.list_calls()
    finally:
        await store.close()
    assert after is not None and after.switches == 5 and after.started_at == OLD_STARTED
    assert [r.call_sid for r in listed] == ["CAold"]
    # The outbound columns were added, empty for a call that was answered, not placed.
    assert (after.direction, after.call_status, after.amd_wait_ms, after.machine_action) == ("", "", None, "")
    assert before.carrier == "twilio"  # calls stored before other lines existed came through Twilio


async def test_a_call_keeps_the_carrier_of_the_line_it_started_on(database_url):
    store = open_store(database_url)
    await store.open()
    try:
        first = CallRecord("CAline", started_at=OLD_STARTED, ended_at=OLD_STARTED + timedelta(minutes=1),
                           outcome="moved", carrier="telnyx")  # fmt: skip
        await store.save_call(first)
        assert first.ended_at is not None
        later = dataclasses.replace(
            first, started_at=first.ended_at, ended_at=first.ended_at + timedelta(minutes=1),
            outcome="caller_hung_up", carrier="browser",
        )  # fmt: skip
        await store.save_call(later)
        stored = await store.get_call("CAline")
    finally:
        await store.close()
    assert stored is not None and stored.carrier == "telnyx" and stored.outcome == "caller_hung_up"
    assert stored.public()["carrier"] == "telnyx"


async def test_an_outbound_call_s_parts_make_one_record_whatever_their_order(database_url):
    """Placed (the API), Twilio's status callbacks (one of them late), the call's own record at its end."""
    sid = new_sid()
    t0 = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    placed = CallRecord(
        sid, from_number="+12025550100", to_number="+12125550123", started_at=t0, direction="outbound",
        call_status="queued", campaign="reminders-1",
    )  # fmt: skip
    call = CallRecord(
        sid, stream_sid="MZ1", from_number="+12025550100", to_number="+12125550123", agent="m",
        started_at=t0 + timedelta(seconds=9), ended_at=t0 + timedelta(seconds=40), outcome="agent_hung_up",
        direction="outbound", answered_by="machine_end_beep", amd_wait_ms=8034, amd_duration_ms=8000,
        machine_action="message_left",
    )  # fmt: skip
    completed = CallRecord(sid, direction="outbound", call_status="completed")
    ringing_late = CallRecord(sid, direction="outbound", call_status="ringing")
    busy = new_sid()
    store = open_store(database_url)
    await store.open()
    try:
        for part in (placed, completed, call, ringing_late):
            await store.save_call(part)
        record = await store.get_call(sid)
        await store.save_call(CallRecord(busy, direction="outbound", call_status="busy", outcome="busy"))
        await store.save_call(dataclasses.replace(placed, call_sid=busy))  # the API's write came last
        never_answered = await store.get_call(busy)
    finally:
        await store.close()
    assert record is not None
    assert (record.started_at, record.ended_at, record.outcome) == (t0, call.ended_at, "agent_hung_up")
    assert (record.call_status, record.answered_by) == ("completed", "machine_end_beep")
    assert record.machine_action == "message_left"
    assert (record.amd_wait_ms, record.amd_duration_ms, record.campaign) == (8034, 8000, "reminders-1")
    assert never_answered is not None
    assert (never_answered.call_status, never_answered.outcome) == ("busy", "busy")
    assert never_answered.to_number == "+12125550123"


async def test_an_older_database_gains_the_turn_taking_counts_and_they_add_up(old_database_url):
    later = CallRecord(
        "CAold", started_at=OLD_STARTED + timedelta(minutes=5), ended_at=OLD_STARTED + timedelta(minutes=9),
        outcome="caller_hung_up", barge_ins_local=2, barge_ins_server=1, barge_ins_guarded=3, stalls=1,
        stall_recoveries=1,
    )  # fmt: skip
    store = open_store(old_database_url)
    await store.open()  # the columns are added, zero for the calls already there
    try:
        before = await store.get_call("CAold")
        await store.save_call(later)
        await store.save_call(dataclasses.replace(later, stream_sid="MZ2", barge_ins_local=1))
        after = await store.get_call("CAold")
    finally:
        await store.close()
    assert before is not None and (before.barge_ins_local, before.stalls, before.switches) == (0, 0, 4)
    assert after is not None
    counts = (after.barge_ins_local, after.barge_ins_server, after.barge_ins_guarded, after.stalls)
    assert counts == (3, 2, 6, 2) and after.stall_recoveries == 2


class SlowStore(SqliteStore):
    """A database that takes its time: writes wait until the test lets them through."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()

    async def add_transcript(self, call_sid: str, line: TranscriptLine) -> None:
        await self.gate.wait()
        await super().add_transcript(call_sid, line)


async def test_a_slow_database_never_blocks_a_call_and_overflow_is_counted(tmp_path):
    store = SlowStore(str(tmp_path / "slow.sqlite3"))
    records = Records(store, queue_size=3)
    await records.start()

    def dropped() -> float:
        return REGISTRY.get_sample_value("gateway_records_dropped_total", {"reason": "queue_full"}) or 0.0

    before = dropped()
    try:
        for i in range(10):  # returns at once every time: the writer holds one, the queue three
            records.transcript("CAslow", "caller", f"line {i}")
        await asyncio.sleep(0.05)
        assert dropped() - before >= 6
        store.gate.set()
    finally:
        await records.stop()
    await store.open()
    try:
        assert await store.get_call("CAslow") is None  # transcript lines only; no call row was written
        kept = await store._run(lambda db: db.execute("SELECT count(*) FROM transcript_lines").fetchone()[0])
    finally:
        await store.close()
    assert kept + (dropped() - before) == 10 and kept >= 3


def test_since_accepts_durations_and_dates():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-11-24", now) == datetime(2026, 11, 24, tzinfo=UTC)
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday", now)


@pytest.mark.e2e
def _calls_into_a_closed_pipe(url: str, cwd: Path) -> tuple[int, str]:
    """`gateway calls --json` whose reader has gone before it writes a byte: (exit status, stderr)."""
    piped = subprocess.Popen(
        [sys.executable, "-m", "gateway", "calls", "--json"], env=clean_env(DATABASE_URL=url), cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert piped.stdout is not None and piped.stderr is not None
    piped.stdout.close()
    err = piped.stderr.read()
    return piped.wait(timeout=60), err


async def test_gateway_calls_lists_recent_calls(tmp_path):
    url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    now = datetime.now(UTC)
    store = open_store(url)
    await store.open()
    try:
        for sid, age in (("CArecent", timedelta(minutes=10)), ("CAold", timedelta(days=3))):
            await store.save_call(
                CallRecord(sid, from_number="+1555", started_at=now - age, ended_at=now - age, outcome="x")
            )
    finally:
        await store.close()
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "gateway", "calls", *args], env=clean_env(DATABASE_URL=url), cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    table = run("--since", "1h")
    assert table.returncode == 0, table.stderr
    assert "CArecent" in table.stdout and "CAold" not in table.stdout
    listed = json.loads(run("--json").stdout)
    assert [r["call_sid"] for r in listed] == ["CArecent", "CAold"]
    assert run("--since", "whenever").returncode == 2
    # A reader that stops early (`gateway calls --json | head`) ends it quietly, as other tools end.
    assert _calls_into_a_closed_pipe(url, tmp_path) == (141, "")


def test_the_database_password_never_reaches_a_log_line(capsys):
    import structlog

    from gateway.app import create_app

    url = "postgresql://gateway:s3cret-db-passw0rd@db.internal:5432/calls"
    create_app(settings_for("ws://127.0.0.1:9/live", DATABASE_URL=url))
    log = structlog.get_logger("test")
    log.error("db_down", error=f"could not connect to {url}", detail="s3cret-db-passw0rd")
    err = capsys.readouterr().err
    assert "db_down" in err and "s3cret-db-passw0rd" not in err and url not in err


@pytest.mark.e2e
async def test_a_stream_refused_at_admission_leaves_no_record(tmp_path):
    import websockets

    from gateway.twilio.protocol import TwilioSender

    database_url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    sid = new_sid()
    async with LivePeer() as peer:
        async with running_gateway(settings_for(peer.url, DATABASE_URL=database_url)) as url:
            async with websockets.connect(url.replace("http", "ws") + "/twilio/media") as ws:
                sender = TwilioSender("MZ" + "1" * 32)
                await ws.send(sender.connected())
                await ws.send(sender.start(sid, "AC" + "0" * 32, {"token": "not-a-token"}))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            # the refusal is counted; a call that was taken is recorded (the writer is the same)
            await place_call(url, CallScript(audio=caller_tone(0.2), trailing_silence_s=0.2))
    store = open_store(database_url)
    await store.open()
    try:
        assert await store.get_call(sid) is None
        assert len(await store.list_calls()) == 1
    finally:
        await store.close()
    assert not peer.sessions[1:]  # no Live session for the refused stream


async def test_recordings_in_the_record_parts_of_a_moved_call_and_twilios_callback(old_database_url):
    """An older database gains the recording columns. A call moved by a drain has a part per instance: the
    record keeps the first part's URL, the parts' count and their total length. Twilio's callback, before
    or after the call's own record and told twice, sets the recording once; retention clears it."""
    t0 = OLD_STARTED + timedelta(minutes=10)
    first = CallRecord(
        "CAold", stream_sid="MZa", started_at=t0, ended_at=t0 + timedelta(seconds=30), outcome="moved",
        recording_url="file:///r/CAold/a.flac", recording_s=30.0, recording_parts=1,
    )  # fmt: skip
    second = dataclasses.replace(
        first, stream_sid="MZb", started_at=first.ended_at, ended_at=t0 + timedelta(seconds=50),
        outcome="caller_hung_up", recording_url="file:///r/CAold/b.flac", recording_s=20.0,
    )  # fmt: skip
    twilio = CallRecord(
        "CAtw", recording_url="https://api.twilio.com/RE1", recording_s=42.0, recording_parts=1
    )
    call = CallRecord("CAtw", stream_sid="MZc", started_at=t0, ended_at=t0 + timedelta(seconds=42))
    store = open_store(old_database_url)
    await store.open()
    try:
        before = await store.get_call("CAold")
        for part in (second, first, first):  # in any order, and a retried write counted once
            await store.save_call(part)
        moved = await store.get_call("CAold")
        for part in (twilio, call, twilio):
            await store.save_call(part)
        recorded_by_twilio = await store.get_call("CAtw")
        await store.clear_recording("CAold")
        cleared = await store.get_call("CAold")
    finally:
        await store.close()
    assert before is not None and (before.recording_url, before.recording_s, before.recording_parts) == (
        "",
        None,
        0,
    )
    assert moved is not None
    assert (moved.recording_url, moved.recording_s, moved.recording_parts) == (
        "file:///r/CAold/a.flac",
        50.0,
        2,
    )
    assert moved.public()["recording_url"] == "file:///r/CAold/a.flac"
    assert recorded_by_twilio is not None and recorded_by_twilio.started_at == t0
    assert (recorded_by_twilio.recording_url, recorded_by_twilio.recording_s) == (
        "https://api.twilio.com/RE1",
        42.0,
    )
    assert recorded_by_twilio.recording_parts == 1
    assert cleared is not None and (cleared.recording_url, cleared.recording_parts) == ("", 0)
    assert cleared.outcome == "caller_hung_up"
