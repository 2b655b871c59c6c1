"""Vonage's and Plivo's entry points refuse what their carrier did not sign, before any Live session, as
tests/test_security.py shows for Twilio: the answer webhooks, the media upgrades, the stream tokens."""

from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from gateway.plivo import protocol as pp
from gateway.plivo import signing as plivo_signing
from gateway.server import running_gateway
from gateway.vonage import protocol as vp
from gateway.vonage import signing as vonage_signing
from tests.support.gateway import settings_for
from tests.support.live_peer import LivePeer

SECRET = "vonage-signature-secret-of-32-bytes-or-more"
PLIVO_ID, PLIVO_TOKEN = "MAXXXXXXXXXXXXXXXXXX", "plivo-auth-token-for-tests"
PUBLIC = "https://voice.example.com"


def _bearer(body: bytes = b"") -> dict[str, str]:
    return {"Authorization": f"Bearer {vonage_signing.sign(SECRET, time.time(), body)}"}


async def _refused_upgrade(url: str, headers: dict[str, str]) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url, additional_headers=headers):
            pass
    return refused.value.response.status_code


async def _closed(ws, timeout: float = 5.0) -> int | None:
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return ws.close_code


async def test_vonage_answers_only_what_vonage_signed_and_its_upgrade_must_be_signed_too():
    env = {"VONAGE_SIGNATURE_SECRET": SECRET, "PUBLIC_URL": PUBLIC, "AGENT_GREETING": "none"}
    async with LivePeer() as peer, running_gateway(settings_for(peer.url, **env)) as url:
        async with httpx.AsyncClient() as client:
            body = json.dumps({"uuid": "u-1", "to": "447700900000", "from": "15550001111"}).encode()
            json_type = {"Content-Type": "application/json"}
            ok = await client.post(
                url + "/vonage/answer", content=body, headers={**_bearer(body), **json_type}
            )
            assert ok.status_code == 200
            (endpoint,) = ok.json()[0]["endpoint"]
            assert endpoint["uri"] == "wss://voice.example.com/vonage/media"
            assert endpoint["authorization"] == {"type": "vonage"}
            token = endpoint["headers"]["token"]
            # unsigned, signed with another secret, or a body swapped under a valid JWT: 403
            for headers in (
                {},
                {"Authorization": f"Bearer {vonage_signing.sign('x' * 40, time.time(), body)}"},
                _bearer(b'{"uuid":"u-1"}'),
            ):
                refused = await client.post(
                    url + "/vonage/answer", content=body, headers={**headers, **json_type}
                )
                assert refused.status_code == 403
            # Vonage's default GET webhook: the call in the query, no body
            got = await client.get(
                url + "/vonage/answer", params={"uuid": "u-2", "to": "1"}, headers=_bearer()
            )
            assert got.status_code == 200 and got.json()[0]["endpoint"][0]["headers"]["uuid"] == "u-2"
            assert (await client.get(url + "/vonage/answer", params={"uuid": "u-3"})).status_code == 403
            assert (await client.post(url + "/vonage/event", json={"uuid": "u-1"})).status_code == 403
        media = url.replace("http", "ws") + "/vonage/media"
        assert await _refused_upgrade(media, {}) == 403
        assert await _refused_upgrade(media, {"Authorization": "Bearer nonsense"}) == 403
        # a signed upgrade whose connected message carries another call's token: closed, no Live session
        async with connect(media, additional_headers=_bearer()) as ws:
            await ws.send(vp.connected_message({"uuid": "u-other", "token": token}))
            assert await _closed(ws) == 1008
        assert len(peer.sessions) == 2  # the two answered calls' pre-warmed sessions, nothing more


async def test_plivo_answers_only_what_plivo_signed_and_the_upgrade_needs_the_calls_token():
    env = {"PLIVO_AUTH_ID": PLIVO_ID, "PLIVO_AUTH_TOKEN": PLIVO_TOKEN, "PUBLIC_URL": PUBLIC}
    async with (
        LivePeer() as peer,
        running_gateway(settings_for(peer.url, AGENT_GREETING="none", **env)) as url,
    ):
        form = {"CallUUID": "c-1", "From": "15550001111", "To": "14155550123"}
        signed = plivo_signing.signed_headers(PLIVO_TOKEN, "POST", PUBLIC + "/plivo/answer", form)
        async with httpx.AsyncClient() as client:
            ok = await client.post(url + "/plivo/answer", data=form, headers=signed)
            assert ok.status_code == 200
            (stream,) = ET.fromstring(ok.text)
            stream_url = stream.text or ""
            query = {k: v[0] for k, v in parse_qs(urlsplit(stream_url).query).items()}
            assert stream_url.startswith("wss://voice.example.com/plivo/media?") and query["call"] == "c-1"
            local = plivo_signing.signed_headers(
                PLIVO_TOKEN, "POST", url + "/plivo/answer", form
            )  # not Plivo's URL
            tampered = {**form, "To": "14155559999"}
            for data, headers in ((form, {}), (form, local), (tampered, signed)):
                refused = await client.post(url + "/plivo/answer", data=data, headers=headers)
                assert refused.status_code == 403
            transfer = "/plivo/transfer?to=%2B15550003333"
            assert (await client.post(url + transfer, data={"CallUUID": "c-1"})).status_code == 403
        media = url.replace("http", "ws") + "/plivo/media"
        local_query = urlsplit(stream_url).query
        assert await _refused_upgrade(media, {}) == 403  # no call, no token
        assert await _refused_upgrade(f"{media}?call=c-2&token={query['token']}", {}) == 403  # another call's
        bad_signature = {plivo_signing.NONCE_HEADER: "n", plivo_signing.SIGNATURE_HEADER: "forged"}
        assert await _refused_upgrade(f"{media}?{local_query}", bad_signature) == 403
        # the URL our answer gave, signed as Plivo signs it: accepted, and the call starts
        upgrade = plivo_signing.signed_headers(PLIVO_TOKEN, "GET", stream_url)
        async with connect(f"{media}?{local_query}", additional_headers=upgrade) as ws:
            sender = pp.PlivoSender("s-1")
            await ws.send(sender.start("c-1", PLIVO_ID))
            await ws.close()
        assert len(peer.sessions) == 1  # the answered call's pre-warmed session


async def test_in_production_a_carrier_without_its_secret_is_refused_not_open():
    env = {"TWILIO_AUTH_TOKEN": "twilio-token", "PUBLIC_URL": PUBLIC}
    async with running_gateway(settings_for("ws://127.0.0.1:9/x", **env)) as url:
        async with httpx.AsyncClient() as client:
            assert (await client.get(url + "/vonage/answer", params={"uuid": "u-1"})).status_code == 403
            assert (await client.post(url + "/plivo/answer", data={"CallUUID": "c-1"})).status_code == 403
        assert await _refused_upgrade(url.replace("http", "ws") + "/vonage/media", {}) == 403
