"""What the console reads from the records, in both databases: cost, events, the calls list's filters and
paging, response latencies; and an older database gaining the cost column and the events table."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gateway.call.events import CallEvent
from gateway.records import CallQuery, CallRecord, TranscriptLine, Write, format_calls, open_store
from tests.test_records import OLD_STARTED, database_url, old_database_url  # noqa: F401 (fixtures)

# The PostgreSQL database is shared by every run: each run's calls have sids and hours of their own.
RUN = uuid.uuid4().hex[:8]
T0 = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(hours=uuid.uuid4().int % 500_000)


def call(sid: str, minute: int, seconds: float, **fields: object) -> CallRecord:
    started = T0 + timedelta(minutes=minute)
    ended = started + timedelta(seconds=seconds)
    return CallRecord(f"{sid}{RUN}", started_at=started, ended_at=ended, **fields)


async def test_cost_and_events_are_stored_added_up_and_read_back(database_url: str) -> None:  # noqa: F811
    first = call("CAev", 0, 60, stream_sid="MZ1", outcome="moved", cost_usd=0.25, events=[
        CallEvent(1.0, "caller_start"), CallEvent(2.0, "caller_end"),
        CallEvent(2.6, "response", {"turn": 1, "latency_ms": 600}),
        CallEvent(2.6, "agent_start", {"turn": 1}),
    ])  # fmt: skip
    # The second part, on another instance after a move: its times are its own start's.
    second = call("CAev", 1, 30, stream_sid="MZ2", outcome="caller_hung_up", cost_usd=0.5,
                  events=[CallEvent(0.5, "barge_in", {"source": "local"})])  # fmt: skip
    store = open_store(database_url)
    await store.open()
    try:
        await store.save_call(first)
        await store.save_call(first)  # a retried write does not store its events twice
        await store.save_call(second)
        stored = await store.get_call(first.call_sid)
        latencies = await store.response_latencies(T0, T0 + timedelta(hours=1))
        outside = await store.response_latencies(T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    finally:
        await store.close()
    assert stored is not None and stored.cost_usd == pytest.approx(0.75)
    assert [(e.t, e.kind) for e in stored.events] == [
        (1.0, "caller_start"), (2.0, "caller_end"), (2.6, "response"), (2.6, "agent_start"),
        (60.5, "barge_in"),
    ]  # fmt: skip
    public = stored.public()
    assert public["cost_usd"] == pytest.approx(0.75)
    assert public["events"][2] == {"t": 2.6, "kind": "response", "turn": 1, "latency_ms": 600}
    assert latencies == [(T0 + timedelta(seconds=2.6), 600.0)] and outside == []


def test_a_record_waiting_on_disk_keeps_its_cost_and_events() -> None:
    record = call("CAspool", 0, 5, cost_usd=0.01, events=[CallEvent(1.0, "dtmf", {"digit": "5"})])
    again = Write.loads(Write(record.call_sid, record=record).dumps()).record
    assert again is not None and again.cost_usd == 0.01 and again.events == record.events


async def test_the_calls_list_filters_and_pages_newest_first(database_url: str) -> None:  # noqa: F811
    calls = [
        call("CAa", 100, 30, from_number="+15550001111", to_number="+15559990000", agent="model-a",
             outcome="caller_hung_up", carrier="twilio"),
        call("CAb", 110, 300, from_number="+15550002222", to_number="+15559990000", agent="model-b",
             outcome="agent_hung_up", carrier="telnyx"),
        call("CAc", 120, 5, from_number="+15550003333", to_number="+15559990001", agent="model-a",
             outcome="caller_hung_up", carrier="twilio"),
    ]  # fmt: skip
    store = open_store(database_url)
    await store.open()
    try:
        for record in calls:
            await store.save_call(record)
        await store.add_transcript(f"CAb{RUN}", TranscriptLine(T0, "caller", "I need 50% off my Invoice"))

        async def sids(**filters: object) -> list[str]:
            query = CallQuery(since=T0 + timedelta(minutes=99), until=T0 + timedelta(minutes=130))
            found = await store.search_calls(dataclasses.replace(query, **filters))
            return [r.call_sid.removesuffix(RUN) for r in found]

        assert await sids() == ["CAc", "CAb", "CAa"]
        assert await sids(limit=2) == ["CAc", "CAb"] and await sids(limit=2, offset=2) == ["CAa"]
        assert await sids(number="0002222") == ["CAb"]
        assert await sids(number="9990000") == ["CAb", "CAa"]  # the number called matches too
        assert await sids(agent="model-a") == ["CAc", "CAa"]
        assert await sids(outcome="agent_hung_up") == ["CAb"]
        assert await sids(carrier="twilio") == ["CAc", "CAa"]
        assert await sids(min_duration_s=20) == ["CAb", "CAa"]
        assert await sids(max_duration_s=30) == ["CAc", "CAa"]
        assert await sids(since=T0 + timedelta(minutes=105), until=T0 + timedelta(minutes=115)) == ["CAb"]
        assert await sids(text="invoice") == ["CAb"]  # in the transcript, whatever the case
        assert await sids(text="50%") == ["CAb"] and await sids(text="%") == ["CAb"]  # % is a character
        assert await sids(text=f"CAc{RUN}") == ["CAc"]
        assert await sids(number="_") == []  # and so is _
    finally:
        await store.close()


async def test_an_older_database_gains_the_cost_and_the_events(old_database_url: str) -> None:  # noqa: F811
    store = open_store(old_database_url)
    await store.open()
    try:
        before = await store.get_call("CAold")
        later = CallRecord("CAold", stream_sid="MZ9", started_at=OLD_STARTED + timedelta(minutes=5),
                           ended_at=OLD_STARTED + timedelta(minutes=6), cost_usd=0.1,
                           events=[CallEvent(1.0, "hang_up")])  # fmt: skip
        await store.save_call(later)
        after = await store.get_call("CAold")
    finally:
        await store.close()
    assert before is not None and before.cost_usd == 0.0 and before.events == []
    assert after is not None and after.cost_usd == pytest.approx(0.1)
    assert [(e.t, e.kind) for e in after.events] == [(301.0, "hang_up")]


def test_gateway_calls_shows_each_cost_and_the_totals() -> None:
    table = format_calls([call("CA1", 0, 90, total_tokens=100, cost_usd=0.02),
                          call("CA2", 1, 30, total_tokens=50, cost_usd=0.01)])  # fmt: skip
    assert "0.0200" in table and table.splitlines()[-1] == (
        "2 calls, 2.0 min, 150 tokens, $0.0300 estimated, $0.0150 a minute"
    )


def test_gateway_calls_keeps_its_columns_whatever_the_carrier_s_call_ids() -> None:
    telnyx = "v3:" + "x" * 60  # a Telnyx call control id: longer than a CallSid
    rows = [call("CA1", 0, 9, outcome="caller_hung_up"), call(telnyx, 1, 3, carrier="telnyx", outcome="x")]
    header, twilio_row, telnyx_row, totals = format_calls(rows).splitlines()
    assert header.index("carrier") == twilio_row.index("twilio") == telnyx_row.index("telnyx")
    assert header.index("outcome") == twilio_row.index("caller_hung_up") == telnyx_row.index(" x ") + 1
    assert totals.startswith("2 calls")
