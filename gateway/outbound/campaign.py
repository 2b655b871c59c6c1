"""The rules of a campaign: who is called when, retried or not, and what each call came to.

Pure (times are passed in, as aware datetimes): the runner (`gateway.outbound.campaign_run`) asks these
rules what to do and keeps every entry's state in the database, so that a campaign run again after a crash
goes on where it stopped and never calls anyone twice:

- an entry is `pending` (to be called, at `next_at` or as soon as its window allows), `dialing` (a call was
  asked for: from the moment before the request is sent), `done` (a final outcome) or `skipped` (on the
  do-not-call list, a duplicate, or refused by the gateway's checks);
- a `dialing` entry found at start-up whose call's result is unknown is not called again: it is `done` as
  `unknown`, since the call may have gone through (a second call is worse than a missed one);
- busy and no-answer are retried, at most `max_attempts` calls in all, `retry_delay_s` apart;
- no call starts outside the calling window in the callee's time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Status = Literal["pending", "dialing", "done", "skipped"]
RETRIED = frozenset({"busy", "no_answer"})
# A call's outcome, from the campaign's point of view (the summary counts these).
OUTCOMES = (
    "person", "voicemail_left", "machine", "busy", "no_answer", "failed", "canceled", "refused", "unknown",
)  # fmt: skip
SKIPS = ("do_not_call", "duplicate", "invalid")
_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)/(s|m|min)$")


@dataclass(frozen=True)
class Window:
    """Hours in which calls may start, in the callee's local time (`09:00-20:00`; the end is excluded)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        match = _WINDOW.match(text.strip())
        if not match:
            raise ValueError(f"--window {text!r} must look like 09:00-20:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError(f"--window {text!r}: hours are 00-24, minutes 00-59")
        end = time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)
        if (h1, m1) >= (h2, m2):
            raise ValueError(f"--window {text!r}: the start must come before the end (same day)")
        return cls(time(h1, m1), end)

    def opens_at(self, now: datetime, tz: ZoneInfo) -> datetime:
        """`now` if the window is open at `now` in `tz`, else when it next opens (aware, in `tz`)."""
        local = now.astimezone(tz)
        if self.start <= local.time() < self.end:
            return local
        day = local.date() if local.time() < self.start else local.date() + timedelta(days=1)
        return datetime.combine(day, self.start, tzinfo=tz)


def zone(name: str) -> ZoneInfo:
    """A time zone by its IANA name; ValueError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone like America/New_York") from None


def parse_rate(text: str) -> float:
    """`--rate`: calls started per second, from `2/s`, `0.5/s` or `30/m`."""
    match = _RATE.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--rate {text!r} must look like 2/s or 30/m")
    value = float(match.group(1))
    return value if match.group(2) == "s" else value / 60


@dataclass
class Entry:
    """One number of a campaign and where it stands."""

    number: str
    variables: dict[str, str] = field(default_factory=dict)
    tz: str = ""  # the callee's time zone ("" when the window does not need one)
    status: Status = "pending"
    attempts: int = 0  # calls asked for so far
    next_at: datetime | None = None  # a retry waits until then
    call_sid: str = ""  # the latest call
    outcome: str = ""  # the final outcome (done), or why skipped; the latest call's while pending a retry
    detail: str = ""  # why a call was refused, say


@dataclass(frozen=True)
class Policy:
    """How a campaign retries and when it calls."""

    max_attempts: int = 3
    retry_delay_s: float = 600.0
    window: Window | None = None


def due(entry: Entry, now: datetime, policy: Policy) -> datetime | None:
    """When `entry` may next be called (`now` or later); None if it is not to be called again."""
    if entry.status != "pending":
        return None
    at = max(now, entry.next_at) if entry.next_at is not None else now
    if policy.window is not None:
        at = policy.window.opens_at(at, zone(entry.tz)).astimezone(now.tzinfo)
    return at


def to_call(entries: list[Entry], now: datetime, policy: Policy) -> list[Entry]:
    """The entries that may be called now, in file order."""
    return [e for e in entries if (at := due(e, now, policy)) is not None and at <= now]


def next_due(entries: list[Entry], now: datetime, policy: Policy) -> datetime | None:
    """The earliest moment an entry may be called; None when no entry is left to call."""
    times = [at for e in entries if (at := due(e, now, policy)) is not None]
    return min(times, default=None)


def dialing(entry: Entry, now: datetime) -> None:
    """A call is about to be asked for: recorded before the request goes out."""
    entry.status, entry.attempts, entry.next_at = "dialing", entry.attempts + 1, None


def placed(entry: Entry, call_sid: str) -> None:
    entry.call_sid = call_sid


def finished(entry: Entry, outcome: str, now: datetime, policy: Policy, detail: str = "") -> None:
    """The call's outcome is known: done, or pending a retry (busy, no answer) while attempts are left."""
    entry.outcome, entry.detail = outcome, detail
    if outcome in RETRIED and entry.attempts < policy.max_attempts:
        entry.status, entry.next_at = "pending", now + timedelta(seconds=policy.retry_delay_s)
    else:
        entry.status, entry.next_at = "done", None


def interrupted(entry: Entry) -> None:
    """A `dialing` entry whose call's result is not known after a crash: never called again (it may have
    gone through)."""
    entry.status, entry.outcome = "done", entry.outcome if entry.call_sid and entry.outcome else "unknown"


def call_outcome(call_status: str, answered_by: str, machine_action: str) -> str | None:
    """A call's outcome for the campaign, from its record: None while it is not over."""
    if call_status in {"busy", "failed", "canceled"}:
        return call_status
    if call_status == "no-answer":
        return "no_answer"
    if call_status != "completed":
        return None
    if answered_by.startswith("machine") or answered_by == "fax":
        return "voicemail_left" if machine_action == "message_left" else "machine"
    return "person"


class Pacer:
    """At most `rate` calls started a second, evenly spaced (no bursts after a pause)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at: float | None = None

    def wait(self, now: float) -> float:
        """Seconds to wait before the next call may start (0: now); the call is counted as started."""
        at = now if self.next_at is None else max(now, self.next_at)
        self.next_at = at + self.interval
        return at - now
