"""Call records: one row per call and its transcript lines, in SQLite (default) or PostgreSQL (DATABASE_URL).

Records are not needed to carry a call, so the database is never on a call's critical path without a bound
that holds whatever the driver does (a frozen server, a pool with no connection free):

- Writes never sit on the audio path: a Call hands a record or a transcript line to `Records`, which keeps
  it in a bounded spool (memory first, then a file on disk) that one background task drains into the
  database, oldest first. While the database is slow, down or frozen the spool grows; the writer reconnects
  with a backoff and writes what waited once it is back, and a restart meanwhile leaves the spool on disk for
  the next start. Only a write that finds both memory and disk full (or a write the database keeps refusing
  while it answers) is dropped: counted, and logged with its call_sid.
- The one read a call waits for (its resumption handle, see below) runs in a task of its own, given up after
  `HANDLE_LOOKUP_TIMEOUT_S` however the driver cleans up after it; while the store is known to be down it is
  not even tried.
- Start-up does not wait for the database more than `OPEN_TIMEOUT_S`: the gateway starts and carries calls
  without it, `/healthz` says the records store is degraded, and the log line names DATABASE_URL.

A call can span instances: at shutdown one instance stores the call's Live resumption handle and redirects
the call to the voice webhook, and the instance that answers resumes the Live session from that handle and
later adds its part to the same record (tokens and switches add up; the first start and last end stay).
Writes are idempotent, so one retried after an answer that was lost (a database frozen mid-commit) is not
counted twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

import structlog

from gateway.call.events import CallEvent
from gateway.logs import register_secret
from gateway.metrics import METRICS

if TYPE_CHECKING:
    from gateway.call.summary import CallSummary
    from gateway.config import Settings

log = structlog.get_logger("gateway.records")

T = TypeVar("T")

QUEUE_SIZE = 10_000  # writes waiting in memory (a few MB at most); past it they wait on disk
SPOOL_MAX_BYTES = 64 * 2**20  # writes waiting on disk (RECORDS_SPOOL_MAX_MB): 64 MB, some 300,000 lines
STOP_TIMEOUT_S = 5.0  # at shutdown, for waiting writes to reach a database that answers
HANDLE_LOOKUP_TIMEOUT_S = 2.0  # a call that cannot learn its handle this fast starts a fresh Live session
HANDLE_SAVE_TIMEOUT_S = 2.0  # a draining call's handle: stored this fast, or the call moves without it
OPEN_TIMEOUT_S = 5.0  # connect and create the tables; start-up waits no longer for the database
WRITE_TIMEOUT_S = 10.0  # one write; a database that takes longer is treated as down
PING_TIMEOUT_S = 2.0  # "SELECT 1": does the database answer at all?
CLOSE_TIMEOUT_S = 2.0  # a graceful close; then connections are dropped
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 5.0)  # between attempts to reach a database that is down; then every 5 s
# A write that fails while the database answers "SELECT 1": tried this often, then dropped (so one bad write
# cannot hold up the others for ever); more often when the error is the database's state (disk full).
MAX_ATTEMPTS = 3
MAX_ATTEMPTS_STORE_FAULT = 8  # with the backoff, some 20 s
LOOKUPS_IN_FLIGHT = 16  # handle lookups still running (given up on or not); past it, calls do not look up
STILL_DOWN_LOG_S = 60.0  # while the database is down, a reminder this often

_COLUMNS: tuple[str, ...] = (
    "call_sid", "stream_sid", "account_sid", "from_number", "to_number", "agent", "started_at", "ended_at",
    "outcome", "prompt_tokens", "response_tokens", "total_tokens", "tokens_by_modality", "switches",
    "resumption_handle",
    # outbound calls (gateway.outbound): added later, so an older database gets them at open
    "direction", "call_status", "answered_by", "amd_wait_ms", "amd_duration_ms", "machine_action", "campaign",
)  # fmt: skip
# Turn-taking counts (gateway.call.turns), added to databases made before them (_ADDED_COLUMNS).
_TURN_COLUMNS = ("barge_ins_local", "barge_ins_server", "barge_ins_guarded", "stalls", "stall_recoveries")
_COLUMNS = (*_COLUMNS, *_TURN_COLUMNS, "carrier")
# Recordings (gateway.recording): where the call's recording is, how long it is, in how many parts.
_RECORDING_COLUMNS = ("recording_url", "recording_s", "recording_parts")
_COLUMNS = (*_COLUMNS, *_RECORDING_COLUMNS)
_COLUMNS = (*_COLUMNS, "cost_usd")  # gateway.cost: the call's estimated price (LIVE_PRICES)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM calls"
FINAL_CALL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


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
    # Outbound calls: who placed them and what came of them (Twilio's status callbacks and AMD).
    direction: str = ""  # "outbound" for calls the gateway placed; "" for calls it answered
    call_status: str = ""  # Twilio's latest CallStatus: queued, ringing, in-progress, completed, busy, ...
    answered_by: str = ""  # Twilio's AnsweredBy (human, machine_end_beep, ...) or "timeout"
    amd_wait_ms: int | None = None  # from the callee picking up to the gateway knowing who answered
    amd_duration_ms: int | None = None  # Twilio's MachineDetectionDuration
    machine_action: str = ""  # a machine answered: hung_up, message_left, message_not_finished
    campaign: str = ""  # the campaign that placed it
    barge_ins_local: int = 0  # the caller talked over the agent and the gateway's detector cleared the line
    barge_ins_server: int = 0  # ... and Live's `interrupted` did
    barge_ins_guarded: int = 0  # sounds a guard kept from counting as barge-ins (echo, music, noise)
    stalls: int = 0  # caller turns the agent left unanswered past STALL_TIMEOUT_S
    stall_recoveries: int = 0  # of which the agent answered after a nudge or a new connection
    carrier: str = "twilio"  # which line carried the call: twilio, telnyx, vonage, plivo, signalwire, browser
    # Its recording (RECORDING): the first part's URL (file://, s3://, or Twilio's https:// one), the length
    # of all its parts, and how many there are (a call a drain moved has one part per instance).
    recording_url: str = ""
    recording_s: float | None = None
    recording_parts: int = 0
    cost_usd: float = 0.0  # the Live tokens at LIVE_PRICES (gateway.cost): an estimate
    # What happened when (gateway.call.events), seconds since `started_at`; kept in the call_events table.
    events: list[CallEvent] = field(default_factory=list)

    def merged_into(self, old: CallRecord | None) -> CallRecord:
        """This instance's part of a call added to what another instance stored for it before (or what the
        gateway learnt of an outbound call from another source: its placing, Twilio's callbacks)."""
        if old is None:
            return self
        if old.started_at is None:
            # (a handle stored by a drain, or what Twilio's callbacks said before the call's own record)
            fields = self._outbound_fields(old)
            fields.update(to_number=self.to_number or old.to_number, outcome=self.outcome or old.outcome)
            fields.update(self._recording_fields(old))
            return dataclasses.replace(self, **fields)
        if self.stream_sid and old.stream_sid == self.stream_sid and old.ended_at == self.ended_at:
            return old  # this part is in already: a write retried after the database's answer was lost
        return dataclasses.replace(self._merged(old), **self._outbound_fields(old))

    def _outbound_fields(self, old: CallRecord) -> dict[str, Any]:
        """The outbound fields: what this part says, else what was stored; a final call status is never
        replaced by an earlier one that arrived late."""
        status = self.call_status or old.call_status
        if old.call_status in FINAL_CALL_STATUSES and self.call_status not in FINAL_CALL_STATUSES:
            status = old.call_status
        return dict(
            direction=self.direction or old.direction,
            call_status=status,
            answered_by=self.answered_by or old.answered_by,
            amd_wait_ms=self.amd_wait_ms if self.amd_wait_ms is not None else old.amd_wait_ms,
            amd_duration_ms=self.amd_duration_ms if self.amd_duration_ms is not None else old.amd_duration_ms,
            machine_action=self.machine_action or old.machine_action,
            campaign=self.campaign or old.campaign,
        )

    def _merged(self, old: CallRecord) -> CallRecord:
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
            agent=last.agent or first.agent,
            started_at=min(t for t in (old.started_at, self.started_at) if t is not None),
            ended_at=last.ended_at,
            outcome=last.outcome or first.outcome,
            prompt_tokens=old.prompt_tokens + self.prompt_tokens,
            response_tokens=old.response_tokens + self.response_tokens,
            total_tokens=old.total_tokens + self.total_tokens,
            tokens_by_modality=modality,
            switches=old.switches + self.switches,
            resumption_handle=last.resumption_handle or first.resumption_handle,
            **{name: getattr(old, name) + getattr(self, name) for name in _TURN_COLUMNS},
            carrier=first.carrier,
            cost_usd=old.cost_usd + self.cost_usd,
            **(first._recording_fields(last)),
        )

    def _recording_fields(self, other: CallRecord) -> dict[str, Any]:
        """This record's recording with another record's of the same call: parts add up, the URL is this
        one's (the earlier part's), else the other's. The same first part told twice counts once (the
        record that has more parts after it knows the whole)."""
        same = other.recording_url == self.recording_url
        if not other.recording_url or (same and self.recording_parts >= other.recording_parts):
            return dict(
                recording_url=self.recording_url,
                recording_s=self.recording_s,
                recording_parts=self.recording_parts,
            )
        if not self.recording_url or same:
            return dict(
                recording_url=other.recording_url,
                recording_s=other.recording_s,
                recording_parts=other.recording_parts,
            )
        return dict(
            recording_url=self.recording_url,
            recording_s=(self.recording_s or 0.0) + (other.recording_s or 0.0),
            recording_parts=self.recording_parts + other.recording_parts,
        )

    def public(self) -> dict[str, Any]:
        """What the API and `gateway calls --json` show: everything but the resumption handle."""
        out = asdict(self)
        del out["resumption_handle"]
        for key in ("started_at", "ended_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["transcript"] = [{**line, "at": line["at"].isoformat()} for line in out["transcript"]]
        out["events"] = [event.public() for event in self.events]
        return out

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


def record_of(summary: CallSummary, cost_usd: float = 0.0) -> CallRecord:
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
        direction=summary.direction,
        answered_by=summary.answered_by,
        amd_wait_ms=summary.amd_wait_ms,
        amd_duration_ms=summary.amd_duration_ms,
        machine_action=summary.machine_action,
        **{name: getattr(summary, name) for name in _TURN_COLUMNS},
        carrier=summary.carrier,
        recording_url=summary.recording_url,
        recording_s=summary.recording_s,
        recording_parts=1 if summary.recording_url else 0,
        cost_usd=cost_usd,
        events=list(summary.events),
    )


@dataclass(frozen=True)
class CallQuery:
    """Which calls the console lists: every filter optional; newest first, a page at a time."""

    since: datetime | None = None
    until: datetime | None = None
    number: str = ""  # part of the caller's or the called number
    agent: str = ""  # part of the agent (the Live model)
    outcome: str = ""
    carrier: str = ""
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    text: str = ""  # part of the call sid, a number, or any line of the transcript
    offset: int = 0
    limit: int = 50

    def where(self, mark: Callable[[], str], like: str, duration: str) -> tuple[str, list[Any]]:
        """The WHERE clause and its arguments, for a database whose placeholders `mark` makes, whose
        case-insensitive match is `like` and whose expression for a call's seconds is `duration`."""
        clauses: list[str] = ["started_at IS NOT NULL"]
        args: list[Any] = []

        def add(sql: str, *values: Any) -> None:
            clauses.append(sql.format(*(mark() for _ in values)))
            args.extend(values)

        if self.since is not None:
            add("started_at >= {}", self.since)
        if self.until is not None:
            add("started_at < {}", self.until)

        def matches(*columns: str) -> str:  # any of the columns holds the text (LIKE's wildcards escaped)
            return "(" + " OR ".join(f"{c} {like} {{}} ESCAPE '\\'" for c in columns) + ")"

        if self.number:
            pattern = f"%{_escape_like(self.number)}%"
            add(matches("from_number", "to_number"), pattern, pattern)
        if self.agent:
            add(matches("agent"), f"%{_escape_like(self.agent)}%")
        if self.outcome:
            add("outcome = {}", self.outcome)
        if self.carrier:
            add("carrier = {}", self.carrier)
        if self.min_duration_s is not None:
            add(f"{duration} >= {{}}", self.min_duration_s)
        if self.max_duration_s is not None:
            add(f"{duration} <= {{}}", self.max_duration_s)
        if self.text:
            pattern = f"%{_escape_like(self.text)}%"
            in_transcript = (
                "EXISTS (SELECT 1 FROM transcript_lines t WHERE t.call_sid = calls.call_sid AND "
                + matches("t.text")
                + ")"
            )
            sid_or_numbers = matches("call_sid", "from_number", "to_number")
            add(f"({sid_or_numbers} OR {in_transcript})", *[pattern] * 4)
        return " AND ".join(clauses), args


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _event_rows(record: CallRecord) -> list[tuple[int, str, float | None, str]]:
    """A part's events as rows: (epoch milliseconds, kind, value, data as JSON)."""
    assert record.started_at is not None
    base_ms = record.started_at.timestamp() * 1000
    return [
        (round(base_ms + e.t * 1000), e.kind, e.data.get("latency_ms"), json.dumps(e.data, sort_keys=True))
        for e in record.events
    ]


def _event_of(at_ms: int, kind: str, data: str, started_at: datetime | None) -> CallEvent:
    base_ms = started_at.timestamp() * 1000 if started_at else at_ms
    return CallEvent((at_ms - base_ms) / 1000, kind, json.loads(data or "{}"))


# --- stores ----------------------------------------------------------------------------------------------


class Store(Protocol):
    """Where call records are kept: SQLite (`SqliteStore`) or PostgreSQL (`PostgresStore`).

    `open` may be called again after `abort` (the writer reconnects that way); `abort` drops every
    connection at once, without waiting for anything, so that operations stuck on a frozen database end."""

    where: str  # what the logs say the database is (never its password)

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def abort(self) -> None: ...
    async def ping(self) -> None: ...
    async def save_call(self, record: CallRecord) -> None: ...
    async def add_transcript(self, call_sid: str, line: TranscriptLine) -> None: ...
    async def save_handle(self, call_sid: str, handle: str) -> None: ...
    async def get_handle(self, call_sid: str) -> str: ...
    async def get_call(self, call_sid: str) -> CallRecord | None: ...
    async def list_calls(self, since: datetime | None = None, limit: int = 100) -> list[CallRecord]: ...
    async def clear_recording(self, call_sid: str) -> None: ...
    async def search_calls(self, query: CallQuery) -> list[CallRecord]: ...
    async def response_latencies(self, since: datetime, until: datetime) -> list[tuple[datetime, float]]: ...


class StoreUnavailable(ConnectionError):
    """The records store is down, frozen or not open: what was asked of it was not done."""


def is_store_fault(exc: BaseException) -> bool:
    """Does this error say the database is unavailable (retry the write later), rather than that the write
    itself is bad (it would fail again whenever it is tried)?"""
    if isinstance(exc, sqlite3.Error):
        # locked, read-only, disk full, I/O error, cannot open: all the file's state, not the write's
        return isinstance(exc, sqlite3.OperationalError)
    if isinstance(exc, ValueError | TypeError | OverflowError):  # a value the driver cannot send
        return False
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):  # asyncpg's PostgresError
        # connection, resources (disk full), operator intervention (shutdown), system, rollback
        # (serialization, deadlock), internal errors; and a read-only transaction (a failover in progress)
        return state[:2] in {"08", "53", "57", "58", "40", "XX", "F0"} or state == "25006"
    return True  # OSError, TimeoutError, a closed connection, a driver's interface error


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
CREATE TABLE IF NOT EXISTS call_events (
    id {serial} PRIMARY KEY, call_sid TEXT NOT NULL, part TEXT NOT NULL DEFAULT '', at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL, value DOUBLE PRECISION, data TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX IF NOT EXISTS call_events_call ON call_events (call_sid, at_ms);
CREATE INDEX IF NOT EXISTS call_events_kind ON call_events (kind, at_ms);
"""
# Columns renamed since a database may have been created, (table, old name, new name): renamed at open.
_RENAMED_COLUMNS = (("calls", "reconnects", "switches"),)
# Columns added since a database may have been created, (table, name, type): added at open.
_ADDED_COLUMNS = (
    ("calls", "direction", "TEXT NOT NULL DEFAULT ''"),
    ("calls", "call_status", "TEXT NOT NULL DEFAULT ''"),
    ("calls", "answered_by", "TEXT NOT NULL DEFAULT ''"),
    ("calls", "amd_wait_ms", "INTEGER"),
    ("calls", "amd_duration_ms", "INTEGER"),
    ("calls", "machine_action", "TEXT NOT NULL DEFAULT ''"),
    ("calls", "campaign", "TEXT NOT NULL DEFAULT ''"),
    *(("calls", name, "INTEGER NOT NULL DEFAULT 0") for name in _TURN_COLUMNS),
    ("calls", "carrier", "TEXT NOT NULL DEFAULT 'twilio'"),
    ("calls", "recording_url", "TEXT NOT NULL DEFAULT ''"),
    ("calls", "recording_s", "DOUBLE PRECISION"),
    ("calls", "recording_parts", "INTEGER NOT NULL DEFAULT 0"),
    ("calls", "cost_usd", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
)


def _renames(columns_of: Callable[[str], set[str]]) -> list[str]:
    """The ALTER TABLE statements that bring an older database's columns up to date: renamed, then added."""
    out = []
    for table, old, new in _RENAMED_COLUMNS:
        columns = columns_of(table)
        if old in columns and new not in columns:
            out.append(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
    for table, name, kind in _ADDED_COLUMNS:
        if name not in columns_of(table):
            out.append(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    return out


class SqliteStore:
    """stdlib sqlite3 on a thread of its own (never the loop's default executor, which resolves names for
    the rest of the service); one connection, used by one thread at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.where = f"sqlite file {path}"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._generation = 0  # bumped by abort(): an open() that finishes after it must not take effect

    def _thread(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="records-sqlite")
        return self._executor

    def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Awaitable[Any]:
        db = self._db

        def locked() -> Any:
            if db is None:
                raise StoreUnavailable("the records database is not open")
            with self._lock, db:  # one transaction per operation
                return fn(db)

        return asyncio.get_running_loop().run_in_executor(self._thread(), locked)

    async def open(self) -> None:
        self.abort()
        generation = self._generation

        def connect() -> sqlite3.Connection:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA journal_mode=WAL")  # readers (`gateway calls`) never block the writer
                db.execute("PRAGMA busy_timeout=5000")
                # With WAL, NORMAL syncs at checkpoints, not at every commit: a power cut may lose the last
                # records, never corrupt the file. Measured: 4.6 -> 2.4 ms of writer time per call.
                db.execute("PRAGMA synchronous=NORMAL")
                with db:
                    db.executescript(_SCHEMA.format(time="TEXT", serial="INTEGER"))
                    db.execute("BEGIN IMMEDIATE")  # another process may be opening the same file

                    def columns_of(table: str) -> set[str]:
                        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}

                    for statement in _renames(columns_of):
                        db.execute(statement)
            except BaseException:
                db.close()
                raise
            return db

        db = await asyncio.get_running_loop().run_in_executor(self._thread(), connect)
        if generation != self._generation:  # aborted meanwhile (given up on): this connection is not ours
            self._thread().submit(db.close)
            raise StoreUnavailable("the records database was closed while it was being opened")
        self._db = db

    def abort(self) -> None:
        self._generation += 1
        db, self._db = self._db, None
        if db is not None:
            db.interrupt()  # a statement in progress stops; the close runs after it on the same thread
            self._thread().submit(db.close)

    async def close(self) -> None:
        db, self._db = self._db, None
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(executor, db.close)  # after any op in flight
        executor.shutdown(wait=False)

    async def ping(self) -> None:
        # A write lock, not just a read: a read-only or locked file answers SELECT 1 but takes no record.
        def ping(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("SELECT 1").fetchone()

        await self._run(ping)

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
            if record.events and record.started_at is not None:  # this part's, once (a retry replaces them)
                db.execute("DELETE FROM call_events WHERE call_sid = ? AND part = ?",
                           (record.call_sid, record.stream_sid))  # fmt: skip
                db.executemany(
                    "INSERT INTO call_events (call_sid, part, at_ms, kind, value, data) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(record.call_sid, record.stream_sid, *row) for row in _event_rows(record)],
                )

        await self._run(save)

    async def add_transcript(self, call_sid: str, line: TranscriptLine) -> None:
        at = self._time(line.at)
        await self._run(lambda db: db.execute(
            "INSERT INTO transcript_lines (call_sid, at, role, text) SELECT ?, ?, ?, ? WHERE NOT EXISTS "
            "(SELECT 1 FROM transcript_lines WHERE call_sid = ? AND at = ? AND role = ? AND text = ?)",
            (call_sid, at, line.role, line.text) * 2,
        ))  # fmt: skip

    async def save_handle(self, call_sid: str, handle: str) -> None:
        await self._run(lambda db: db.execute(
            "INSERT INTO calls (call_sid, resumption_handle) VALUES (?, ?) "
            "ON CONFLICT (call_sid) DO UPDATE SET resumption_handle = excluded.resumption_handle",
            (call_sid, handle),
        ))  # fmt: skip

    async def get_handle(self, call_sid: str) -> str:
        def get(db: sqlite3.Connection) -> str:
            row = db.execute("SELECT resumption_handle FROM calls WHERE call_sid = ?", (call_sid,)).fetchone()
            return str(row[0]) if row else ""

        return await self._run(get)

    async def get_call(self, call_sid: str) -> CallRecord | None:
        def get(db: sqlite3.Connection) -> CallRecord | None:
            record = self._get(db, call_sid)
            if record is not None:
                rows = db.execute(
                    "SELECT at, role, text FROM transcript_lines WHERE call_sid = ? ORDER BY id", (call_sid,)
                ).fetchall()
                record.transcript = [TranscriptLine(self._parse(r[0]), r[1], r[2]) for r in rows]  # type: ignore[arg-type]
                events = db.execute(
                    "SELECT at_ms, kind, data FROM call_events WHERE call_sid = ? ORDER BY at_ms, id",
                    (call_sid,),
                ).fetchall()
                record.events = [_event_of(r[0], r[1], r[2], record.started_at) for r in events]
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

    async def clear_recording(self, call_sid: str) -> None:
        await self._run(lambda db: db.execute(
            "UPDATE calls SET recording_url = '', recording_s = NULL, recording_parts = 0 WHERE call_sid = ?",
            (call_sid,),
        ))  # fmt: skip

    _DURATION = "((julianday(ended_at) - julianday(started_at)) * 86400.0)"

    async def search_calls(self, query: CallQuery) -> list[CallRecord]:
        where, args = query.where(lambda: "?", "LIKE", self._DURATION)
        args = [self._time(a) if isinstance(a, datetime) else a for a in args]

        def search(db: sqlite3.Connection) -> list[CallRecord]:
            rows = db.execute(
                f"{_SELECT} WHERE {where} ORDER BY started_at DESC, call_sid LIMIT ? OFFSET ?",
                (*args, query.limit, query.offset),
            ).fetchall()
            return [_row_to_record(dict(r), self._parse) for r in rows]

        return await self._run(search)

    async def response_latencies(self, since: datetime, until: datetime) -> list[tuple[datetime, float]]:
        def get(db: sqlite3.Connection) -> list[tuple[datetime, float]]:
            rows = db.execute(
                "SELECT at_ms, value FROM call_events WHERE kind = 'response' AND at_ms >= ? AND at_ms < ? "
                "ORDER BY at_ms LIMIT 200000",
                (since.timestamp() * 1000, until.timestamp() * 1000),
            ).fetchall()
            return [(datetime.fromtimestamp(r[0] / 1000, UTC), float(r[1])) for r in rows if r[1] is not None]

        return await self._run(get)


class PostgresStore:
    """asyncpg with a small pool (the writer uses one connection at a time; handle lookups and API reads the
    others). Every wait is bounded: connecting, each command, closing."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        parts = urlsplit(dsn)
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        self.where = f"postgresql://{user}{parts.hostname or ''}{port}{parts.path}"
        self._pool: Any = None
        self._generation = 0

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise StoreUnavailable("the records database is not connected")
        return self._pool

    async def open(self) -> None:
        import asyncpg

        self.abort()
        generation = self._generation
        pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=4, timeout=OPEN_TIMEOUT_S, command_timeout=WRITE_TIMEOUT_S
        )
        try:
            if generation != self._generation:
                raise StoreUnavailable("the records database was closed while it was being opened")
            async with pool.acquire() as db:
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
            if generation != self._generation:
                raise StoreUnavailable("the records database was closed while it was being opened")
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool

    def abort(self) -> None:
        self._generation += 1
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()  # closes every socket now; whatever waits on one fails at once

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await _within(CLOSE_TIMEOUT_S, pool.close())
            except Exception:
                pool.terminate()

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    @staticmethod
    def _time(value: datetime | None) -> datetime | None:
        return value

    async def save_call(self, record: CallRecord) -> None:
        async with self.pool.acquire() as db, db.transaction():
            row = await db.fetchrow(f"{_SELECT} WHERE call_sid = $1 FOR UPDATE", record.call_sid)
            merged = record.merged_into(_row_to_record(dict(row), self._time) if row else None)
            marks = ", ".join(f"${i + 1}" for i in range(len(_COLUMNS)))
            updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
            await db.execute(
                f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({marks}) "
                f"ON CONFLICT (call_sid) DO UPDATE SET {updates}",
                *_values(merged, self._time),
            )
            if record.events and record.started_at is not None:  # this part's, once (a retry replaces them)
                await db.execute("DELETE FROM call_events WHERE call_sid = $1 AND part = $2",
                                 record.call_sid, record.stream_sid)  # fmt: skip
                await db.executemany(
                    "INSERT INTO call_events (call_sid, part, at_ms, kind, value, data) "
                    "VALUES ($1, $2, $3, $4, $5, $6)",
                    [(record.call_sid, record.stream_sid, *row) for row in _event_rows(record)],
                )

    async def add_transcript(self, call_sid: str, line: TranscriptLine) -> None:
        text = line.text.replace("\x00", "")  # PostgreSQL's text cannot hold NUL; the rest of the line can
        await self.pool.execute(
            "INSERT INTO transcript_lines (call_sid, at, role, text) "
            "SELECT $1::text, $2::timestamptz, $3::text, $4::text WHERE NOT EXISTS (SELECT 1 FROM "
            "transcript_lines WHERE call_sid = $1::text AND at = $2::timestamptz AND role = $3::text "
            "AND text = $4::text)",
            call_sid, line.at, line.role, text,
        )  # fmt: skip

    async def save_handle(self, call_sid: str, handle: str) -> None:
        await self.pool.execute(
            "INSERT INTO calls (call_sid, resumption_handle) VALUES ($1, $2) "
            "ON CONFLICT (call_sid) DO UPDATE SET resumption_handle = excluded.resumption_handle",
            call_sid, handle,
        )  # fmt: skip

    async def get_handle(self, call_sid: str) -> str:
        handle = await self.pool.fetchval("SELECT resumption_handle FROM calls WHERE call_sid = $1", call_sid)
        return str(handle or "")

    async def get_call(self, call_sid: str) -> CallRecord | None:
        async with self.pool.acquire() as db:
            row = await db.fetchrow(f"{_SELECT} WHERE call_sid = $1", call_sid)
            if row is None:
                return None
            record = _row_to_record(dict(row), self._time)
            lines = await db.fetch(
                "SELECT at, role, text FROM transcript_lines WHERE call_sid = $1 ORDER BY id", call_sid
            )
            events = await db.fetch(
                "SELECT at_ms, kind, data FROM call_events WHERE call_sid = $1 ORDER BY at_ms, id", call_sid
            )
        record.transcript = [TranscriptLine(r["at"], r["role"], r["text"]) for r in lines]
        record.events = [_event_of(r["at_ms"], r["kind"], r["data"], record.started_at) for r in events]
        return record

    async def list_calls(self, since: datetime | None = None, limit: int = 100) -> list[CallRecord]:
        rows = await self.pool.fetch(
            f"{_SELECT} WHERE started_at >= $1 ORDER BY started_at DESC LIMIT $2",
            since or datetime(1970, 1, 1, tzinfo=UTC), limit,
        )  # fmt: skip
        return [_row_to_record(dict(r), self._time) for r in rows]

    async def clear_recording(self, call_sid: str) -> None:
        await self.pool.execute(
            "UPDATE calls SET recording_url = '', recording_s = NULL, recording_parts = 0 "
            "WHERE call_sid = $1",
            call_sid,
        )

    async def search_calls(self, query: CallQuery) -> list[CallRecord]:
        count = 0

        def mark() -> str:
            nonlocal count
            count += 1
            return f"${count}"

        where, args = query.where(mark, "ILIKE", "EXTRACT(EPOCH FROM ended_at - started_at)")
        rows = await self.pool.fetch(
            f"{_SELECT} WHERE {where} ORDER BY started_at DESC, call_sid LIMIT {int(query.limit)} "
            f"OFFSET {int(query.offset)}",
            *args,
        )
        return [_row_to_record(dict(r), self._time) for r in rows]

    async def response_latencies(self, since: datetime, until: datetime) -> list[tuple[datetime, float]]:
        rows = await self.pool.fetch(
            "SELECT at_ms, value FROM call_events WHERE kind = 'response' AND at_ms >= $1 AND at_ms < $2 "
            "ORDER BY at_ms LIMIT 200000",
            round(since.timestamp() * 1000), round(until.timestamp() * 1000),
        )  # fmt: skip
        return [(datetime.fromtimestamp(r["at_ms"] / 1000, UTC), float(r["value"])) for r in rows
                if r["value"] is not None]  # fmt: skip


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


# --- bounded waits -----------------------------------------------------------------------------------------

_given_up: set[asyncio.Future[Any]] = set()  # operations no longer waited for, referenced until they end


def _forget(task: asyncio.Future[Any]) -> None:
    _given_up.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nobody waits for it any more


def _give_up(task: asyncio.Future[Any]) -> None:
    task.cancel()
    _given_up.add(task)
    task.add_done_callback(_forget)


async def _within(timeout_s: float, operation: Awaitable[T]) -> T:
    """`operation`'s result within `timeout_s`, or TimeoutError once that has passed, whatever the operation
    does when it is cancelled. `asyncio.timeout` alone does not bound a wait: it returns only once the
    cancelled operation has finished unwinding, and a driver may well wait for a frozen server there (asyncpg
    releasing a connection waits for the query's cancellation: 32 s measured). Here the operation runs in a
    task of its own, which is cancelled and left to end by itself (store.abort() ends it, if need be)."""
    task = asyncio.ensure_future(operation)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        _give_up(task)
        raise
    if not done:
        _give_up(task)
        raise TimeoutError(f"no answer from the records database within {timeout_s:g} s")
    return task.result()


# --- the spool and the writer -------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class Write:
    """One write waiting for the database: a call's record, or a line of its transcript."""

    call_sid: str
    record: CallRecord | None = None
    line: TranscriptLine | None = None
    attempts: int = 0  # refused by a database that answers (a bad write); not kept on disk

    @property
    def what(self) -> str:
        return "call" if self.record is not None else "transcript"

    async def apply(self, store: Store) -> None:
        if self.record is not None:
            await store.save_call(self.record)
        elif self.line is not None:
            await store.add_transcript(self.call_sid, self.line)

    def dumps(self) -> bytes:
        """One line of the disk spool (JSON)."""
        if self.record is not None:
            data = asdict(self.record)
            data.pop("transcript")  # a record is written without its lines; they are writes of their own
            data["started_at"], data["ended_at"] = _iso(self.record.started_at), _iso(self.record.ended_at)
            return json.dumps({"call": data}, separators=(",", ":")).encode() + b"\n"
        assert self.line is not None
        line = self.line
        data = {"call_sid": self.call_sid, "at": _iso(line.at), "role": line.role, "text": line.text}
        return json.dumps({"line": data}, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def loads(cls, raw: bytes) -> Write:
        data = json.loads(raw)
        if "call" in data:
            values = data["call"]
            for key in ("started_at", "ended_at"):
                values[key] = _from_iso(values[key])
            values["events"] = [CallEvent(**event) for event in values.get("events", ())]
            record = CallRecord(**values)
            return cls(record.call_sid, record=record)
        line = data["line"]
        at = _from_iso(line["at"]) or datetime.now(UTC)
        return cls(line["call_sid"], line=TranscriptLine(at, line["role"], line["text"]))


class SpoolFile:
    """Writes waiting on disk: one JSON line each, appended at the end and read from the front. The file is
    locked (flock) while a process uses it, so another process adopts only files whose owner has gone."""

    CHUNK = 1 << 16

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self.size = os.fstat(fd).st_size
        self._read_at = 0  # where the next write's line starts
        self._buffer = b""  # bytes of the file from `_buffer_at` on, read ahead
        self._buffer_at = 0
        self._head: tuple[Write, int] | None = None  # the next write and where the line after it starts
        self.count = 0  # writes not read yet
        self.unreadable = 0

    @classmethod
    def create(cls, directory: Path) -> SpoolFile:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"records-{os.getpid()}-{time.time_ns()}.jsonl"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)  # holds handles: 0600
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return cls(path, fd)

    @classmethod
    def adopt(cls, path: Path) -> SpoolFile | None:
        """A file an earlier process left, unless its owner still runs; its writes are counted."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        spool = cls(path, fd)
        spool.count = sum(chunk.count(b"\n") for chunk in spool._chunks(0))
        return spool

    def _chunks(self, offset: int) -> Iterator[bytes]:
        while chunk := os.pread(self._fd, self.CHUNK, offset):
            offset += len(chunk)
            yield chunk

    def _next_line(self) -> tuple[bytes, int] | None:
        """The line at `_read_at` and where the one after it starts; None at the end (an unfinished last
        line, from a crash, is not a line)."""
        while True:
            start = self._read_at - self._buffer_at
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                return self._buffer[start:end], self._buffer_at + end + 1
            self._buffer, self._buffer_at = self._buffer[start:], self._read_at
            chunk = os.pread(self._fd, self.CHUNK, self._buffer_at + len(self._buffer))
            if not chunk:
                return None
            self._buffer += chunk

    def append(self, data: bytes) -> None:
        """One write, as `Write.dumps` gives it."""
        os.write(self._fd, data)
        self.size += len(data)
        self.count += 1

    def take_rest(self, into: SpoolFile) -> None:
        """Move the writes not read yet to the end of another file (at shutdown, to keep the order)."""
        for chunk in self._chunks(self._read_at):
            os.write(into._fd, chunk)
            into.size += len(chunk)
        into.count += self.count
        self._read_at, self.count = self.size, 0

    def peek(self) -> Write | None:
        while self._head is None:
            line = self._next_line()
            if line is None:
                return None
            try:
                self._head = (Write.loads(line[0]), line[1])
            except (ValueError, KeyError, TypeError) as exc:  # a foreign line, or one of another version
                self.unreadable += 1
                self._read_at, self.count = line[1], max(0, self.count - 1)
                sid = re.search(rb'"call_sid":"([^"]{1,64})"', line[0])
                METRICS.records_dropped.labels(reason="unreadable").inc()
                log.error("record_dropped", call_sid=sid[1].decode(errors="replace") if sid else None,
                          reason="unreadable", path=str(self.path), error=repr(exc))  # fmt: skip
        return self._head[0]

    def pop(self) -> None:
        if self._head is not None:
            self._read_at = self._head[1]
            self._head = None
            self.count = max(0, self.count - 1)
        if self._read_at >= self.size:  # all written: start the file afresh
            os.ftruncate(self._fd, 0)
            self.size = self._read_at = self.count = self._buffer_at = 0
            self._buffer = b""

    def close(self) -> None:
        """Delete the file if nothing waits in it; else keep only what waits, for the next start."""
        with contextlib.suppress(OSError):
            if self.count == 0 or self._read_at >= self.size:
                self.path.unlink()
            elif self._read_at > 0:
                rest = self.path.with_suffix(".tmp")
                with open(rest, "wb") as out:
                    os.chmod(rest, 0o600)
                    for chunk in self._chunks(self._read_at):
                        out.write(chunk)
                os.replace(rest, self.path)
        os.close(self._fd)


class Spool:
    """The writes waiting for the database, oldest first: files an earlier process left (adopted at start),
    then up to `memory` writes in memory, then this process's file on disk, up to `max_bytes` in all. A
    write that fits nowhere is refused (and dropped by the caller)."""

    def __init__(self, memory: int, directory: Path | None, max_bytes: int) -> None:
        self.memory = memory
        self.directory = directory if max_bytes > 0 else None
        self.max_bytes = max_bytes
        self._adopted: list[SpoolFile] = []
        self._memory: deque[Write] = deque()
        self._own: SpoolFile | None = None
        self._disk_failed = False
        # Full once a write found no room: later (smaller) writes are refused too until the disk spool has
        # drained, so what is dropped is always the newest, never a gap in the middle of a call's writes.
        self._full = False

    def adopt(self) -> int:
        """Take over the spool files of processes that have ended; the number of writes they hold."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        paths = sorted(self.directory.glob("records-*.jsonl"), key=lambda p: p.stat().st_mtime)
        for path in paths:
            if (spool := SpoolFile.adopt(path)) is not None:
                self._adopted.append(spool)
        return sum(f.count for f in self._adopted)

    def __len__(self) -> int:
        return len(self._memory) + sum(f.count for f in self._files())

    def _files(self) -> list[SpoolFile]:
        return self._adopted + ([self._own] if self._own is not None else [])

    @property
    def on_disk(self) -> int:
        return sum(f.count for f in self._files())

    def put(self, write: Write) -> bool:
        """Keep a write (in memory if there is room and nothing waits on disk after it); False if full."""
        own_waiting = self._own is not None and self._own.count > 0
        if not own_waiting and len(self._memory) < self.memory:
            self._memory.append(write)
            return True
        return self._to_disk(write)

    def _to_disk(self, write: Write, *, over_budget: bool = False) -> bool:
        if self.directory is None or self._disk_failed:
            return False
        data = write.dumps()
        room = self.max_bytes - sum(f.size for f in self._files())
        if not over_budget and (self._full or len(data) > room):
            self._full = True
            return False
        try:
            if self._own is None:
                self._own = SpoolFile.create(self.directory)
                log.warning("records_spooled_to_disk", path=str(self._own.path), note="memory is full")
            self._own.append(data)
        except OSError as exc:
            self._disk_failed = True  # a directory we cannot write: memory only, said once
            log.error("records_spool_unavailable", path=str(self.directory), error=repr(exc),
                      note="set RECORDS_SPOOL_DIR to a writable directory; writes that do not fit in memory "
                      "are dropped")  # fmt: skip
            return False
        return True

    def peek(self) -> Write | None:
        for spool in self._adopted:
            if (write := spool.peek()) is not None:
                return write
        if self._memory:
            return self._memory[0]
        return self._own.peek() if self._own is not None else None

    def pop(self) -> None:
        """The write `peek` gave is done (written or dropped)."""
        for spool in list(self._adopted):
            if spool.peek() is not None:
                spool.pop()
                if spool.count == 0:
                    spool.close()
                    self._adopted.remove(spool)
                return
            spool.close()
            self._adopted.remove(spool)
        if self._memory:
            self._memory.popleft()
        elif self._own is not None:
            self._own.pop()
        if not self._adopted and (self._own is None or self._own.count == 0):
            self._full = False

    def close(self) -> list[Write]:
        """At shutdown: what waits in memory goes to disk, before what waits in this process's file (it is
        newer), even past `max_bytes` (by what memory held at most: these are the oldest writes, and the
        file's the newest); returns the writes that could not be kept (no disk)."""
        lost = []
        own, self._own = self._own, None
        if self._memory and own is not None and own.count:
            # A new file: memory first, then the rest of the old one (the oldest are written first).
            with contextlib.suppress(OSError):
                self._own = SpoolFile.create(self.directory) if self.directory else None
        while self._memory:
            write = self._memory.popleft()
            if not self._to_disk(write, over_budget=True):
                lost.append(write)
        if own is not None:
            if self._own is not None and own.count:
                own.take_rest(self._own)
            own.close()
        for spool in self._files():
            spool.close()
        self._adopted, self._own = [], None
        return lost


class Records:
    """What the web app and its calls use: writes that never wait (kept in a spool until the database takes
    them), a handle lookup bounded in time, and the records store's health."""

    reconnect_delays_s: tuple[float, ...] = RECONNECT_DELAYS_S

    def __init__(
        self,
        store: Store,
        *,
        queue_size: int = QUEUE_SIZE,
        spool_dir: str | Path | None = None,
        spool_max_bytes: int = SPOOL_MAX_BYTES,
    ) -> None:
        self.store = store
        self._spool = Spool(queue_size, Path(spool_dir) if spool_dir else None, spool_max_bytes)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # a write was put in the spool
        self._idle = asyncio.Event()  # nothing waits
        self._idle.set()
        self.available = False  # the store answered, and nothing it was asked since failed for its sake
        self._down_since: float | None = None
        self._last_reminder = 0.0
        self._failures = 0  # in a row: the reconnect backoff
        self._lookups = 0  # handle lookups running (waited for or given up on)
        self._logged_line_drops: set[str] = set()

    @classmethod
    def for_settings(cls, settings: Settings) -> Records:
        """The service's records: its DATABASE_URL and its spool (RECORDS_SPOOL_DIR, RECORDS_SPOOL_MAX_MB)."""
        return cls(
            open_store(settings.database_url),
            spool_dir=settings.records_spool_dir or None,
            spool_max_bytes=settings.records_spool_max_mb * 2**20,
        )

    # --- life -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database (for `OPEN_TIMEOUT_S` at most) and start the writer. Never raises for the
        database's sake: without it the service starts degraded, and the writer keeps trying to reach it."""
        try:
            adopted = self._spool.adopt()
        except OSError as exc:  # the spool is a help, never a reason not to start
            adopted = 0
            log.error("records_spool_unavailable", path=str(self._spool.directory), error=repr(exc))
        if adopted:
            log.info("records_spool_adopted", count=adopted, note="left by an earlier run; written first")
            self._idle.clear()
        try:
            await _within(OPEN_TIMEOUT_S, self.store.open())
        except Exception as exc:
            self.store.abort()
            self._went_down(exc, at_start=True)
        else:
            self._came_up()
        # Read when /metrics is scraped: a write pays nothing for them.
        METRICS.records_waiting.set_function(lambda: float(len(self._spool)))
        METRICS.records_store_up.set_function(lambda: 1.0 if self.available else 0.0)
        self._task = asyncio.create_task(self._writer(), name="records_writer")

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Write what waits (only to a database that answers), keep the rest on disk for the next start,
        then close the database: `timeout_s` in all, at most."""
        deadline = time.monotonic() + timeout_s
        if self._task is not None:
            if self.available:
                with contextlib.suppress(TimeoutError):
                    await self.flush(max(0.1, timeout_s - 0.5))  # the rest is for closing
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        waiting = len(self._spool)
        try:
            lost = self._spool.close()
        except OSError as exc:
            lost = []
            log.error("records_spool_unavailable", path=str(self._spool.directory), error=repr(exc))
        for write in lost:
            self._dropped(write, "shutdown")
        if waiting:
            log.warning(
                "records_not_written_at_shutdown",
                waiting=waiting,
                kept_on_disk=waiting - len(lost),
                spool_dir=str(self._spool.directory) if self._spool.directory else None,
                note="the next start with this RECORDS_SPOOL_DIR writes what was kept",
            )
        try:
            await _within(max(0.1, min(CLOSE_TIMEOUT_S, deadline - time.monotonic())), self.store.close())
        except Exception:
            self.store.abort()
        self.available = False

    async def flush(self, timeout_s: float) -> None:
        """Until nothing waits (TimeoutError after `timeout_s`)."""
        async with asyncio.timeout(timeout_s):
            await self._idle.wait()

    @property
    def waiting(self) -> int:
        return len(self._spool)

    def health(self) -> dict[str, Any] | None:
        """None while the store is fine; else what `/healthz` says about it."""
        if self.available:
            return None
        down = time.monotonic() - self._down_since if self._down_since is not None else 0.0
        return {
            "store": "unavailable",
            "waiting": len(self._spool),
            "on_disk": self._spool.on_disk,
            "down_for_s": round(down, 1),
        }

    # --- what calls and the app call ------------------------------------------------------------------------

    def call_ended(self, summary: CallSummary, cost_usd: float = 0.0) -> None:
        self.save(record_of(summary, cost_usd))

    def save(self, record: CallRecord) -> None:
        self._submit(Write(record.call_sid, record=record))

    def transcript(self, call_sid: str, role: str, text: str) -> None:
        self._submit(Write(call_sid, line=TranscriptLine(datetime.now(UTC), role, text)))

    async def resumption_handle(self, call_sid: str) -> str:
        """The handle stored for a call that another instance handed over; "" if none, or no quick answer
        (`HANDLE_LOOKUP_TIMEOUT_S` at most, pool waits included), or the store is known to be down."""
        if not self.available:
            log.info("resumption_handle_not_looked_up", reason="the records store is unavailable")
            return ""
        if self._lookups >= LOOKUPS_IN_FLIGHT:
            log.warning("resumption_handle_not_looked_up", reason="too many lookups waiting for the database")
            return ""
        self._lookups += 1
        try:
            return await _within(HANDLE_LOOKUP_TIMEOUT_S, self._counted(self.store.get_handle(call_sid)))
        except Exception as exc:
            log.warning("resumption_handle_lookup_failed", error=repr(exc))
            if is_store_fault(exc):
                self._went_down(exc)  # the calls after this one do not wait for it; the writer checks
            return ""

    async def _counted(self, lookup: Awaitable[str]) -> str:
        try:
            return await lookup
        finally:
            self._lookups -= 1

    async def save_handle(self, call_sid: str, handle: str) -> None:
        """Store a draining call's handle for the instance it moves to, within `HANDLE_SAVE_TIMEOUT_S`."""
        if not self.available:
            raise StoreUnavailable("the records store is unavailable")
        try:
            await _within(HANDLE_SAVE_TIMEOUT_S, self.store.save_handle(call_sid, handle))
        except Exception as exc:
            if is_store_fault(exc):
                self._went_down(exc)
            raise

    async def get_call(self, call_sid: str) -> CallRecord | None:
        """One call's record (for the API); StoreUnavailable at once while the store is known to be down."""
        if not self.available:
            raise StoreUnavailable("the records store is unavailable")
        return await _within(WRITE_TIMEOUT_S, self.store.get_call(call_sid))

    async def clear_recording(self, call_sid: str) -> None:
        """The call's recording was deleted (RECORDING_RETENTION_DAYS): its record no longer points at it.
        Not spooled: the retention job deletes a recording only once its record has let go of it."""
        if not self.available:
            raise StoreUnavailable("the records store is unavailable")
        try:
            await _within(WRITE_TIMEOUT_S, self.store.clear_recording(call_sid))
        except Exception as exc:
            if is_store_fault(exc):
                self._went_down(exc)
            raise

    async def search_calls(self, query: CallQuery) -> list[CallRecord]:
        """The calls the console lists (bounded like `get_call`)."""
        if not self.available:
            raise StoreUnavailable("the records store is unavailable")
        return await _within(WRITE_TIMEOUT_S, self.store.search_calls(query))

    async def response_latencies(self, since: datetime, until: datetime) -> list[tuple[datetime, float]]:
        """Each answered turn's response latency (ms) in a time range, for the console's overview."""
        if not self.available:
            raise StoreUnavailable("the records store is unavailable")
        return await _within(WRITE_TIMEOUT_S, self.store.response_latencies(since, until))

    # --- the writer -----------------------------------------------------------------------------------------

    def _submit(self, write: Write) -> None:
        if not self._spool.put(write):
            self._dropped(write, "spool_full" if self._spool.directory else "queue_full")
            return
        self._idle.clear()
        self._wake.set()

    def _dropped(self, write: Write, reason: str, error: str | None = None) -> None:
        METRICS.records_dropped.labels(reason=reason).inc()
        if write.record is None:  # a transcript line: logged once per call, counted every time
            if write.call_sid in self._logged_line_drops:
                return
            if len(self._logged_line_drops) > 10_000:
                self._logged_line_drops.clear()
            self._logged_line_drops.add(write.call_sid)
        log.error("record_dropped", call_sid=write.call_sid, what=write.what, reason=reason, error=error)

    def _went_down(self, exc: BaseException, *, at_start: bool = False) -> None:
        self._wake.set()  # the writer reconnects, even if nothing waits to be written
        if not self.available and not at_start:
            return
        self.available = False
        self._down_since = self._last_reminder = time.monotonic()
        log.error(
            "records_store_unavailable",
            setting="DATABASE_URL",
            database=self.store.where,
            error=repr(exc),
            waiting=len(self._spool),
            note="calls go on without it: records wait (in memory, then in RECORDS_SPOOL_DIR) and are "
            "written when it is back; /healthz says degraded",
        )

    def _came_up(self) -> None:
        if self._down_since is not None:
            log.info(
                "records_store_back",
                database=self.store.where,
                down_for_s=round(time.monotonic() - self._down_since, 1),
                waiting=len(self._spool),
            )
        self.available = True
        self._down_since = None

    async def _answers(self) -> bool:
        try:
            await _within(PING_TIMEOUT_S, self.store.ping())
        except Exception:
            return False
        return True

    async def _reconnect(self) -> None:
        """Until the database answers again: a fresh connection, with a backoff between attempts."""
        while True:
            delays = self.reconnect_delays_s
            await asyncio.sleep(delays[min(self._failures, len(delays) - 1)])
            self._failures += 1
            try:
                await _within(OPEN_TIMEOUT_S, self.store.open())
                await _within(PING_TIMEOUT_S, self.store.ping())
            except Exception as exc:
                self.store.abort()
                now = time.monotonic()
                if now - self._last_reminder >= STILL_DOWN_LOG_S:
                    self._last_reminder = now
                    log.warning(
                        "records_store_still_unavailable",
                        database=self.store.where,
                        error=repr(exc),
                        down_for_s=round(now - (self._down_since or now)),
                        waiting=len(self._spool),
                    )
                continue
            self._came_up()
            return

    async def _writer(self) -> None:
        while True:
            if not self.available:
                await self._reconnect()
                continue
            write = self._spool.peek()
            if write is None:
                self._failures = 0
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await _within(WRITE_TIMEOUT_S, write.apply(self.store))
            except Exception as exc:
                if not await self._answers():
                    self.store.abort()  # what is stuck on the old connections ends
                    self._went_down(exc)  # and the write stays first in line
                    continue
                write.attempts += 1
                if write.attempts < (MAX_ATTEMPTS_STORE_FAULT if is_store_fault(exc) else MAX_ATTEMPTS):
                    log.warning("record_write_failed", call_sid=write.call_sid, what=write.what,
                                attempt=write.attempts, error=repr(exc))  # fmt: skip
                    await asyncio.sleep(min(5.0, 0.1 * 2**write.attempts))
                    continue
                self._dropped(write, "write_failed", error=repr(exc))
            else:
                self._failures = 0
            self._spool.pop()


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
    """`gateway calls`' table: a row per call, its columns as wide as their longest value (a Telnyx call
    control id is longer than a Twilio CallSid), then the totals."""
    sid = max([34, *(len(r.call_sid) for r in records)])
    header = f"{'started (UTC)':<20} {'secs':>6}  {'call sid':<{sid}} {'carrier':<10} "
    header += f"{'from':<16} {'to':<16} {'outcome':<16} {'tokens':>7} {'switch':>6} {'cost $':>8}"
    lines = [header]
    for r in records:
        took = r.duration_s or 0.0
        started = r.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "-"
        lines.append(
            f"{started:<20} {took:>6.1f}  {r.call_sid:<{sid}} {r.carrier:<10} {r.from_number:<16} "
            f"{r.to_number:<16} {r.outcome:<16} {r.total_tokens:>7} {r.switches:>6} {r.cost_usd:>8.4f}"
        )
    lines.append(format_totals(records))
    return "\n".join(lines)


def format_totals(records: list[CallRecord]) -> str:
    """The listing's totals: calls, minutes, tokens and the estimated cost (LIVE_PRICES)."""
    minutes = sum(r.duration_s or 0.0 for r in records) / 60
    tokens = sum(r.total_tokens for r in records)
    cost = sum(r.cost_usd for r in records)
    per_minute = f", ${cost / minutes:.4f} a minute" if minutes else ""
    calls = f"{len(records)} call{'' if len(records) == 1 else 's'}"
    return f"{calls}, {minutes:.1f} min, {tokens} tokens, ${cost:.4f} estimated{per_minute}"


class RecordsUnreadable(RuntimeError):
    """`gateway calls` cannot read records: no database where DATABASE_URL says, or it does not answer."""


async def list_calls_command(database_url: str, since: datetime | None, limit: int, as_json: bool) -> str:
    """`gateway calls`: the records as a table, or as JSON with their transcripts. It reads a database, never
    creates one: a SQLite file that is not there means the service has not written records here."""
    store = open_store(database_url)
    if isinstance(store, SqliteStore) and not await asyncio.to_thread(Path(store.path).is_file):
        raise RecordsUnreadable(
            f"no call records at {store.path} (DATABASE_URL={database_url}, relative to this directory): the "
            "service creates it where `gateway serve` runs; run this there, or set DATABASE_URL to its file"
        )
    try:
        await store.open()
        try:
            records = await store.list_calls(since, limit)
            if as_json:  # the listing leaves transcripts out; each call's comes with its record
                for record in records:
                    full = await store.get_call(record.call_sid)
                    record.transcript = full.transcript if full else []
                    record.events = full.events if full else []
        finally:
            await store.close()
    except (OSError, TimeoutError, sqlite3.Error) as exc:
        raise RecordsUnreadable(f"cannot read the call records in the {store.where}: {exc}") from exc
    except Exception as exc:
        if not hasattr(exc, "sqlstate"):  # asyncpg's errors (a wrong password, no such database) have one
            raise
        raise RecordsUnreadable(f"cannot read the call records in the {store.where}: {exc}") from exc
    if as_json:
        return json.dumps([r.public() for r in records], indent=2)
    return format_calls(records)
