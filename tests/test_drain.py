"""Graceful drain: new calls go elsewhere, calls in progress run out the grace period, then move to another
instance (Twilio REST redirect) and resume their Live session there from the stored handle."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import httpx
import pytest
import soundfile
from twilio.request_validator import RequestValidator

from gateway.app import create_app
from gateway.devtools.simulator import CallScript, place_call
from gateway.records import open_store
from gateway.server import running_gateway
from tests.support.audio import caller_tone
from tests.support.gateway import json_lines, logged, settings_for
from tests.support.live_peer import LivePeer, PeerSession
from tests.support.processes import clean_env, free_port, start_gateway, wait_until_serving
from tests.support.twilio_api import fake_twilio_api
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ACCOUNT, TOKEN = "AC" + "7" * 32, "drain-test-auth-token"
PUBLIC = "https://voice.example.com"


def long_call() -> CallScript:
    """A caller who stays on the line until Twilio (here: the test) ends the stream."""
    return CallScript(audio=caller_tone(0.2), trailing_silence_s=120, hang_up=False)


async def signed_webhook(client: httpx.AsyncClient, url: str, public: str, sid: str) -> httpx.Response:
    params = {"CallSid": sid, "From": "+15550001111", "To": "+15550002222"}
    signature = RequestValidator(TOKEN).compute_signature(public + "/twilio/voice", params)
    return await client.post(url + "/twilio/voice", data=params, headers={"X-Twilio-Signature": signature})


async def test_a_drained_call_moves_to_another_instance_and_resumes_its_live_session(tmp_path, capsys):
    async def script(session: PeerSession) -> None:
        if not session.setup["sessionResumption"].get("handle"):
            await session.send({"sessionResumptionUpdate": {"newHandle": "h-42", "resumable": True}})

    database = f"sqlite:///{tmp_path / 'shared.sqlite3'}"  # the only thing instances share
    async with fake_twilio_api(ACCOUNT, TOKEN) as (api_url, api), LivePeer(script) as peer:
        env = dict(
            AGENT_GREETING="Greet the caller", DATABASE_URL=database, PUBLIC_URL=PUBLIC,
            DRAIN_GRACE_SECONDS="3", TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN,
            TWILIO_API_BASE_URL=api_url, LIVE_PREWARM_S="10",
            RECORDING="gateway", RECORDINGS_URL=str(tmp_path / "recordings"),  # shared, as a bucket would be
        )  # fmt: skip
        app_a = create_app(settings_for(peer.url, **env))
        gw_a = app_a.state.gateway
        async with (
            running_gateway(gw_a.settings, app=app_a) as url_a,
            running_gateway(settings_for(peer.url, **env)) as url_b,
            httpx.AsyncClient() as client,
        ):
            caller = asyncio.create_task(place_call(url_a, long_call(), auth_token=TOKEN, public_url=PUBLIC))
            await wait_for(lambda: any(c.resumption_handle == "h-42" for c in gw_a.calls))
            (call,) = gw_a.calls
            sid = call.call_sid

            drain = asyncio.create_task(gw_a.drain.run())
            await wait_for(lambda: gw_a.drain.active)
            # no new calls here: load balancers see 503, and the webhook sends the call back through them
            assert (await client.get(url_a + "/healthz")).status_code == 503
            fallback = await signed_webhook(client, url_a, PUBLIC, "CAnew")
            assert "<Redirect" in fallback.text and "<Connect>" not in fallback.text
            assert f"{PUBLIC}/twilio/voice" in fallback.text
            assert not api.updates  # the call in progress runs until the grace period ends

            await wait_for(lambda: api.updates)
            (updated_sid, form), *_ = api.updates
            assert updated_sid == sid
            # the redirect says the call is moved: only such a call looks up a stored handle
            assert f'<Redirect method="POST">{PUBLIC}/twilio/voice?moved=1</Redirect>' in form["Twiml"]
            caller.cancel()  # Twilio ends the stream here as it follows the redirect
            with contextlib.suppress(asyncio.CancelledError):
                await caller
            await drain
            assert gw_a.drain.moved == {sid} and not gw_a.calls
            lines = logged(capsys)
            moved = next(e for e in lines if e["event"] == "call_moved")
            assert moved["between_turns"] is True and moved["resumable"] is True

            # ... and asks the webhook again, with the same CallSid; another instance answers
            await place_call(
                url_b, CallScript(audio=caller_tone(0.3), trailing_silence_s=0.5),
                auth_token=TOKEN, public_url=PUBLIC, call_sid=sid, webhook_path="/twilio/voice?moved=1",
            )  # fmt: skip
    first, *others = peer.sessions
    assert first.setup["sessionResumption"] == {} and first.client_turns == ["Greet the caller"]
    (resumed,) = others  # on B: nothing pre-warmed for a moved call, its session resumed
    assert resumed.setup["sessionResumption"] == {"handle": "h-42"}  # the conversation goes on
    assert resumed.client_turns == []  # no second greeting

    store = open_store(database)
    await store.open()
    try:
        async with asyncio.timeout(10):
            while (record := await store.get_call(sid)) is None or record.outcome != "caller_hung_up":
                await asyncio.sleep(0.05)
    finally:
        await store.close()
    assert record.started_at is not None and record.ended_at is not None
    assert (record.ended_at - record.started_at).total_seconds() > 1.0  # both instances' parts
    # The recording: a part per instance, linked by the CallSid, in the order they began; the record points
    # at the first and counts both.
    await wait_for(lambda: len(list((tmp_path / "recordings" / sid).glob("*.flac"))) == 2)
    parts = sorted((tmp_path / "recordings" / sid).glob("*.flac"))
    assert record.recording_parts == 2 and record.recording_url == parts[0].as_uri()
    lengths = [soundfile.info(str(part)).duration for part in parts]
    assert record.recording_s == pytest.approx(sum(lengths), abs=0.01) and min(lengths) > 0.5


async def test_sigterm_drains_a_running_server_then_exits(tmp_path):
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    grace_s = 3
    async with fake_twilio_api(ACCOUNT, TOKEN) as (api_url, api), httpx.AsyncClient() as client:
        env = clean_env(
            PORT=str(port), PUBLIC_URL=public, AGENT_GREETING="none", DRAIN_GRACE_SECONDS=str(grace_s),
            TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN, TWILIO_API_BASE_URL=api_url,
            DATABASE_URL=f"sqlite:///{tmp_path / 'calls.sqlite3'}",
        )  # fmt: skip
        log_path = tmp_path / "serve.log"
        proc = start_gateway(env, tmp_path, log_path)
        caller: asyncio.Task | None = None
        try:
            # the local backend loads its models first
            await wait_until_serving(client, public, proc, log_path, 90, poll_s=0.2)
            caller = asyncio.create_task(place_call(public, long_call(), auth_token=TOKEN))
            async with asyncio.timeout(20):
                while (await client.get(public + "/healthz")).json()["active_calls"] != 1:
                    await asyncio.sleep(0.05)

            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            async with asyncio.timeout(10):
                while (health := await client.get(public + "/healthz")).status_code != 503:
                    await asyncio.sleep(0.05)
            assert health.json() == {"status": "draining", "active_calls": 1}
            fallback = await signed_webhook(client, public, public, "CAnew")
            assert fallback.status_code == 200
            assert "<Redirect" in fallback.text and "<Connect>" not in fallback.text

            async with asyncio.timeout(grace_s + 15):
                while not api.updates:
                    await asyncio.sleep(0.05)
            # the call had the grace period (moved in its last quarter, at a moment between turns if any)
            assert time.monotonic() - signalled >= grace_s * 0.75
            assert not caller.done()  # ... and was not cut off: it is moved
            (sid, form), *_ = api.updates
            assert "<Redirect" in form["Twiml"] and f"{public}/twilio/voice" in form["Twiml"]
            caller.cancel()  # Twilio ends the stream as it follows the redirect
            returncode = await asyncio.to_thread(proc.wait, 30)
        finally:
            if caller is not None:
                caller.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert returncode == 0
    events = json_lines(log_path.read_text())
    names = [e["event"] for e in events]
    assert names.index("drain_started") < names.index("call_moved") < names.index("drain_finished")
    moved = next(e for e in events if e["event"] == "call_moved")
    assert moved["call_sid"] == sid and moved["moved"] is True


def test_gateway_serve_runs_the_draining_server_with_the_settings_limits(monkeypatch):
    from gateway import server
    from gateway.drain import Drain

    made: list[tuple[object, object]] = []
    monkeypatch.setattr(
        server.DrainingServer, "run", lambda self, sockets=None: made.append((self.config, self._drain))
    )
    server.serve_forever(settings_for("ws://127.0.0.1:9/live", MAX_MESSAGE_BYTES="5000"), "127.0.0.1", 0)
    ((config, drain),) = made
    assert config.ws_max_size == 5000 and config.timeout_graceful_shutdown == 5
    assert drain.__func__ is Drain.run  # SIGTERM drains this app's gateway
