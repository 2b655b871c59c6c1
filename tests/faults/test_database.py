"""The records database frozen, down or unwritable: calls are carried as if it were there, and what they
would have written is kept and written once it is back (issue 12, scenarios 2 and 5; their outcomes, 11).

The doubles speak the real transports: `PostgresProxy` is a TCP proxy on loopback in front of a real
PostgreSQL (TEST_DATABASE_URL) that can freeze (bytes held both ways, nothing answered: a SIGSTOPped server
as its clients see it) and stop listening (the port refuses, as a server that is down); `Tarpit` accepts and
never answers (a frozen server from the start, no PostgreSQL needed); SQLite is made unopenable by a file
where its directory should be (the tests run as root, for whom a read-only directory is writable).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from prometheus_client import REGISTRY

from gateway.app import create_app
from gateway.devtools.simulator import CallResult, CallScript, place_call
from gateway.drain import SAVE_HANDLE_TIMEOUT_S
from gateway.records import WRITE_TIMEOUT_S, CallRecord, Records, open_store
from gateway.server import running_gateway
from tests.support.audio import agent_tone, caller_tone
from tests.support.gateway import json_lines, logged, postgres_url, settings_for
from tests.support.live_peer import LivePeer, PeerSession
from tests.support.processes import clean_env, free_port

HANDLE_LOOKUP_BOUND_S = 2.0  # what the architecture promises for the resumption-handle lookup
GREETING_BOUND_S = (
    3.0  # stream start -> the agent's greeting, with a frozen database (it was 12.6 s, 32 s here)
)
NO_WAIT_BOUND_S = 1.0  # the same once the store is known to be down: no lookup is waited for at all
START_UP_BOUND_S = 7.0  # a frozen database at start-up: OPEN_TIMEOUT_S (5 s) and the rest of the start-up
WRITTEN_BOUND_S = (
    12.0  # the database back -> the records that waited are in it (reconnect backoff at most 5 s)
)


def _via(url: str, port: int) -> str:
    """The same database URL, through a local port."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{port}"))


class PostgresProxy:
    """A TCP proxy on loopback in front of PostgreSQL: `freeze()` holds every byte both ways (connections
    stay open, nothing is answered, new connections are accepted and hang), `thaw()` lets them through;
    `stop()` closes the port (refused) and `start()` opens it again on the same port."""

    def __init__(self, upstream_url: str, port: int = 0) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.upstream_url = upstream_url
        self.port = port
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return _via(self.upstream_url, self.port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def freeze(self) -> None:
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                await self._thawed.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


class Tarpit:
    """A server that accepts TCP connections and never says a word: a frozen database from the start."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> Tarpit:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(OSError):
            while await reader.read(1 << 16):
                pass


async def greet(session: PeerSession) -> None:
    """The agent greets as soon as it is asked to (the greeting is a client turn), with a transcript."""
    async with asyncio.timeout(60):
        await session.got_turn.wait()
    await session.send({"serverContent": {"outputTranscription": {"text": "Hello, how can I help?"}}})
    await session.send_audio(agent_tone(0.3))
    await session.send({"serverContent": {"turnComplete": True}})


def new_sid() -> str:
    return "CA" + uuid.uuid4().hex


def greeting_after_s(result: CallResult) -> float:
    """From the stream's start to the first agent audio the caller heard (inf: none, the whole call)."""
    return next((event.t for event in result.events if event.kind == "media"), math.inf)


SCRIPT = CallScript(audio=caller_tone(0.2), trailing_silence_s=4.0)  # the caller hangs up after 4.2 s


async def health(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url + "/healthz")


async def written(database_url: str, sids: list[str], timeout_s: float) -> dict[str, CallRecord]:
    """The records of `sids` (with their transcripts), straight from the database: all of them, or those
    written when `timeout_s` has passed."""
    store = open_store(database_url)
    await store.open()
    found: dict[str, CallRecord] = {}
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while len(found) < len(sids):
                    for sid in sids:
                        record = await store.get_call(sid)
                        if record is not None and record.ended_at is not None and record.transcript:
                            found[sid] = record
                    await asyncio.sleep(0.1)
    finally:
        await store.close()
    return found


@contextlib.asynccontextmanager
async def proxied_postgres(port: int = 0, *, listening: bool = True) -> AsyncIterator[PostgresProxy]:
    proxy = PostgresProxy(postgres_url(), port)
    if listening:
        await proxy.start()
    try:
        yield proxy
    finally:
        proxy.thaw()
        await proxy.stop()


# --- scenario 2: a frozen database ----------------------------------------------------------------------


async def test_a_frozen_database_does_not_hold_up_the_greeting_and_its_records_are_written_after(tmp_path):
    async with proxied_postgres() as db, LivePeer(greet) as peer:
        settings = settings_for(peer.url, DATABASE_URL=db.url, RECORDS_SPOOL_DIR=str(tmp_path / "spool"))
        async with running_gateway(settings) as url:
            # Three at once, written: the pool holds three open connections, idle, when the database freezes.
            healthy = await asyncio.gather(*(place_call(url, SCRIPT, call_sid=new_sid()) for _ in range(3)))
            assert len(await written(postgres_url(), [r.call_sid for r in healthy], WRITTEN_BOUND_S)) == 3
            db.freeze()  # as SIGSTOP: the pool's open connections and every new one hang
            first = await asyncio.gather(*(place_call(url, SCRIPT, call_sid=new_sid()) for _ in range(3)))
            # New calls never wait on the store (only a moved call looks a handle up); the writer finds it
            # down when a write runs out of time, and /healthz says so.
            async with asyncio.timeout(WRITE_TIMEOUT_S + 5.0):
                while (degraded := await health(url)).json()["status"] != "degraded":
                    await asyncio.sleep(0.2)
            later = await place_call(url, SCRIPT, call_sid=new_sid())  # the store is known to be down now
            db.thaw()
            thawed_at = time.monotonic()
            sids = [r.call_sid for r in (*first, later)]
            records = await written(postgres_url(), sids, WRITTEN_BOUND_S)
            written_after_s = time.monotonic() - thawed_at
            recovered = await health(url)

    assert all(greeting_after_s(r) < NO_WAIT_BOUND_S for r in healthy)
    # The figure of the issue: stream start -> greeting, 3 calls at once, database frozen (was 12.6 s)
    waits = [greeting_after_s(r) for r in first]
    assert max(waits) < GREETING_BOUND_S, waits
    assert greeting_after_s(later) < NO_WAIT_BOUND_S  # no 2 s lookup once the store is known to be down
    assert all(r.closed_by == "caller" for r in (*first, later))
    assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"
    assert degraded.json()["records"]["store"] == "unavailable"
    assert recovered.json() == {"status": "ok", "active_calls": 0}
    # Nothing was lost, and each outcome is the truth: the callers hung up (scenario 11).
    assert written_after_s < WRITTEN_BOUND_S
    assert {sid: r.outcome for sid, r in records.items()} == dict.fromkeys(sids, "caller_hung_up")
    assert all([line.text for line in r.transcript] == ["Hello, how can I help?"] for r in records.values())


async def test_a_handle_stored_at_drain_is_given_up_on_in_time_with_a_frozen_database(tmp_path):
    """The drain stores each moving call's handle with a 2 s bound; a frozen pool made it wait ~32 s."""
    async with proxied_postgres() as db, LivePeer(greet) as peer:
        settings = settings_for(peer.url, DATABASE_URL=db.url, RECORDS_SPOOL_DIR=str(tmp_path / "spool"))
        app = create_app(settings)
        async with running_gateway(settings, app=app):
            drain = app.state.gateway.drain
            await drain.save_handle(new_sid(), "handle-before")  # a healthy pool, one connection open
            db.freeze()
            began = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017 (a timeout, however the driver says it)
                async with asyncio.timeout(SAVE_HANDLE_TIMEOUT_S):  # as the drain bounds it
                    await drain.save_handle(new_sid(), "handle-frozen")
            took = time.monotonic() - began
            db.thaw()
    assert took < SAVE_HANDLE_TIMEOUT_S + 0.5, took


# --- scenario 5: the database away at start-up ----------------------------------------------------------


async def test_the_gateway_starts_without_postgres_carries_calls_and_writes_them_when_it_is_back(tmp_path):
    port = free_port()  # nothing listens there: connections are refused
    async with proxied_postgres(port, listening=False) as db, LivePeer(greet) as peer:
        settings = settings_for(peer.url, DATABASE_URL=db.url, RECORDS_SPOOL_DIR=str(tmp_path / "spool"))
        began = time.monotonic()
        async with running_gateway(settings) as url:
            started_s = time.monotonic() - began
            degraded = await health(url)
            calls = await asyncio.gather(*(place_call(url, SCRIPT, call_sid=new_sid()) for _ in range(2)))
            await db.start()  # PostgreSQL is back on its port
            back_at = time.monotonic()
            sids = [r.call_sid for r in calls]
            records = await written(postgres_url(), sids, WRITTEN_BOUND_S)
            written_after_s = time.monotonic() - back_at
            recovered = await health(url)

    assert started_s < START_UP_BOUND_S
    assert degraded.status_code == 200
    assert degraded.json()["status"] == "degraded" and degraded.json()["records"]["store"] == "unavailable"
    assert all(greeting_after_s(r) < NO_WAIT_BOUND_S and r.closed_by == "caller" for r in calls)
    assert written_after_s < WRITTEN_BOUND_S
    assert {sid: r.outcome for sid, r in records.items()} == dict.fromkeys(sids, "caller_hung_up")
    assert recovered.json()["status"] == "ok"


async def test_the_gateway_starts_with_sqlite_unopenable_and_writes_the_records_once_it_can(tmp_path, capsys):
    blocker = tmp_path / "records"
    blocker.write_text("a file where the database's directory should be")
    database_url = f"sqlite:///{blocker / 'calls.sqlite3'}"
    async with LivePeer(greet) as peer:
        settings = settings_for(
            peer.url, DATABASE_URL=database_url, RECORDS_SPOOL_DIR=str(tmp_path / "spool")
        )
        async with running_gateway(settings) as url:
            degraded = await health(url)
            result = await place_call(url, SCRIPT, call_sid=new_sid())
            lines = logged(capsys)
            blocker.unlink()
            blocker.mkdir()  # the operator fixes the path
            fixed_at = time.monotonic()
            records = await written(database_url, [result.call_sid], WRITTEN_BOUND_S)
            written_after_s = time.monotonic() - fixed_at

    assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"
    assert greeting_after_s(result) < NO_WAIT_BOUND_S and result.closed_by == "caller"
    down = [line for line in lines if line["event"] == "records_store_unavailable"]
    assert down and down[0]["setting"] == "DATABASE_URL" and str(blocker) in down[0]["database"]
    assert written_after_s < WRITTEN_BOUND_S
    assert {sid: r.outcome for sid, r in records.items()} == {result.call_sid: "caller_hung_up"}


async def test_a_frozen_database_at_start_up_is_given_up_on_and_a_restart_keeps_the_records(tmp_path):
    spool = tmp_path / "spool"
    async with Tarpit() as tarpit, LivePeer(greet) as peer:
        frozen_url = f"postgresql://gateway:secret-password@127.0.0.1:{tarpit.port}/calls"
        settings = settings_for(peer.url, DATABASE_URL=frozen_url, RECORDS_SPOOL_DIR=str(spool))
        began = time.monotonic()
        async with running_gateway(settings) as url:
            started_s = time.monotonic() - began
            result = await place_call(url, SCRIPT, call_sid=new_sid())
            stopping = time.monotonic()
        stopped_s = time.monotonic() - stopping
    kept = list(spool.glob("records-*.jsonl"))

    # The next start (here with another database: the spool is the gateway's, not the database's) writes them.
    database_url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    async with LivePeer(greet) as peer:
        async with running_gateway(
            settings_for(peer.url, DATABASE_URL=database_url, RECORDS_SPOOL_DIR=str(spool))
        ):
            records = await written(database_url, [result.call_sid], WRITTEN_BOUND_S)

    assert started_s < START_UP_BOUND_S  # asyncpg alone would wait 60 s, then fail the start-up
    assert greeting_after_s(result) < NO_WAIT_BOUND_S and result.closed_by == "caller"
    assert stopped_s < 5.0  # shutdown does not wait for a frozen database
    assert len(kept) == 1
    assert {sid: r.outcome for sid, r in records.items()} == {result.call_sid: "caller_hung_up"}
    assert not list(spool.glob("records-*.jsonl"))  # all written: nothing left behind


async def test_records_wait_in_memory_then_on_disk_across_a_restart_and_only_the_newest_overflow_is_dropped(
    tmp_path, capsys
):
    blocker = tmp_path / "db"
    blocker.write_text("not a directory")
    database_url = f"sqlite:///{blocker / 'calls.sqlite3'}"
    spool = tmp_path / "spool"

    def dropped() -> float:
        return REGISTRY.get_sample_value("gateway_records_dropped_total", {"reason": "spool_full"}) or 0.0

    before = dropped()
    records = Records(open_store(database_url), queue_size=4, spool_dir=spool, spool_max_bytes=6_000)
    await records.start()
    now = datetime.now(UTC)
    sids = [f"CA{i:032d}" for i in range(40)]
    took = []
    for sid in sids:  # a call's writes never wait, whatever the database does
        began = time.perf_counter()
        records.transcript(sid, "caller", "a line of about this length, said by the caller " * 2)
        records.save(CallRecord(sid, stream_sid="MZ" + sid[2:], started_at=now, ended_at=now, outcome="o"))
        took.append(time.perf_counter() - began)
    on_disk = records.health()["on_disk"]
    await records.stop()  # the database is still away: what waits in memory joins what waits on disk
    lines = logged(capsys)
    files = list(spool.glob("records-*.jsonl"))

    blocker.unlink()
    blocker.mkdir()  # the next start finds the database, and the spool of the last run
    records = Records(open_store(database_url), queue_size=4, spool_dir=spool, spool_max_bytes=6_000)
    await records.start()
    try:
        await records.flush(WRITTEN_BOUND_S)
    finally:
        await records.stop()
    lost = int(dropped() - before)
    drops = [line for line in lines if line["event"] == "record_dropped"]
    store = open_store(database_url)
    await store.open()
    try:
        stored = {r.call_sid for r in await store.list_calls(limit=1000)}
        lines_in_order = await store._run(  # type: ignore[attr-defined]
            lambda db: [r[0] for r in db.execute("SELECT call_sid FROM transcript_lines ORDER BY id")]
        )
    finally:
        await store.close()

    # A call's record and line, queued with the database down: microseconds (2 shared cores: a margin)
    assert statistics.median(took) < 0.001 and max(took) < 0.1
    assert on_disk > 0 and lost > 0 and len(files) == 1  # memory (4 writes), then disk (6 kB), then dropped
    kept = [sid for sid in sids if sid in stored]
    assert kept == sids[: len(kept)]  # the oldest are kept; what is dropped is the newest writes
    assert lines_in_order in (kept, sids[: len(kept) + 1])  # written in order (a call's line precedes it)
    dropped_calls = [line["call_sid"] for line in drops if line["what"] == "call"]
    assert dropped_calls == sids[len(kept) :]  # each dropped record is logged with its call_sid
    assert all(line["reason"] == "spool_full" for line in drops)
    assert not list(spool.glob("*.jsonl"))  # all written: nothing left behind


async def test_a_write_the_database_refuses_is_dropped_with_its_call_sid_and_holds_up_no_other(
    tmp_path, capsys
):
    database_url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    records = Records(open_store(database_url), spool_dir=tmp_path / "spool")
    await records.start()
    now = datetime.now(UTC)
    began = time.monotonic()
    try:
        records.save(CallRecord("CApoison", started_at=now, ended_at=now, total_tokens=2**70))  # no INTEGER
        records.save(CallRecord("CAgood", started_at=now, ended_at=now, outcome="caller_hung_up"))
        await records.flush(10)
        took = time.monotonic() - began
        healthy = records.health()
    finally:
        await records.stop()
    drops = [line for line in logged(capsys) if line["event"] == "record_dropped"]
    store = open_store(database_url)
    await store.open()
    try:
        good, poison = await store.get_call("CAgood"), await store.get_call("CApoison")
    finally:
        await store.close()
    assert good is not None and poison is None and healthy is None  # the store was never "down" for it
    assert [(d["call_sid"], d["reason"]) for d in drops] == [("CApoison", "write_failed")]
    assert took < 2.0  # three attempts, then the next write (0.6 s seen)


def test_gateway_serve_with_the_database_down_starts_and_says_which_setting(tmp_path):
    """The symptom as reported: exit 3 and a raw traceback that never names DATABASE_URL."""
    port = free_port()
    dead = f"postgresql://gateway:pw-never-logged@127.0.0.1:{free_port()}/calls"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=clean_env(PORT=str(port), DATABASE_URL=dead, RECORDS_SPOOL_DIR=str(tmp_path / "spool")),
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        health_response = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health_response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert health_response is not None, err[-2000:]
    assert health_response.status_code == 200 and health_response.json()["status"] == "degraded"
    events = {line["event"]: line for line in json_lines(err)}
    assert events["records_store_unavailable"]["setting"] == "DATABASE_URL"
    assert "gateway_ready" in events and "Traceback" not in err and "pw-never-logged" not in err
    assert proc.returncode == 0
