"""A campaign's state in the records database (`DATABASE_URL`, SQLite or PostgreSQL): one row per number.

Each entry is written before the call it describes is asked for (`dialing`) and again once its outcome is
known, so a run that crashed is resumed from here without calling anyone twice (see
`gateway.outbound.campaign`). The calls themselves are in the `calls` table, with the campaign's name.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from gateway.outbound.campaign import Entry

_TABLE = """
CREATE TABLE IF NOT EXISTS campaign_entries (
    campaign TEXT NOT NULL, number TEXT NOT NULL, position INTEGER NOT NULL,
    variables TEXT NOT NULL DEFAULT '{}', tz TEXT NOT NULL DEFAULT '', status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at TEXT, call_sid TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (campaign, number)
)
"""
_FIELDS = ("number", "variables", "tz", "status", "attempts", "next_at", "call_sid", "outcome", "detail")


def _row(entry: Entry) -> tuple[Any, ...]:
    next_at = entry.next_at.isoformat() if entry.next_at else None
    return (entry.number, json.dumps(entry.variables, sort_keys=True), entry.tz, entry.status, entry.attempts,
            next_at, entry.call_sid, entry.outcome, entry.detail)  # fmt: skip


def _entry(row: Any) -> Entry:
    values = dict(zip(_FIELDS, row, strict=True))
    values["variables"] = json.loads(values["variables"] or "{}")
    values["next_at"] = datetime.fromisoformat(values["next_at"]) if values["next_at"] else None
    return Entry(**values)


class CampaignStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def load(self, campaign: str) -> list[Entry]: ...
    async def add(self, campaign: str, entries: list[Entry]) -> None: ...
    async def save(self, campaign: str, entry: Entry) -> None: ...


def open_campaign_store(database_url: str) -> CampaignStore:
    if database_url.startswith(("postgres://", "postgresql://")):
        return PostgresCampaigns(database_url)
    return SqliteCampaigns(database_url.removeprefix("sqlite:///"))


class SqliteCampaigns:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def _run(self, sql: str, *args: Any, many: list[tuple[Any, ...]] | None = None) -> list[Any]:
        def run() -> list[Any]:
            assert self._db is not None
            with self._lock, self._db:
                if many is not None:
                    self._db.executemany(sql, many)
                    return []
                return self._db.execute(sql, args).fetchall()

        return await asyncio.to_thread(run)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=5000")  # the gateway writes the same file
            with db:
                db.execute(_TABLE)
            return db

        self._db = await asyncio.to_thread(connect)

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def load(self, campaign: str) -> list[Entry]:
        rows = await self._run(
            f"SELECT {', '.join(_FIELDS)} FROM campaign_entries WHERE campaign = ? ORDER BY position",
            campaign,
        )
        return [_entry(r) for r in rows]

    async def add(self, campaign: str, entries: list[Entry]) -> None:
        (start,) = (await self._run("SELECT COUNT(*) FROM campaign_entries WHERE campaign = ?", campaign))[0]
        marks = ", ".join("?" * (len(_FIELDS) + 2))
        rows = [(campaign, start + i, *_row(e)) for i, e in enumerate(entries)]
        columns = ", ".join(_FIELDS)
        sql = f"INSERT OR IGNORE INTO campaign_entries (campaign, position, {columns}) VALUES ({marks})"
        await self._run(sql, many=rows)

    async def save(self, campaign: str, entry: Entry) -> None:
        sets = ", ".join(f"{f} = ?" for f in _FIELDS[1:])
        await self._run(
            f"UPDATE campaign_entries SET {sets} WHERE campaign = ? AND number = ?",
            *_row(entry)[1:], campaign, entry.number,
        )  # fmt: skip


class PostgresCampaigns:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._db: Any = None

    async def open(self) -> None:
        import asyncpg

        self._db = await asyncpg.connect(self.dsn, timeout=10)
        async with self._db.transaction():
            await self._db.execute("SELECT pg_advisory_xact_lock(7208)")
            await self._db.execute(_TABLE)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def load(self, campaign: str) -> list[Entry]:
        rows = await self._db.fetch(
            f"SELECT {', '.join(_FIELDS)} FROM campaign_entries WHERE campaign = $1 ORDER BY position",
            campaign,
        )
        return [_entry(tuple(r)) for r in rows]

    async def add(self, campaign: str, entries: list[Entry]) -> None:
        start = await self._db.fetchval("SELECT COUNT(*) FROM campaign_entries WHERE campaign = $1", campaign)
        marks = ", ".join(f"${i + 1}" for i in range(len(_FIELDS) + 2))
        await self._db.executemany(
            f"INSERT INTO campaign_entries (campaign, position, {', '.join(_FIELDS)}) VALUES ({marks}) "
            "ON CONFLICT (campaign, number) DO NOTHING",
            [(campaign, start + i, *_row(e)) for i, e in enumerate(entries)],
        )

    async def save(self, campaign: str, entry: Entry) -> None:
        sets = ", ".join(f"{f} = ${i + 1}" for i, f in enumerate(_FIELDS[1:]))
        n = len(_FIELDS)
        await self._db.execute(
            f"UPDATE campaign_entries SET {sets} WHERE campaign = ${n} AND number = ${n + 1}",
            *_row(entry)[1:], campaign, entry.number,
        )  # fmt: skip
