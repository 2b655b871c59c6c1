"""The console's pages and their APIs: calls (search, filters, paging), one call, live calls, the overview."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway import dispatch
from gateway.call.outcome import Outcome
from gateway.console import figures, live
from gateway.console.auth import COOKIE, ConsoleSession, client_of, console_auth
from gateway.console.pages import api, gateway_of, page, render
from gateway.records import CallQuery, StoreUnavailable

log = structlog.get_logger("gateway.console")

PAGE_SIZE = 50
LIVE_EVENTS_PATH = "/console/live/events"
HANG_UP_PATH = "/console/calls/{sid}/hangup"
OVERVIEW_MAX_CALLS = 20_000  # the overview reads at most this many calls of its period (the newest)
OVERVIEW_DAYS = (1, 7, 30)
CARRIERS = ("twilio", "telnyx", "vonage", "plivo", "signalwire", "browser")
STORE_DOWN = (
    "The records database is unavailable: calls go on, and their records are written when it is back."
)


class BadFilter(ValueError):
    """A filter the calls list cannot use; the message says which and why."""


def _time(params: QueryParams, name: str) -> datetime | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadFilter(f"{name}: {value!r} is not a date and time such as 2026-11-30T09:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds(params: QueryParams, name: str) -> float | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise BadFilter(f"{name}: {value!r} is not a number of seconds") from None
    if not 0 <= seconds <= 10**7:
        raise BadFilter(f"{name}: {value} must be 0 or more seconds")
    return seconds


def call_query(params: QueryParams) -> CallQuery:
    """The calls list's filters from its query string (raises BadFilter)."""
    page_text = params.get("page", "1").strip() or "1"
    if not page_text.isdigit() or int(page_text) < 1:
        raise BadFilter(f"page: {page_text!r} must be 1 or more")
    outcome = params.get("outcome", "").strip()
    if outcome and outcome not in {o.value for o in Outcome} | {"busy", "no_answer", "failed", "canceled"}:
        raise BadFilter(f"outcome: {outcome!r} is not an outcome")
    carrier = params.get("carrier", "").strip()
    if carrier and carrier not in CARRIERS:
        raise BadFilter(f"carrier: {carrier!r} is not one of {', '.join(CARRIERS)}")
    return CallQuery(
        since=_time(params, "since"),
        until=_time(params, "until"),
        number=params.get("number", "").strip()[:40],
        agent=params.get("agent", "").strip()[:100],
        outcome=outcome,
        carrier=carrier,
        min_duration_s=_seconds(params, "min_s"),
        max_duration_s=_seconds(params, "max_s"),
        text=params.get("q", "").strip()[:200],
        offset=(int(page_text) - 1) * PAGE_SIZE,
        limit=PAGE_SIZE + 1,  # one more: is there a next page?
    )


def _page_link(params: QueryParams, page_number: int) -> str:
    kept = {k: v for k, v in params.items() if k != "page" and v}
    kept["page"] = str(page_number)
    return "?" + "&".join(f"{k}={_quote(v)}" for k, v in kept.items())


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


async def calls(request: Request, session: ConsoleSession) -> Response:
    params = request.query_params
    context: dict[str, Any] = {
        "nav": "calls", "params": params, "outcomes": [o.value for o in Outcome if o is not Outcome.UNKNOWN],
        "carriers": CARRIERS, "calls": [], "error": None, "previous": None, "next": None,
    }  # fmt: skip
    try:
        query = call_query(params)
    except BadFilter as exc:
        response = render(request, session, "calls.html", **{**context, "error": str(exc)})
        response.status_code = 400
        return response
    try:
        found = await gateway_of(request).records.search_calls(query)
    except (StoreUnavailable, TimeoutError):
        response = render(request, session, "calls.html", **{**context, "error": STORE_DOWN})
        response.status_code = 503
        return response
    page_number = query.offset // PAGE_SIZE + 1
    context["calls"] = found[:PAGE_SIZE]
    context["previous"] = _page_link(params, page_number - 1) if page_number > 1 else None
    context["next"] = _page_link(params, page_number + 1) if len(found) > PAGE_SIZE else None
    context["page_number"] = page_number
    return render(request, session, "calls.html", **context)


async def call_page(request: Request, session: ConsoleSession) -> Response:
    sid = request.path_params["sid"]
    try:
        record = await gateway_of(request).records.get_call(sid)
    except (StoreUnavailable, TimeoutError):
        return render(request, session, "error.html", nav="calls", error=STORE_DOWN, status_code=503)
    if record is None or record.started_at is None:
        if any(c.call_sid == sid for c in gateway_of(request).calls):  # its record is written when it ends
            return render(request, session, "error.html", nav="live", status_code=404,
                          error=f"Call {sid} is in progress: follow it on the Live page; its record comes "
                          "when it ends.")  # fmt: skip
        # (in progress on another process, or no such call: either way its record is not there yet)
        error = f"No record of call {sid}: a call's record is written when it ends."
        return render(request, session, "error.html", nav="calls", error=error, status_code=404)
    turns = figures.latencies(record)
    in_progress = any(c.call_sid == sid for c in gateway_of(request).calls)
    return render(
        request, session, "call.html", nav="calls", call=record, picture=figures.picture(record),
        timeline=figures.timeline(record), turns=turns,
        latency={"median": figures.percentile([float(t) for t in turns], 50),
                 "p95": figures.percentile([float(t) for t in turns], 95), "max": max(turns, default=None)},
        recording_url=getattr(record, "recording_url", ""), in_progress=in_progress,
    )  # fmt: skip


async def live_page(request: Request, session: ConsoleSession) -> Response:
    gw = gateway_of(request)
    processes = gw.machine.processes if gw.machine is not None else 1
    return render(request, session, "live.html", nav="live", processes=processes)


async def live_events(request: Request, session: ConsoleSession) -> Response:
    """Server-sent events: the calls in progress, then each line said and each call's end as they come; the
    machine's (every process's, relayed by this one) unless the path names one process: then that one's."""
    gw = gateway_of(request)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # proxies must not hold it back
    asked = request.path_params.get("slot")
    if asked is not None and asked != gw.live_feed.process:  # that process is being replaced
        return Response(live.absent_stream(asked), media_type="text/event-stream", headers=headers)
    others: dict[int, live.Source] = {}
    if asked is None and gw.machine is not None and (door := gw.machine.door_url):
        auth = console_auth(request)
        assert auth is not None  # a session was required to get here
        # A session of its own, as long as this stream lasts (it never leaves the machine).
        _, signed = auth.key.new(time.time(), lifetime_s=int(live.STREAM_S) + 60)
        cookie = f"{COOKIE}={signed}"
        others = {
            p: live.process_feed(gw.live_feed.http(), door + dispatch.routed(LIVE_EVENTS_PATH, p), cookie)
            for p in range(gw.machine.processes)
            if p != gw.live_feed.process
        }
    stream = gw.live_feed.stream(stopping=lambda: gw.drain.active, others=others)
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def hang_up(request: Request, session: ConsoleSession) -> Response:
    """`POST /console/calls/{sid}/hangup` (CSRF token required): end a call in progress on this process; the
    live view posts to the path routed to the process that holds the call (`.../hangup/process-N`)."""
    sid = request.path_params["sid"]
    call = next((c for c in gateway_of(request).calls if c.call_sid == sid), None)
    if call is None:
        return JSONResponse({"error": "no such call in progress here"}, status_code=404)
    log.info("console_hang_up", call_sid=sid, session=session.id[:8], client=client_of(request))
    call.hang_up_by_operator()
    return JSONResponse({"call_sid": sid, "status": "hanging_up"}, status_code=202)


async def overview(request: Request, session: ConsoleSession) -> Response:
    days_text = request.query_params.get("days", "1")
    days = int(days_text) if days_text.isdigit() and int(days_text) in OVERVIEW_DAYS else 1
    until = datetime.now(UTC)
    since = until - timedelta(days=days)
    records = gateway_of(request).records
    try:
        found = await records.search_calls(CallQuery(since=since, until=until, limit=OVERVIEW_MAX_CALLS + 1))
        latencies = await records.response_latencies(since, until)
    except (StoreUnavailable, TimeoutError):
        return render(request, session, "error.html", nav="overview", error=STORE_DOWN, status_code=503)
    figures_ = figures.overview(found[:OVERVIEW_MAX_CALLS], latencies, since, until,
                                truncated=len(found) > OVERVIEW_MAX_CALLS)  # fmt: skip
    charts = json.dumps(figures_.charts()).replace("</", "<\\/")  # inside a <script>: never its end tag
    return render(request, session, "overview.html", nav="overview", overview=figures_, days=days,
                  choices=OVERVIEW_DAYS, charts=charts)  # fmt: skip


def routes() -> list[BaseRoute]:
    return [
        Route("/console/overview", page(overview), methods=["GET"]),
        Route("/console/calls", page(calls), methods=["GET"]),
        Route("/console/calls/{sid}", page(call_page), methods=["GET"]),
        *_with_routed(
            Route("/console/calls/{sid}/hangup", api(hang_up, changes_state=True), methods=["POST"])
        ),
        Route("/console/live", page(live_page), methods=["GET"]),
        *_with_routed(Route(LIVE_EVENTS_PATH, api(live_events), methods=["GET"])),
    ]


def _with_routed(route: Route) -> tuple[BaseRoute, BaseRoute]:
    """A route, and its twin routed to one process (the live view's, for the calls each process holds)."""
    return route, dispatch.routed_route(route)
