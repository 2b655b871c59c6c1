"""A campaign's state in the records database, SQLite and PostgreSQL: written, read back in file order,
and never duplicated or reset when the same CSV is added again (a campaign run twice)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from gateway.outbound.campaign import Entry
from gateway.outbound.campaign_store import open_campaign_store
from tests.support.gateway import postgres_url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'calls.sqlite3'}" if request.param == "sqlite" else postgres_url()


async def test_a_campaign_s_entries_survive_a_second_run_as_they_were_left(database_url):
    name = f"campaign-{uuid.uuid4().hex[:8]}"
    rows = [
        Entry("+12125550101", {"name": "Ada"}, tz="America/New_York"),
        Entry("+12125550102", {"name": "Bo"}),
    ]
    store = open_campaign_store(database_url)
    await store.open()
    try:
        await store.add(name, rows)
        first = await store.load(name)
        first[0].status, first[0].attempts, first[0].call_sid, first[0].outcome = "pending", 1, "CA1", "busy"
        first[0].next_at = datetime(2026, 6, 1, 12, 10, tzinfo=UTC)
        await store.save(name, first[0])
        await store.add(name, [*rows, Entry("+12125550103")])  # the same CSV again, one number more
        again = await store.load(name)
    finally:
        await store.close()
    assert [e.number for e in again] == ["+12125550101", "+12125550102", "+12125550103"]
    assert again[0] == first[0]  # as it was left, not reset by the second add
    assert again[0].variables == {"name": "Ada"} and again[0].tz == "America/New_York"
    assert (again[1].status, again[2].status) == ("pending", "pending")
