"""`gateway campaign run numbers.csv --agent NAME --concurrency N --rate R/s [--window 09:00-20:00 --tz Z]`.

The runner is a client of a running gateway (it places each call with `POST /calls`, as `gateway dial`
does, and reads its outcome from the call's record) that keeps the campaign's state in the records database
(`DATABASE_URL`, the gateway's), so that it can be stopped and run again: numbers already called are not
called again, and retries and calling windows are honoured across runs. The rules are in
`gateway.outbound.campaign`; this module carries them out and shows the progress.

It waits for retries (they are minutes apart); when the only numbers left are outside their calling window,
it stops and says when the window opens: run it again then (from cron, say).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import httpx

from gateway.outbound import campaign as rules
from gateway.outbound.campaign import Entry, Policy, Window
from gateway.outbound.campaign_store import CampaignStore, open_campaign_store
from gateway.outbound.client import ApiError, CallsApi, final_status
from gateway.outbound.destinations import check_destination, country_of

NUMBER_COLUMNS = ("number", "to", "phone")
CALL_TIMEOUT_S = 4 * 3600.0  # a call's outcome not known after this long: unknown (never called again)
REFUSED_RETRY_S = 5.0  # the gateway was full or draining: nothing was dialled; ask again this much later
_DURATION = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """`30s`, `10m`, `2h` (or plain seconds) as seconds."""
    text = text.strip()
    unit = _DURATION.get(text[-1:], 0)
    try:
        return float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 30s, 10m or 2h") from None


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    agent: str | None
    concurrency: int
    rate: float  # calls started per second
    policy: Policy
    tz: str = ""  # the callees' time zone when the CSV gives none
    machine: str | None = None


def read_numbers(path: Path, tz: str, do_not_call: set[str], window: Window | None) -> list[Entry]:
    """The CSV's rows as entries: the number column (`number`, `to` or `phone`), a `tz` column if any, and
    the rest as the call's variables. Rows that must not be called are entries too, `skipped` with why."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        number_column = next((c for c in NUMBER_COLUMNS if c in columns), None)
        if number_column is None:
            raise ValueError(f"{path}: no number column (one of {', '.join(NUMBER_COLUMNS)}) in {columns}")
        seen: set[str] = set()
        entries = []
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            number = row.pop(number_column)
            if not number:
                continue
            entry = Entry(
                number, variables={k: v for k, v in row.items() if k != "tz"}, tz=row.get("tz") or tz
            )
            if window is not None and not entry.tz:
                entry.tz = _own_zone(number)
            entries.append(entry)
            _skip_if_needed(entry, seen, do_not_call, window)
            seen.add(number)
    return entries


def _own_zone(number: str) -> str:
    """The number's time zone when its numbering plan has only one, else ""."""
    try:
        return check_destination(number, frozenset({country_of(number) or ""})).timezone or ""
    except ValueError:
        return ""


def _skip_if_needed(entry: Entry, seen: set[str], do_not_call: set[str], window: Window | None) -> None:
    why = ""
    if entry.number in seen:
        entry.outcome, why = "duplicate", "listed before"
    elif entry.number in do_not_call:
        entry.outcome, why = "do_not_call", "on the do-not-call list"
    elif window is not None:
        try:
            rules.zone(entry.tz or "?")
        except ValueError:
            entry.outcome, why = "invalid", "no time zone for the calling window: give --tz or a tz column"
    if why:
        entry.status, entry.detail = "skipped", why


def read_do_not_call(path: Path | None) -> set[str]:
    """Numbers not to call: one per line (the first CSV column), `#` comments."""
    if path is None:
        return set()
    numbers = set()
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        value = line.split("#", 1)[0].split(",", 1)[0].strip()
        if value.startswith("+"):
            numbers.add(value)
    return numbers


# --- progress on the terminal ---

SHOWN = ("person", "voicemail_left", "machine", "busy", "no_answer", "failed", "refused", "unknown")


@dataclass
class Progress:
    """A bar with the counts by outcome: redrawn in place on a terminal, a line per call elsewhere."""

    entries: list[Entry]
    out: TextIO = field(default=sys.stdout)
    tty: bool = False

    def counts(self) -> Counter[str]:
        return Counter(e.outcome for e in self.entries if e.status in ("done", "skipped"))

    def line(self) -> str:
        total = len(self.entries)
        finished = sum(1 for e in self.entries if e.status in ("done", "skipped"))
        dialing = sum(1 for e in self.entries if e.status == "dialing")
        bar = "#" * round(20 * finished / total) if total else ""
        counts = self.counts()
        shown = " ".join(f"{name} {counts[name]}" for name in SHOWN if counts[name])
        skipped = sum(1 for e in self.entries if e.status == "skipped")
        extra = f" skipped {skipped}" if skipped else ""
        return f"[{bar:<20}] {finished}/{total} | {shown or 'no outcome yet'}{extra} | dialing {dialing}"

    def show(self, entry: Entry | None = None) -> None:
        if self.tty:
            print(f"\r{self.line()}\033[K", end="", file=self.out, flush=True)
        elif entry is not None:
            retry = " (retry later)" if entry.status == "pending" else ""
            print(f"{entry.number} {entry.outcome}{retry}  {self.line()}", file=self.out, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=self.out)


# --- the run ---


class CampaignRun:
    def __init__(self, spec: CampaignSpec, api: CallsApi, store: CampaignStore, progress_out: TextIO) -> None:
        self.spec = spec
        self.api = api
        self.store = store
        self.entries: list[Entry] = []
        self.progress = Progress(self.entries, progress_out, progress_out.isatty())
        self.pacer = rules.Pacer(spec.rate)
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.waiting_for_window: datetime | None = None

    async def prepare(self, rows: list[Entry]) -> None:
        """The campaign's entries: those of an earlier run as they were left, and the CSV's new ones."""
        await self.store.add(self.spec.name, rows)
        self.entries[:] = await self.store.load(self.spec.name)

    async def run(self, http: httpx.AsyncClient) -> None:
        await self._resume(http)
        policy = self.spec.policy
        while True:
            now = datetime.now(UTC)
            for entry in rules.to_call(self.entries, now, policy):
                if len(self.in_flight) >= self.spec.concurrency:
                    break
                await asyncio.sleep(self.pacer.wait(time.monotonic()))
                rules.dialing(entry, datetime.now(UTC))
                await self.store.save(self.spec.name, entry)  # before the request: never twice
                self.in_flight[entry.number] = asyncio.create_task(self._call(http, entry))
            upcoming = rules.next_due(self.entries, datetime.now(UTC), policy)
            if not self.in_flight:
                if upcoming is None:
                    return
                if (upcoming - now).total_seconds() > policy.retry_delay_s + 1:
                    self.waiting_for_window = upcoming  # a closed window: stop, run again when it opens
                    return
            wait_s = 1.0 if upcoming is None else max(0.05, (upcoming - datetime.now(UTC)).total_seconds())
            if self.in_flight:
                await asyncio.wait(
                    self.in_flight.values(), timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                )
            else:
                await asyncio.sleep(wait_s)

    async def _resume(self, http: httpx.AsyncClient) -> None:
        """Entries a previous run left `dialing`: a known call is followed to its end; one whose request may
        or may not have gone out is never called again."""
        for entry in self.entries:
            if entry.status != "dialing":
                continue
            if not entry.call_sid:
                rules.interrupted(entry)
                await self.store.save(self.spec.name, entry)
                continue
            self.in_flight[entry.number] = asyncio.create_task(self._follow(http, entry))

    async def _call(self, http: httpx.AsyncClient, entry: Entry) -> None:
        body: dict[str, Any] = {"to": entry.number, "variables": entry.variables, "campaign": self.spec.name}
        if self.spec.agent:
            body["agent"] = self.spec.agent
        if self.spec.machine:
            body["machine"] = self.spec.machine
        try:
            answer = await self.api.place(http, body)
        except ApiError as exc:
            if exc.status in (429, 503) or exc.not_sent:  # nothing was dialled: ask again shortly
                entry.status, entry.attempts = "pending", entry.attempts - 1
                entry.next_at = datetime.now(UTC) + timedelta(seconds=REFUSED_RETRY_S)
            elif exc.status is None:  # the request may have gone out: never again
                rules.finished(entry, "unknown", datetime.now(UTC), self.spec.policy, detail=str(exc))
            else:
                rules.finished(entry, "refused", datetime.now(UTC), self.spec.policy, detail=str(exc))
            await self._save(entry)
            return
        rules.placed(entry, answer["call_sid"])
        await self.store.save(self.spec.name, entry)
        await self._follow(http, entry)

    async def _follow(self, http: httpx.AsyncClient, entry: Entry) -> None:
        try:
            record = await self.api.wait_until_over(http, entry.call_sid, timeout_s=CALL_TIMEOUT_S)
        except (TimeoutError, ApiError) as exc:
            rules.finished(entry, "unknown", datetime.now(UTC), self.spec.policy, detail=str(exc))
        else:
            outcome = rules.call_outcome(
                final_status(record) or "", record.get("answered_by", ""), record.get("machine_action", "")
            )
            rules.finished(entry, outcome or "unknown", datetime.now(UTC), self.spec.policy)
        await self._save(entry)

    async def _save(self, entry: Entry) -> None:
        self.in_flight.pop(entry.number, None)
        await self.store.save(self.spec.name, entry)
        self.progress.show(entry)

    def summary(self) -> str:
        counts = self.progress.counts()
        lines = [f"campaign {self.spec.name}: {len(self.entries)} numbers"]
        for name in (*rules.OUTCOMES, *rules.SKIPS):
            if counts[name]:
                lines.append(f"  {name:<15} {counts[name]}")
        pending = [e for e in self.entries if e.status == "pending"]
        if pending:
            when = self.waiting_for_window
            note = f" (the calling window next opens {when:%Y-%m-%d %H:%M} UTC)" if when else ""
            lines.append(f"  {'not called yet':<15} {len(pending)}{note}: run the same command again")
        refused = [e for e in self.entries if e.outcome == "refused"]
        if refused:
            lines.append(f"  first refusal: {refused[0].number}: {refused[0].detail}")
        return "\n".join(lines)


# --- the command ---


def add_campaign_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="campaign_command", required=True)
    run = sub.add_parser("run", help="call every number of a CSV through a running gateway")
    run.add_argument(
        "csv", type=Path, help="a number column (number, to or phone), the variables, tz optional"
    )
    run.add_argument("--agent", metavar="NAME", help="an agent of AGENTS_FILE")
    run.add_argument("--concurrency", type=int, default=5, metavar="N", help="calls at once (default 5)")
    run.add_argument("--rate", default="1/s", metavar="R/s", help="calls started per second: 2/s, 30/m (1/s)")
    run.add_argument(
        "--window", metavar="09:00-20:00", help="calls start only then, in the callee's time zone"
    )
    run.add_argument("--tz", default="", metavar="ZONE", help="the callees' time zone (America/New_York)")
    run.add_argument("--name", help="the campaign's name, its state's key (default: the CSV's file name)")
    run.add_argument("--attempts", type=int, default=3, help="calls per number at most, retries included (3)")
    run.add_argument("--retry-after", default="10m", metavar="DURATION", help="between retries (10m)")
    run.add_argument("--do-not-call", type=Path, metavar="FILE", help="numbers never to call, one a line")
    run.add_argument("--machine", choices=["hang_up", "leave_message"], help="on an answering machine")
    run.add_argument("--url", help="the gateway (default PUBLIC_URL, else http://127.0.0.1:$PORT)")


def spec_from_args(args: argparse.Namespace) -> CampaignSpec:
    if args.concurrency < 1 or args.attempts < 1:
        raise ValueError("--concurrency and --attempts must be at least 1")
    window = Window.parse(args.window) if args.window else None
    if args.tz:
        rules.zone(args.tz)
    policy = Policy(args.attempts, parse_duration(args.retry_after), window)
    name = args.name or args.csv.stem
    return CampaignSpec(
        name, args.agent, args.concurrency, rules.parse_rate(args.rate), policy, args.tz, args.machine
    )


async def run_campaign_command(args: argparse.Namespace, database_url: str) -> int:
    try:
        spec = spec_from_args(args)
        rows = read_numbers(args.csv, spec.tz, read_do_not_call(args.do_not_call), spec.policy.window)
        api = CallsApi.from_environment(args.url)
    except (ValueError, OSError, ApiError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    store = open_campaign_store(database_url)
    await store.open()
    try:
        campaign = CampaignRun(spec, api, store, sys.stdout)
        await campaign.prepare(rows)
        async with api.client() as http:
            try:
                await campaign.run(http)
            finally:
                campaign.progress.done()
                for task in campaign.in_flight.values():
                    task.cancel()
        print(campaign.summary())
    finally:
        await store.close()
    return 0
