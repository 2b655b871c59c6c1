"""What the console's pages show, computed from records: pure functions, no I/O.

- `Picture`: a call as two lanes on one time axis (the caller's speech, the agent's audio as heard) with
  barge-ins, switches, tool calls and line actions marked; drawn as SVG by the call's page.
- `timeline`: the transcript and the events in one list, in time order.
- `Overview`: calls per hour, outcomes, median and p95 response latency, cost per day.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.call.events import CallEvent
from gateway.records import CallRecord

MARKED = ("barge_in", "switch", "tool_call", "hang_up", "transfer", "dtmf", "stall", "operator_hang_up")
PICTURE_WIDTH = 1000  # SVG user units; the page scales it to its width


@dataclass(frozen=True)
class Segment:
    start: float
    end: float


@dataclass(frozen=True)
class Marker:
    t: float
    kind: str
    label: str


@dataclass
class Picture:
    """A call's speech as two lanes, and what is marked on them; times in seconds since the call's start."""

    duration_s: float
    caller: list[Segment] = field(default_factory=list)
    agent: list[Segment] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)

    @property
    def scale(self) -> float:
        """SVG units per second."""
        return PICTURE_WIDTH / max(self.duration_s, 1.0)

    def ticks(self) -> list[float]:
        """Seconds to label on the axis: about ten, at a round step."""
        step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 1e9)
                    if self.duration_s / s <= 10)  # fmt: skip
        return [i * step for i in range(int(self.duration_s // step) + 1)]


def _label(event: CallEvent) -> str:
    data = event.data
    detail = data.get("source") or data.get("name") or data.get("target") or data.get("digit") or ""
    detail = detail or data.get("reason") or data.get("step") or ""
    return f"{event.kind.replace('_', ' ')}{f': {detail}' if detail else ''}"


def picture(record: CallRecord) -> Picture:
    """The lanes: each `*_start` paired with the next `*_end` of the same side (an unpaired start runs to the
    call's end)."""
    duration = record.duration_s or max((e.t for e in record.events), default=0.0)
    out = Picture(duration_s=max(duration, max((e.t for e in record.events), default=0.0)))
    open_at: dict[str, float] = {}
    for event in record.events:
        side, _, edge = event.kind.partition("_")
        if side in ("caller", "agent") and edge in ("start", "end"):
            lane = out.caller if side == "caller" else out.agent
            if edge == "start":
                open_at.setdefault(side, event.t)
            elif side in open_at:
                lane.append(Segment(open_at.pop(side), event.t))
        elif event.kind in MARKED:
            out.markers.append(Marker(event.t, event.kind, _label(event)))
    for side, start in open_at.items():
        (out.caller if side == "caller" else out.agent).append(Segment(start, out.duration_s))
    return out


@dataclass(frozen=True)
class Entry:
    """A line of the timeline: something said (`role`, `text`) or an event (`kind`, `label`)."""

    t: float
    role: str = ""
    text: str = ""
    kind: str = ""
    label: str = ""
    latency_ms: int | None = None


# A line is stored some time after its speech began (the caller's once answered, the agent's once heard): a
# segment that begins as the line is stored (the next turn's) is not its own.
STORED_AFTER_S = 0.1
PAUSE_INSIDE_S = 1.0  # a caller's speech with shorter pauses is one line (as the simulator joins it)


def began(at: float, lane: list[Segment], joined_s: float = 0.0) -> float:
    """When the speech of a line stored at `at` began: the start of the last segment of `lane` that began by
    then, and of the segments before it with pauses under `joined_s` between them (one utterance). `at`
    itself if none did. Pure."""
    started = [segment for segment in lane if segment.start <= at - STORED_AFTER_S]
    if not started:
        return at
    first = len(started) - 1
    while first > 0 and started[first].start - started[first - 1].end < joined_s:
        first -= 1
    return started[first].start


def timeline(record: CallRecord) -> list[Entry]:
    """Who said what and what happened, when (seconds since the call's start); responses carry their latency.
    A transcript line is stored once its words are all in (the caller's when the agent answers it, the
    agent's once the caller has heard it or cut it off), so it is stamped when its speech began, from the
    picture's lanes (the caller's speech as the gateway heard it, the agent's audio as the line played it)."""
    entries: list[Entry] = []
    start = record.started_at
    drawn = picture(record)
    for line in record.transcript:
        t = max(0.0, (line.at - start).total_seconds() if start else 0.0)
        if line.role == "caller":
            t = began(t, drawn.caller, PAUSE_INSIDE_S)
        elif line.role == "agent":
            t = began(t, drawn.agent)
        entries.append(Entry(t, role=line.role, text=line.text))
    for event in record.events:
        if event.kind in MARKED:
            entries.append(Entry(event.t, kind=event.kind, label=_label(event)))
        elif event.kind == "response":
            label = f"answer to turn {event.data.get('turn', '')}"
            latency_ms = int(event.data.get("latency_ms", 0))
            entries.append(Entry(event.t, kind="response", label=label, latency_ms=latency_ms))
    return sorted(entries, key=lambda e: e.t)


def latencies(record: CallRecord) -> list[int]:
    """Each answered turn's response latency, in milliseconds, in order."""
    return [
        int(e.data["latency_ms"]) for e in record.events if e.kind == "response" and "latency_ms" in e.data
    ]


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Overview:
    """The overview page's figures for calls started in [since, until)."""

    since: datetime
    until: datetime
    calls: int = 0
    minutes: float = 0.0
    cost_usd: float = 0.0
    per_hour: list[tuple[str, int]] = field(default_factory=list)  # hour (UTC) -> calls
    outcomes: list[tuple[str, int]] = field(default_factory=list)  # most frequent first
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # median, p95 over every answered turn
    latency_per_hour: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    cost_per_day: list[tuple[str, float]] = field(default_factory=list)
    truncated: bool = False  # more calls than were read: the figures cover the newest

    def charts(self) -> dict[str, Any]:
        """The data the page's charts draw."""
        return {
            "per_hour": {"labels": [h for h, _ in self.per_hour], "values": [n for _, n in self.per_hour]},
            "outcomes": {"labels": [o for o, _ in self.outcomes], "values": [n for _, n in self.outcomes]},
            "latency": {
                "labels": [h for h, _, _ in self.latency_per_hour],
                "median": [m for _, m, _ in self.latency_per_hour],
                "p95": [p for _, _, p in self.latency_per_hour],
            },
            "cost_per_day": {
                "labels": [d for d, _ in self.cost_per_day],
                "values": [round(c, 4) for _, c in self.cost_per_day],
            },
        }


def _hours(since: datetime, until: datetime) -> list[datetime]:
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    while hour < until:
        out.append(hour)
        hour += timedelta(hours=1)
    return out


def overview(
    records: list[CallRecord],
    response_latencies: list[tuple[datetime, float]],
    since: datetime,
    until: datetime,
    *,
    truncated: bool = False,
) -> Overview:
    out = Overview(since, until, truncated=truncated)
    out.calls = len(records)
    out.minutes = sum(r.duration_s or 0.0 for r in records) / 60
    out.cost_usd = sum(r.cost_usd for r in records)
    hours = _hours(since, until)
    label = (lambda h: h.strftime("%m-%d %H:00")) if len(hours) > 24 else (lambda h: h.strftime("%H:00"))
    per_hour: Counter[datetime] = Counter()
    per_day: dict[str, float] = {}
    for r in records:
        if r.started_at is None:
            continue
        started = r.started_at.astimezone(UTC)
        per_hour[started.replace(minute=0, second=0, microsecond=0)] += 1
        day_key = started.strftime("%Y-%m-%d")
        per_day[day_key] = per_day.get(day_key, 0.0) + r.cost_usd
    out.per_hour = [(label(h), per_hour.get(h, 0)) for h in hours]
    out.outcomes = Counter(r.outcome or "unknown" for r in records).most_common()
    values = [v for _, v in response_latencies]
    out.latency_ms = {"median": percentile(values, 50), "p95": percentile(values, 95)}
    by_hour: dict[datetime, list[float]] = {}
    for at, value in response_latencies:
        by_hour.setdefault(at.astimezone(UTC).replace(minute=0, second=0, microsecond=0), []).append(value)
    out.latency_per_hour = [
        (label(h), percentile(by_hour.get(h, []), 50), percentile(by_hour.get(h, []), 95)) for h in hours
    ]
    day = since.astimezone(UTC).date()
    while day <= (until - timedelta(microseconds=1)).astimezone(UTC).date():
        out.cost_per_day.append((day.isoformat(), float(per_day.get(day.isoformat(), 0.0))))
        day += timedelta(days=1)
    return out
