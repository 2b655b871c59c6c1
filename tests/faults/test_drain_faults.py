"""Scenario 6 of the fault suite: Twilio's REST API is unreachable while the gateway drains.

A call in progress at SIGTERM is moved to another instance through Twilio's REST API. When that API refuses
connections, or accepts them and never answers, the redirect is retried with backoff until the drain's plan
gives up; then the caller hears the failure message (the same apology as when Live cannot be brought back)
before the line closes, and the record says `not_moved`, all within the drain's time bound. When the API
comes back in time, a retry moves the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.config import load_settings
from gateway.devtools.simulator import CallResult, CallScript, place_call
from gateway.drain import MOVED_CALLS_WAIT_S, plan_drain
from gateway.local_live.tts import synthesize
from gateway.records import open_store
from gateway.server import running_gateway, serving
from tests.support.audio import caller_tone, loud_seconds
from tests.support.gateway import json_lines, logged, settings_for
from tests.support.live_peer import LivePeer, PeerSession
from tests.support.processes import clean_env, free_port, start_gateway, wait_until_serving
from tests.support.twilio_api import FakeTwilioApi
from tests.support.waiting import wait_for

ACCOUNT, TOKEN = "AC" + "6" * 32, "drain-faults-auth-token"
PUBLIC = "https://voice.example.com"
GRACE_S = 8.0  # long enough for a few retries before the plan gives up (see test_the_plan_...)
APOLOGY = "Sorry, we cannot go on with this call. Goodbye."
LINE_BYTES_PER_S = 16000  # PCM16 at 8 kHz, as the simulator records what the caller heard


def apology_loud_s() -> float:
    """How much of the failure message is speech, as the gateway synthesises it for a phone line."""
    live = load_settings({}, env_file=None).live
    pcm = synthesize(APOLOGY, rate=8000, voice_name=live.voice, language=live.language)
    return loud_seconds(pcm)


async def resumable_and_quiet(session: PeerSession) -> None:
    """A Live session that hands out a resumption handle and then just listens: the call is between turns,
    so the drain tries to move it as soon as its window opens, and anything loud the caller hears at the
    end is the gateway's apology."""
    await session.send({"sessionResumptionUpdate": {"newHandle": "h-7", "resumable": True}})


def long_call() -> CallScript:
    """A caller who stays on the line until the gateway (or Twilio, following a redirect) ends the stream."""
    return CallScript(audio=caller_tone(0.2), trailing_silence_s=120, hang_up=False, max_duration_s=60)


def assert_heard_the_apology(result: CallResult, expected_loud_s: float) -> None:
    """The caller heard the whole failure message at the end of the call, then the gateway closed normally
    (not 1012, the shutdown's close that cut calls off before)."""
    assert result.closed_by == "gateway" and result.close_code == 1000, (result.closed_by, result.close_code)
    tail = result.heard[-int((expected_loud_s * 2 + 2.0) * LINE_BYTES_PER_S) :]
    assert loud_seconds(tail) >= 0.9 * expected_loud_s, (loud_seconds(tail), expected_loud_s)
    assert loud_seconds(result.heard) <= expected_loud_s * 1.1 + 0.1  # nothing else: the agent said nothing


async def record_outcome(database: str, sid: str) -> str:
    store = open_store(database)
    await store.open()
    try:
        async with asyncio.timeout(10):
            while (record := await store.get_call(sid)) is None or not record.outcome:
                await asyncio.sleep(0.05)
    finally:
        await store.close()
    return record.outcome


@dataclass
class FlakyTwilioApi(FakeTwilioApi):
    """The REST stand-in, counting every call update it is asked for; the first `unavailable` of them are
    answered 503, as Twilio's API does while it is degraded."""

    unavailable: int = 0
    requests: int = 0

    async def update_call(self, request: Request) -> JSONResponse:
        self.requests += 1
        if self.unavailable > 0:
            self.unavailable -= 1
            return JSONResponse(
                {"code": 20500, "message": "Service Unavailable", "status": 503}, status_code=503
            )
        return await super().update_call(request)


@contextlib.asynccontextmanager
async def twilio_api_on(port: int, api: FakeTwilioApi) -> AsyncIterator[str]:
    """The stand-in's call updates on a given port (so it can come back where the gateway looks for it)."""
    app = Starlette(
        routes=[Route("/2010-04-01/Accounts/{account}/Calls/{sid}.json", api.update_call, methods=["POST"])]
    )
    async with serving(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")) as url:
        yield url


@contextlib.asynccontextmanager
async def api_that_never_answers() -> AsyncIterator[tuple[str, list[int]]]:
    """A Twilio API that accepts every connection, reads the request and never answers. Yields its base URL
    and a list that grows by one per connection (each attempt of the gateway opens one)."""
    connections: list[int] = []
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def gateway_env(database: str, api_url: str, **extra: str) -> dict[str, str]:
    return dict(
        DATABASE_URL=database, PUBLIC_URL=PUBLIC, DRAIN_GRACE_SECONDS=str(int(GRACE_S)),
        AGENT_GREETING="none", CALL_FAILURE_MESSAGE=APOLOGY,
        TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN, TWILIO_API_BASE_URL=api_url, **extra,
    )  # fmt: skip


def test_the_plan_gives_retries_and_the_whole_apology_room_before_the_drain_ends():
    """The figures the docs quote: the default 15 s grace with the default message (7.7 s) fits Heroku's
    budget (the deploy test counts grace + MOVED_CALLS_WAIT_S for the drain); this suite's grace too."""
    plan = plan_drain(15.0, apology_s=7.675)
    assert plan.end_s == 15.0 + MOVED_CALLS_WAIT_S
    assert plan.give_up_s + 7.675 < plan.end_s  # the whole apology before the end
    assert plan.give_up_s - plan.force_s >= 2.5  # a mid-turn call still gets retries
    assert 5.0 <= plan.start_s < plan.force_s < plan.give_up_s <= 15.0
    ours = plan_drain(GRACE_S, apology_s=3.0)
    assert ours.give_up_s - ours.start_s >= 2.5 and ours.give_up_s + 3.0 < ours.end_s


@pytest.mark.parametrize("outage", ["refused", "never_answers"])
async def test_a_call_that_cannot_be_moved_hears_the_apology_and_is_recorded_not_moved(
    outage: str, tmp_path, capsys
):
    expected_loud_s = apology_loud_s()
    database = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    async with contextlib.AsyncExitStack() as stack:
        if outage == "refused":
            api_url, connections = f"http://127.0.0.1:{free_port()}", None  # nothing listens there
        else:
            api_url, connections = await stack.enter_async_context(api_that_never_answers())
        peer = await stack.enter_async_context(LivePeer(resumable_and_quiet))
        app = create_app(settings_for(peer.url, **gateway_env(database, api_url)))
        gw = app.state.gateway
        url = await stack.enter_async_context(running_gateway(gw.settings, app=app))
        caller = asyncio.create_task(place_call(url, long_call(), auth_token=TOKEN, public_url=PUBLIC))
        await wait_for(lambda: any(c.resumption_handle == "h-7" for c in gw.calls))
        (call,) = gw.calls
        sid = call.call_sid
        capsys.readouterr()

        began = time.monotonic()
        await gw.drain.run()
        drain_s = time.monotonic() - began
        left_to_the_shutdown = len(gw.calls)
    # The server has shut down as `gateway serve` does after its drain (closing what is left with 1012).
    result = await caller
    outcome = await record_outcome(database, sid)
    events = logged(capsys)
    not_moved = [e for e in events if e["event"] == "call_not_moved"]
    figures = (
        f"{outage}: {[e['attempts'] for e in not_moved]} attempts, drain took {drain_s:.2f} s (bound "
        f"{GRACE_S + MOVED_CALLS_WAIT_S:.0f} s), left {left_to_the_shutdown} call(s) to the shutdown; the "
        f"caller heard {loud_seconds(result.heard):.2f} s of speech (the apology: {expected_loud_s:.2f} s), "
        f"close {result.close_code}, recorded {outcome}"
    )
    print(figures)
    assert drain_s <= GRACE_S + MOVED_CALLS_WAIT_S, figures  # what the deploy budget counts for the drain
    # The caller has heard the apology and the line is closed before the drain is over: nothing is left for
    # the shutdown to cut off.
    assert left_to_the_shutdown == 0, figures
    assert_heard_the_apology(result, expected_loud_s)
    assert outcome == "not_moved", figures
    (failed,) = not_moved
    assert failed["call_sid"] == sid and failed["attempts"] >= 2, figures  # retried, with backoff
    if connections is not None:
        assert len(connections) == failed["attempts"]  # each attempt reached the API and got no answer
    (ended,) = [e for e in events if e["event"] == "call_ended"]
    assert ended["outcome"] == "not_moved"


async def test_the_redirect_is_retried_until_the_api_comes_back_and_the_call_moves(tmp_path, capsys):
    database = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    port = free_port()  # nothing listens there until the API comes back
    api = FlakyTwilioApi(ACCOUNT, TOKEN, unavailable=1)
    async with LivePeer(resumable_and_quiet) as peer:
        app = create_app(settings_for(peer.url, **gateway_env(database, f"http://127.0.0.1:{port}")))
        gw = app.state.gateway
        async with running_gateway(gw.settings, app=app) as url:
            caller = asyncio.create_task(place_call(url, long_call(), auth_token=TOKEN, public_url=PUBLIC))
            await wait_for(lambda: any(c.resumption_handle == "h-7" for c in gw.calls))
            (call,) = gw.calls
            sid = call.call_sid
            capsys.readouterr()
            plan = plan_drain(GRACE_S, gw.drain.apology_s)

            began = time.monotonic()
            drain = asyncio.create_task(gw.drain.run())
            await asyncio.sleep(plan.start_s + 0.5)  # the first attempts are refused...
            assert api.requests == 0 and not drain.done()
            async with twilio_api_on(port, api):  # ... then the API is back: one 503, then it answers
                await wait_for(lambda: api.updates, timeout=plan.give_up_s)
                caller.cancel()  # Twilio ends the stream as it follows the redirect
                with contextlib.suppress(asyncio.CancelledError):
                    await caller
                await drain
            drain_s = time.monotonic() - began
    events = logged(capsys)
    (moved,) = [e for e in events if e["event"] == "call_moved"]
    figures = (
        f"API back {plan.start_s + 0.5:.1f} s into the drain: moved at attempt {moved['attempts']}, the "
        f"stand-in answered {api.requests} request(s), the drain took {drain_s:.2f} s"
    )
    print(figures)
    assert api.requests == 2, figures  # the 503 was retried too
    ((updated, form),) = api.updates
    assert updated == sid
    assert f'<Redirect method="POST">{PUBLIC}/twilio/voice?moved=1</Redirect>' in form["Twiml"]
    assert gw.drain.moved == {sid}
    assert drain_s <= GRACE_S + MOVED_CALLS_WAIT_S, figures
    assert moved["attempts"] >= 3 and moved["resumable"] is True, figures
    assert not [e for e in events if e["event"] == "apologising_to_caller"]
    assert await record_outcome(database, sid) == "moved"


async def test_sigterm_with_the_api_down_apologises_then_exits_within_the_budget(tmp_path):
    """The scenario as it was found: a real process, SIGTERM, Twilio's API refusing connections. Before,
    the call was cut at exit (close 1012, no apology) and recorded `caller_hung_up`."""
    expected_loud_s = apology_loud_s()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    database = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    sid = "CA" + "d" * 32
    async with LivePeer(resumable_and_quiet) as peer, httpx.AsyncClient() as client:
        env = clean_env(
            PORT=str(port), GEMINI_LIVE_URL=peer.url,
            **{**gateway_env(database, f"http://127.0.0.1:{free_port()}"), "PUBLIC_URL": public},
        )  # fmt: skip
        log_path = tmp_path / "serve.log"
        proc = start_gateway(env, tmp_path, log_path)
        caller: asyncio.Task[CallResult] | None = None
        try:
            await wait_until_serving(client, public, proc, log_path, 30)
            caller = asyncio.create_task(place_call(public, long_call(), auth_token=TOKEN, call_sid=sid))
            async with asyncio.timeout(10):
                while (await client.get(public + "/healthz")).json()["active_calls"] != 1:
                    await asyncio.sleep(0.05)

            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            result = await asyncio.wait_for(caller, GRACE_S + MOVED_CALLS_WAIT_S + 5)
            heard_by_s = time.monotonic() - signalled
            returncode = await asyncio.to_thread(proc.wait, 30)
            exit_s = time.monotonic() - signalled
        finally:
            if caller is not None:
                caller.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    outcome = await record_outcome(database, sid)
    figures = (
        f"SIGTERM -> line closed {heard_by_s:.2f} s, -> exit {exit_s:.2f} s (drain bound "
        f"{GRACE_S + MOVED_CALLS_WAIT_S:.0f} s); the caller heard {loud_seconds(result.heard):.2f} s of "
        f"speech (the apology has {expected_loud_s:.2f} s), close {result.close_code}, recorded {outcome}"
    )
    print(figures)
    assert returncode == 0, figures
    assert heard_by_s <= GRACE_S + MOVED_CALLS_WAIT_S, figures
    # The drain left nothing for uvicorn's shutdown to wait for: the process exits right after it.
    assert exit_s <= GRACE_S + MOVED_CALLS_WAIT_S + 3, figures
    assert_heard_the_apology(result, expected_loud_s)
    assert outcome == "not_moved", figures
    events = json_lines(log_path.read_text())
    (not_moved,) = [e for e in events if e["event"] == "call_not_moved"]
    assert not_moved["attempts"] >= 2
