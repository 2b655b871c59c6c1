"""What the console's pages show, computed from records (gateway.console.figures): pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.call.events import CallEvent
from gateway.console.figures import Segment, overview, percentile, picture, timeline
from gateway.records import CallRecord, TranscriptLine

T0 = datetime(2026, 5, 6, 10, 30, tzinfo=UTC)


def record(**fields: object) -> CallRecord:
    fields.setdefault("started_at", T0)
    fields.setdefault("ended_at", T0 + timedelta(seconds=20))
    return CallRecord("CA1", **fields)  # type: ignore[arg-type]


def test_the_picture_pairs_each_side_s_starts_and_ends_and_marks_the_rest() -> None:
    events = [
        CallEvent(0.5, "agent_start"), CallEvent(2.0, "caller_start"), CallEvent(2.1, "agent_end"),
        CallEvent(2.1, "barge_in", {"source": "local"}), CallEvent(3.0, "caller_end"),
        CallEvent(3.6, "agent_start"), CallEvent(3.6, "response", {"latency_ms": 600}),
        CallEvent(5.0, "tool_call", {"name": "end_call"}), CallEvent(9.0, "switch", {"reason": "go_away"}),
    ]  # fmt: skip
    drawn = picture(record(events=events))
    assert drawn.caller == [Segment(2.0, 3.0)]
    assert drawn.agent == [Segment(0.5, 2.1), Segment(3.6, 20.0)]  # unfinished: to the call's end
    assert [(m.t, m.label) for m in drawn.markers] == [
        (2.1, "barge in: local"), (5.0, "tool call: end_call"), (9.0, "switch: go_away"),
    ]  # fmt: skip
    assert drawn.scale == 50.0 and drawn.ticks() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]


def test_the_timeline_puts_lines_and_events_in_time_order() -> None:
    lines = [TranscriptLine(T0 + timedelta(seconds=3), "caller", "hello"),
             TranscriptLine(T0 + timedelta(seconds=5), "agent", "hi there")]  # fmt: skip
    events = [CallEvent(3.6, "response", {"turn": 2, "latency_ms": 600}),
              CallEvent(9.0, "dtmf", {"digit": "5"}), CallEvent(1.0, "caller_start")]  # fmt: skip
    entries = timeline(record(transcript=lines, events=events))
    assert [(e.t, e.role or e.kind) for e in entries] == [
        (1.0, "caller"), (3.6, "response"), (5.0, "agent"), (9.0, "dtmf"),
    ]  # fmt: skip
    assert entries[1].latency_ms == 600 and entries[3].label == "dtmf: 5"


def test_each_line_is_stamped_when_its_speech_began_not_when_it_was_stored() -> None:
    """The demo's call as stored: the greeting's line once heard (4.9 s), the caller's once answered, a line
    the caller cut off once cut. The timeline reads in the order things were said."""
    lines = [(4.9, "agent", "Hello! How can I help?"), (10.7, "caller", "hello my name is john"),
             (12.0, "agent", "Nice to meet you, John."), (31.3, "caller", "i want to talk to a human"),
             (32.3, "agent", "Sorry, I cannot [cut]")]  # fmt: skip
    events = [
        CallEvent(0.0, "agent_start"), CallEvent(4.9, "agent_end"),
        CallEvent(0.8, "caller_start"), CallEvent(1.0, "caller_end"),  # a cough, long before
        CallEvent(8.06, "caller_start"), CallEvent(9.0, "caller_end"),
        CallEvent(9.3, "caller_start"), CallEvent(9.8, "caller_end"),  # a pause of 0.3 s inside the line
        CallEvent(10.5, "response", {"turn": 1, "latency_ms": 700}),
        CallEvent(10.5, "agent_start"), CallEvent(12.0, "agent_end"),
        CallEvent(28.8, "caller_start"), CallEvent(30.5, "caller_end"),
        CallEvent(31.3, "agent_start"), CallEvent(32.3, "caller_start"),
        CallEvent(32.3, "barge_in", {"source": "local"}), CallEvent(32.3, "agent_end"),
    ]  # fmt: skip
    transcript = [TranscriptLine(T0 + timedelta(seconds=t), role, text) for t, role, text in lines]
    entries = timeline(record(transcript=transcript, events=events, ended_at=T0 + timedelta(seconds=40)))
    assert [(e.t, e.role or e.kind) for e in entries] == [
        (0.0, "agent"), (8.06, "caller"), (10.5, "agent"), (10.5, "response"),
        (28.8, "caller"), (31.3, "agent"), (32.3, "barge_in"),
    ]  # fmt: skip
    # A line stored as the next turn begins (released by it) is stamped at its own turn, not the next.
    queued = [CallEvent(0.0, "agent_start"), CallEvent(3.0, "agent_end"), CallEvent(3.0, "agent_start")]
    first = TranscriptLine(T0 + timedelta(seconds=3.0), "agent", "Let me check.")
    assert [e.t for e in timeline(record(transcript=[first], events=queued))] == [0.0]


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95 and percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_the_overview_counts_calls_per_hour_outcomes_latency_and_cost_per_day() -> None:
    since, until = T0 - timedelta(hours=2), T0 + timedelta(hours=1)
    calls = [
        record(outcome="caller_hung_up", cost_usd=0.5),
        record(outcome="caller_hung_up", cost_usd=0.25, started_at=T0 - timedelta(hours=1),
               ended_at=T0 - timedelta(minutes=59)),
        record(outcome="agent_hung_up", cost_usd=1.0),
    ]  # fmt: skip
    latencies = [(T0, 400.0), (T0, 800.0), (T0 - timedelta(hours=1), 1000.0)]
    figures = overview(calls, latencies, since, until)
    assert figures.calls == 3 and figures.cost_usd == 1.75
    assert figures.per_hour == [("08:00", 0), ("09:00", 1), ("10:00", 2), ("11:00", 0)]  # 08:30 to 11:30
    assert figures.outcomes == [("caller_hung_up", 2), ("agent_hung_up", 1)]
    assert figures.latency_ms == {"median": 800.0, "p95": 1000.0}
    assert figures.latency_per_hour == [
        ("08:00", None, None), ("09:00", 1000.0, 1000.0), ("10:00", 400.0, 800.0), ("11:00", None, None),
    ]  # fmt: skip
    assert figures.cost_per_day == [("2026-05-06", 1.75)]
    assert figures.charts()["per_hour"]["values"] == [0, 1, 2, 0]
