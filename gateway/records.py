"""Call records: one row per call and its transcript lines, in SQLite (default) or PostgreSQL (DATABASE_URL).

Writes never sit on the audio path: a Call hands a record or a transcript line to `Records`, which puts it
on a bounded queue that one background task drains into the database. A slow database makes the queue grow;
a full queue drops the write (counted and logged) instead of making a call wait.

A call can span instances: at shutdown one instance stores the call's Live resumption handle and redirects
the call to the voice webhook, and the instance that answers resumes the Live session from that handle and
later adds its part to the same record (tokens and switches add up; the first start and last end stay).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import structlog

from gateway.logs import register_secret
from gateway.metrics import METRICS

if TYPE_CHECKING:
    from gateway.call.summary import CallSummary

log = structlog.get_logger("gateway.records")

QUEUE_SIZE = 10_000  # records and transcript lines waiting for the database; about a few MB at most
STOP_TIMEOUT_S = 5.0  # at shutdown, for the queued writes to reach the database
HANDLE_LOOKUP_TIMEOUT_S = 2.0  # a call that cannot learn its handle this fast starts a fresh Live session

_COLUMNS = (
    "call_sid", "stream_sid", "account_sid", "from_number", "to_number", "agent", "started_at", "ended_at",
    "outcome", "prompt_tokens", "response_tokens", "total_tokens", "tokens_by_modality", "switches",
    "resumption_handle",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM calls"


@dataclass
class TranscriptLine:
    """One line of a call's transcript: who said it (`caller` or `agent`) and when."""

    at: datetime
    role: str  # caller | agent
    text: str


@dataclass
class CallRecord:
    """A stored call: its sids and numbers, agent, times, outcome, tokens, Live switches, the latest
    resumption handle and the transcript. A moved call is one record, to which each instance adds its part."""

    call_sid: str
    stream_sid: str = ""
    account_sid: str = ""
    from_number: str = ""
    to_number: str = ""
    agent: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str = ""
    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0
    tokens_by_modality: dict[str, int] = field(default_factory=dict)
    switches: int = 0  # Live connection switches
    resumption_handle: str = field(default="", repr=False)  # lets anyone holding it resume the conversation
    transcript: list[TranscriptLine] = field(default_factory=list)

    def merged_into(self, old: CallRecord | None) -> CallRecord:
        """This instance's part of a call added to what another instance stored for it before."""
        if old is None or old.started_at is None:
            return self
        later = self.ended_at is not None and (old.ended_at is None or self.ended_at >= old.ended_at)
        last, first = (self, old) if later else (old, self)
        modality = dict(old.tokens_by_modality)
        for name, count in self.tokens_by_modality.items():
            modality[name] = modality.get(name, 0) + count
        return CallRecord(
            call_sid=self.call_sid,
            stream_sid=last.stream_sid,
            account_sid=self.account_sid or old.account_sid,
            from_number=self.from_number or old.from_number,
            to_number=self.to_number or old.to_number,
            agent=last.agent,
            started_at=min(t for t in (old.started_at, self.started_at) if t is not None),
            ended_at=last.ended_at,
            outcome=last.outcome,
            prompt_tokens=old.prompt_tokens + self.prompt_tokens,
            response_tokens=old.response_tokens + self.response_tokens,
            total_tokens=old.total_tokens + self.total_tokens,
            tokens_by_modality=modality,
            switches=old.switches + self.switches,
            resumption_handle=last.resumption_handle or first.resumption_handle,
        )

    def public(self) -> dict[str, Any]:
        """What the API and `gateway calls --json` show: everything but the resumption handle."""
        out = asdict(self)
        del out["resumption_handle"]
        for key in ("started_at", "ended_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["transcript"] = [{**line, "at": line["at"].isoformat()} for line in out["transcript"]]
        return out


def record_of(summary: CallSummary) -> CallRecord:
    """The record of a call that has just ended (built off the audio path, once, from the web app)."""
    return CallRecord(
        call_sid=summary.call_sid,
        stream_sid=summary.stream_sid,
        account_sid=summary.account_sid,
        from_number=summary.caller,
        to_number=summary.called,
        agent=summary.agent,
        started_at=summary.started_at,
        ended_at=summary.ended_at,
        outcome=summary.outcome.value,
        prompt_tokens=summary.prompt_tokens,
        response_tokens=summary.response_tokens,
        total_tokens=summary.total_tokens,
        tokens_by_modality=dict(summary.tokens_by_modality),
        switches=summary.switches,
        resumption_handle=summary.resumption_handle,
    )


# --- stores ----------------------------------------------------------------------------------------------


class Store(Protocol):
    """Where call records are kept: SQLite (`SqliteStore`) or PostgreSQL (`PostgresStore`)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def save_call(self, record: CallRecord) -> None: ...
    async def add_transcript(self, call_sid: str, line: TranscriptLine) -> None: ...
    async def save_handle(self, call_sid: str, handle: str) -> None: ...
    async def get_call(self, call_sid: str) -> CallRecord | None: ...
    async def list_calls(self, since: datetime | None = None, limit: int = 100) -> list[CallRecord]: ...


def _row_to_record(row: dict[str, Any], parse_time: Callable[[Any], datetime | None]) -> CallRecord:
    values = dict(row)
    values["started_at"] = parse_time(values["started_at"])
    values["ended_at"] = parse_time(values["ended_at"])
    values["tokens_by_modality"] = json.loads(values["tokens_by_modality"] or "{}")
    return CallRecord(**values)


def _values(record: CallRecord, to_db_time: Callable[[datetime | None], Any]) -> list[Any]:
    data = asdict(record)
    data["started_at"] = to_db_time(record.started_at)
    data["ended_at"] = to_db_time(record.ended_at)
    data["tokens_by_modality"] = json.dumps(record.tokens_by_modality, sort_keys=True)
    return [data[name] for name in _COLUMNS]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_sid TEXT PRIMARY KEY, stream_sid TEXT NOT NULL DEFAULT '', account_sid TEXT NOT NULL DEFAULT '',
    from_number TEXT NOT NULL DEFAULT '', to_number TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL DEFAULT '',
    started_at {time}, ended_at {time}, outcome TEXT NOT NULL DEFAULT '',
    prompt_tokens BIGINT NOT NULL DEFAULT 0, response_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens BIGINT NOT NULL DEFAULT 0, tokens_by_modality TEXT NOT NULL DEFAULT '{{}}',
    switches INTEGER NOT NULL DEFAULT 0, resumption_handle TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at);
CREATE TABLE IF NOT EXISTS transcript_lines (
    id {serial} PRIMARY KEY, call_sid TEXT NOT NULL, at {time} NOT NULL,
    role TEXT NOT NULL, text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transcript_lines_call ON transcript_lines (call_sid, id);
"""
# Columns renamed since a database may have been created, (table, old name, new name): renamed at open.
_RENAMED_COLUMNS = (("calls", "reconnects", "switches"),)


def _renames(columns_of: Callable[[str], set[str]]) -> list[str]:
    """The ALTER TABLE statements that bring an older database's column names up to date."""
    out = []
    for table, old, new in _RENAMED_COLUMNS:
        columns = columns_of(table)
        if old in columns and new not in columns:
            out.append(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
    return out


class SqliteStore:
    """stdlib sqlite3 in a worker thread; one connection, used by one thread at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Awaitable[Any]:
        def locked() -> Any:
            assert self._db is not None
            with self._lock, self._db:  # one transaction per operation
                return fn(self._db)

        return asyncio.to_thread(locked)

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")  # readers (`gateway calls`) never block the writer
        self._db.execute("PRAGMA busy_timeout=5000")
        # With WAL, NORMAL syncs at checkpoints, not at every commit: a power cut may lose the last records,
        # never corrupt the file. Measured: 4.6 -> 2.4 ms of writer time per call (BENCHMARKS.md).
        self._db.execute("PRAGMA synchronous=NORMAL")

        def create(db: sqlite3.Connection) -> None:
            db.executescript(_SCHEMA.format(time="TEXT", serial="INTEGER"))
            db.execute("BEGIN IMMEDIATE")  # another process may be opening the same file

            def columns_of(table: str) -> set[str]:
                return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}

            for statement in _renames(columns_of):
                db.execute(statement)

        await self._run(create)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(lambda db: None)  # wait for any operation in flight
            self._db.close()
            self._db = None

    @staticmethod
    def _time(value: datetime | None) -> str | None:
        return value.astimezone(UTC).isoformat() if value else None

    @staticmethod
    def _parse(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    def _get(self, db: sqlite3.Connection, call_sid: str) -> CallRecord | None:
        row = db.execute(f"{_SELECT} WHERE call_sid = ?", (call_sid,)).fetchone()
        return _row_to_record(dict(row), self._parse) if row else None

    async def save_call(self, record: CallRecord) -> None:
        def save(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")  # the read and the write are one step, even across processes
            merged = record.merged_into(self._get(db, record.call_sid))
            marks = ", ".join("?" * len(_COLUMNS))
            db.execute(f"INSERT OR REPLACE INTO calls ({', '.join(_COLUMNS)}) VALUES ({marks})",
                       _values(merged, self._time))  # fmt: skip

        await self._run(save)

    async def add_transcript(self, call_sid: str, line: TranscriptLine) -> None:
        await self._run(lambda db: db.execute(
            "INSERT INTO transcript_lines (call_sid, at, role, text) VALUES (?, ?, ?, ?)",
            (call_sid, self._time(line.at), line.role, line.text),
        ))  # fmt: skip

    async def save_handle(self, call_sid: str, handle: str) -> None:
        await self._run(lambda db: db.execute(
            "INSERT INTO calls (call_sid, resumption_handle) VALUES (?, ?) "
            "ON CONFLICT (call_sid) DO UPDATE SET resumption_handle = excluded.resumption_handle",
            (call_sid, handle),
        ))  # fmt: skip

    async def get_call(self, call_sid: str) -> CallRecord | None:
        def get(db: sqlite3.Connection) -> CallRecord | None:
            record = self._get(db, call_sid)
            if record is not None:
                rows = db.execute(
                    "SELECT at, role, text FROM transcript_lines WHERE call_sid = ? ORDER BY id", (call_sid,)
                ).fetchall()
                record.transcript = [TranscriptLine(self._parse(r[0]), r[1], r[2]) for r in rows]  # type: ignore[arg-type]
            return record

        return await self._run(get)

    async def list_calls(self, since: datetime | None = None, limit: int = 100) -> list[CallRecord]:
        def list_(db: sqlite3.Connection) -> list[CallRecord]:
            rows = db.execute(
                f"{_SELECT} WHERE started_at >= ? ORDER BY started_at DESC LIMIT ?",
                (self._time(since) or "", limit),
            ).fetchall()
            return [_row_to_record(dict(r), self._parse) for r in rows]

        return await self._run(list_)


class PostgresStore:
    """asyncpg with a small pool: the writer uses one connection, API reads another."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4, command_timeout=30)
        async with self._pool.acquire() as db:
            # Instances start together after a deploy: one creates the tables, the others wait for it.
            async with db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock(7207)")
                await db.execute(_SCHEMA.format(time="TIMESTAMPTZ", serial="BIGSERIAL"))
                columns: dict[str, set[str]] = {}
                for row in await db.fetch(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema()"
                ):
                    columns.setdefault(row["table_name"], set()).add(row["column_name"])
                for statement in _renames(lambda table: columns.get(table, set())):
                    await db.execute(statement)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @staticmethod
    def _time(value: datetime | None) -> datetime | None:
        return value

    async def save_call(self, record: CallRecord) -> None:
        async with self._pool.acquire() as db, db.transaction():
            row = await db.fetchrow(f"{_SELECT} WHERE call_sid = $1 FOR UPDATE", record.call_sid)
            merged = record.merged_into(_row_to_record(dict(row), self._time) if row else None)
            marks = ", ".join(f"${i + 1}" for i in range(len(_COLUMNS)))
            updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
            await db.execute(
                f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({marks}) "
                f"ON CONFLICT (call_sid) DO UPDATE SET {updates}",
                *_values(merged, self._time),
            )

    async def add_transcript(self, call_sid: str, line: TranscriptLine) -> None:
        await self._pool.execute(
            "INSERT INTO transcript_lines (call_sid, at, role, text) VALUES ($1, $2, $3, $4)",
            call_sid, line.at, line.role, line.text,
        )  # fmt: skip

    async def save_handle(self, call_sid: str, handle: str) -> None:
        await self._pool.execute(
            "INSERT INTO calls (call_sid, resumption_handle) VALUES ($1, $2) "
            "ON CONFLICT (call_sid) DO UPDATE SET resumption_handle = excluded.resumption_handle",
            call_sid, handle,
        )  # fmt: skip

    async def get_call(self, call_sid: str) -> CallRecord | None:
        async with self._pool.acquire() as db:
            row = await db.fetchrow(f"{_SELECT} WHERE call_sid = $1", call_sid)
            if row is None:
                return None
            record = _row_to_record(dict(row), self._time)
            lines = await db.fetch(
                "SELECT at, role, text FROM transcript_lines WHERE call_sid = $1 ORDER BY id", call_sid
            )
        record.transcript = [TranscriptLine(r["at"], r["role"], r["text"]) for r in lines]
        return record

    async def list_calls(self, since: datetime | None = None, limit: int = 100) -> list[CallRecord]:
        rows = await self._pool.fetch(
            f"{_SELECT} WHERE started_at >= $1 ORDER BY started_at DESC LIMIT $2",
            since or datetime(1970, 1, 1, tzinfo=UTC), limit,
        )  # fmt: skip
        return [_row_to_record(dict(r), self._time) for r in rows]


def register_secrets(database_url: str) -> None:
    """A PostgreSQL URL carries a password: keep it, and the URL, out of every log line."""
    register_secret(database_url)
    register_secret(urlsplit(database_url).password)


def open_store(database_url: str) -> Store:
    """`postgres://` / `postgresql://` (Heroku's DATABASE_URL) or `sqlite:///relative.db`, `sqlite:////abs.db`."""
    if database_url.startswith(("postgres://", "postgresql://")):
        return PostgresStore(database_url)
    if database_url.startswith("sqlite:///"):
        return SqliteStore(database_url.removeprefix("sqlite:///"))
    raise ValueError("DATABASE_URL must start with postgres://, postgresql:// or sqlite:///")


# --- the writer ------------------------------------------------------------------------------------------

Write = Callable[[Store], Awaitable[None]]


class Records:
    """What the web app and its calls use: non-blocking writes through a bounded queue, and reads."""

    def __init__(self, store: Store, *, queue_size: int = QUEUE_SIZE) -> None:
        self.store = store
        self._queue: asyncio.Queue[Write] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.open()
        self._task = asyncio.create_task(self._writer(), name="records_writer")

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Write what is queued (bounded in time), then close the database."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._queue.join()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if not self._queue.empty():
            METRICS.records_dropped.labels(reason="shutdown").inc(self._queue.qsize())
            log.warning("records_not_written_at_shutdown", count=self._queue.qsize())
        await self.store.close()

    def _submit(self, write: Write, what: str) -> None:
        try:
            self._queue.put_nowait(write)
        except asyncio.QueueFull:
            METRICS.records_dropped.labels(reason="queue_full").inc()
            log.warning("record_dropped", what=what, reason="queue full: the database is too slow")

    async def _writer(self) -> None:
        while True:
            write = await self._queue.get()
            try:
                await write(self.store)
            except Exception as exc:  # a bad write must not stop the ones after it
                METRICS.records_dropped.labels(reason="write_failed").inc()
                log.error("record_write_failed", error=repr(exc))
            finally:
                self._queue.task_done()

    # --- what calls and the app call ---

    def call_ended(self, summary: CallSummary) -> None:
        record = record_of(summary)
        self._submit(lambda store: store.save_call(record), "call")

    def transcript(self, call_sid: str, role: str, text: str) -> None:
        line = TranscriptLine(datetime.now(UTC), role, text)
        self._submit(lambda store: store.add_transcript(call_sid, line), "transcript")

    async def resumption_handle(self, call_sid: str) -> str:
        """The handle stored for a call that another instance handed over; "" if none (or no quick answer)."""
        try:
            async with asyncio.timeout(HANDLE_LOOKUP_TIMEOUT_S):
                record = await self.store.get_call(call_sid)
        except Exception as exc:
            log.warning("resumption_handle_lookup_failed", error=repr(exc))
            return ""
        return record.resumption_handle if record else ""


# --- `gateway calls` ---------------------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`90m`, `2h`, `7d` (that long ago) or an ISO date or time (`2026-11-25`, `2026-11-25T08:00`, UTC)."""
    now = now or datetime.now(UTC)
    text = value.strip()
    if text[:-1].isdigit() and text[-1:].lower() in _UNITS:
        return datetime.fromtimestamp(now.timestamp() - int(text[:-1]) * _UNITS[text[-1].lower()], UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {value!r}: use 90m, 2h, 7d or an ISO date such as 2026-11-25") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_calls(records: list[CallRecord]) -> str:
    header = f"{'started (UTC)':<20} {'secs':>6}  {'call sid':<34} {'from':<16} {'to':<16} "
    header += f"{'outcome':<16} {'tokens':>7} {'switch':>6}"
    lines = [header]
    for r in records:
        took = (r.ended_at - r.started_at).total_seconds() if r.ended_at and r.started_at else 0.0
        started = r.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "-"
        lines.append(
            f"{started:<20} {took:>6.1f}  {r.call_sid:<34} {r.from_number:<16} {r.to_number:<16} "
            f"{r.outcome:<16} {r.total_tokens:>7} {r.switches:>6}"
        )
    return "\n".join(lines)


async def list_calls_command(database_url: str, since: datetime | None, limit: int, as_json: bool) -> str:
    store = open_store(database_url)
    await store.open()
    try:
        records = await store.list_calls(since, limit)
    finally:
        await store.close()
    if as_json:
        return json.dumps([r.public() for r in records], indent=2)
    return format_calls(records)
