"""Vertex AI offline: OAuth tokens from a service-account key against a local token endpoint (the real wire
format), refreshed before they expire and never logged; the local backend's Vertex path (bearer token, Vertex
model names, transparent resumption's `lastConsumedClientMessageIndex`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.live import protocol as lp
from gateway.live.vertex_auth import REFRESH_AHEAD_S, REFRESH_NOW_S, CredentialsError, VertexAuth, refresh_due
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.local_live.consumed import ConsumedLedger
from gateway.logs import configure_logging
from tests.support.google_oauth import CLIENT_EMAIL, GOOGLE_TOKEN_AUDIENCE, google_credentials

NOW = dt.datetime(2026, 11, 30, 12, 0, 0)


def test_refresh_is_due_ahead_of_expiry_and_waited_for_only_near_it():
    assert refresh_due(None, NOW) == "now"
    assert refresh_due(NOW + dt.timedelta(seconds=REFRESH_AHEAD_S + 1), NOW) == "no"
    assert refresh_due(NOW + dt.timedelta(seconds=REFRESH_AHEAD_S - 1), NOW) == "background"
    assert refresh_due(NOW + dt.timedelta(seconds=REFRESH_NOW_S - 1), NOW) == "now"


async def test_tokens_come_from_the_key_file_and_are_refreshed_before_they_expire(tmp_path):
    async with google_credentials(tmp_path, expires_in=3600) as (key_file, endpoint):
        auth = VertexAuth.load(key_file)
        headers = await auth.headers()
        assert headers == {"Authorization": "Bearer ya29.local-1"}
        assert (await auth.headers())["Authorization"] == "Bearer ya29.local-1"  # an hour left: kept
        (claims,) = endpoint.assertions
        assert claims["iss"] == CLIENT_EMAIL and claims["aud"] == GOOGLE_TOKEN_AUDIENCE
        # Nine minutes left: handed out as it is while a new one is fetched in the background.
        auth._credentials.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=9)
        assert (await auth.headers())["Authorization"] == "Bearer ya29.local-1"
        assert auth._background is not None
        await auth._background
        assert (await auth.headers())["Authorization"] == "Bearer ya29.local-2"
        # Three minutes left: the connect waits for a new one.
        auth._credentials.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=3)
        assert (await auth.headers())["Authorization"] == "Bearer ya29.local-3"
        await auth.close()


async def test_a_refused_key_is_a_clear_error_and_no_token_is_ever_logged(tmp_path, capsys):
    configure_logging("json", "info")
    async with google_credentials(tmp_path) as (key_file, endpoint):
        auth = VertexAuth.load(key_file)
        await auth.headers()
        # Whatever a line carries (here a header, as a careless log call might), the token is masked.
        structlog.get_logger("test").info("connecting", header=f"Authorization: Bearer {endpoint.issued[0]}")
        structlog.get_logger("test").info("connecting", note=f"token {endpoint.issued[0]}")
        endpoint.public_key = google_other_key()  # the endpoint no longer trusts this key
        auth._credentials.token = None
        with pytest.raises(CredentialsError, match=r"could not get a Vertex AI access token.*invalid_grant"):
            await auth.headers()
    out = capsys.readouterr()
    assert "vertex_token_refreshed" in out.out + out.err
    assert "ya29.local-1" not in out.out + out.err and "[redacted]" in out.out + out.err
    assert "PRIVATE KEY" not in out.out + out.err


def google_other_key():
    from tests.support.tls import rsa_key_pem

    return rsa_key_pem()[0].public_key()


def test_the_ledger_never_claims_audio_an_utterance_may_still_take():
    ledger = ConsumedLedger(preroll_s=0.25)
    for i in range(1, 9):  # 1 s of silence in 125 ms messages
        ledger.processed(i, i * 0.125)
    assert ledger.consumed(1.0) == 6  # the last 0.25 s may become an utterance's pre-roll
    ledger.speech_started(1.0)
    for i in range(9, 17):
        ledger.processed(i, i * 0.125)
    assert ledger.consumed(2.0) == 6  # the utterance (and its pre-roll) is not in the history yet
    ledger.speech_ended()
    assert ledger.consumed(2.0) == 14  # now it is; the newest 0.25 s is still not claimed
    assert ledger.consumed(0.0) == 14  # never goes back


@pytest.fixture
async def vertex_server():
    options = LocalLiveOptions(record_connections=True, bearer_check=lambda token: token == "ya29.good")
    async with LocalLiveServer(options=options) as server:
        yield server


def vertex_setup(model: str = "gemini-live-2.5-flash-native-audio", **resumption) -> str:
    config = lp.LiveConfig(
        model=model, platform="vertex", project="p", location="us-central1", transparent_resumption=True
    )
    setup = lp.build_setup(config)
    setup["setup"]["sessionResumption"].update(resumption)
    return json.dumps(setup)


async def test_the_local_vertex_path_takes_bearer_tokens_vertex_names_and_says_what_it_consumed(
    vertex_server,
):
    with pytest.raises(InvalidStatus) as info:
        await connect(vertex_server.vertex_url(), additional_headers={"x-goog-api-key": "k"})
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        await connect(vertex_server.vertex_url(), additional_headers={"Authorization": "Bearer ya29.stale"})
    auth = {"Authorization": "Bearer ya29.good"}
    async with connect(vertex_server.vertex_url(), additional_headers=auth) as ws:
        await ws.send(vertex_setup("gemini-2.5-flash-native-audio-preview-12-2025"))  # a Developer API name
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1008
    async with connect(vertex_server.vertex_url(), additional_headers=auth) as ws:
        await ws.send(vertex_setup())
        assert "setupComplete" in json.loads(await ws.recv())
        update = json.loads(await ws.recv())["sessionResumptionUpdate"]
        assert update["lastConsumedClientMessageIndex"] == "0" and update["resumable"]
        events = lp.parse_server_message(json.dumps({"sessionResumptionUpdate": update}))
        assert events == [lp.ResumptionUpdate(update["newHandle"], True, 0)]
    assert vertex_server.connections[-1].authorization == "Bearer"


async def test_transparent_resumption_is_vertex_only_on_the_local_backend(vertex_server):
    setup = json.loads(vertex_setup())
    setup["setup"]["model"] = "models/" + lp.DEFAULT_MODEL
    async with connect(vertex_server.url()) as ws:
        await ws.send(json.dumps(setup))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1007 and "transparent" in ws.close_reason


async def test_a_vertex_connect_fails_cleanly_when_the_token_cannot_be_had(tmp_path):
    async with google_credentials(tmp_path) as (key_file, endpoint):
        auth = VertexAuth.load(key_file)
        endpoint.public_key = google_other_key()
        with pytest.raises(CredentialsError):
            await asyncio.wait_for(auth.headers(), 10)
