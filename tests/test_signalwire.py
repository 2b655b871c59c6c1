"""SignalWire: its signed webhooks, the cXML answer, the bearer token its media upgrade must carry, and its
Compatibility REST API through Twilio's client (no Live session is involved: the Live URL answers nobody)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect

from gateway.devtools.signalwire_api import fake_signalwire_api
from gateway.server import running_gateway
from gateway.signalwire.auth import bearer_ok, signature_of
from gateway.signalwire.rest import signalwire_control
from tests.support.gateway import settings_for

KEY, PUBLIC = "PSK-signing-key", "https://voice.example.com"
FORM = {"CallSid": "6f6c0f84-0000-4000-8000-000000000001", "AccountSid": "proj", "From": "+15550001111",
        "To": "+15550002222"}  # fmt: skip


def test_the_signature_is_read_under_signalwires_name_first_and_the_bearer_compared_whole():
    assert signature_of({"x-signalwire-signature": "a", "x-twilio-signature": "b"}) == "a"
    assert signature_of({"x-twilio-signature": "b"}) == "b"
    assert signature_of({}) is None
    assert bearer_ok("secret", "Bearer secret")
    assert not bearer_ok("secret", "Bearer secre") and not bearer_ok("secret", None)
    assert not bearer_ok("secret", "Bearer secret2") and not bearer_ok("secret", "")


async def test_unsigned_or_mis_signed_webhooks_and_upgrades_without_the_bearer_are_refused():
    sign = RequestValidator(KEY).compute_signature
    settings = settings_for("ws://127.0.0.1:9/x", SIGNALWIRE_SIGNING_KEY=KEY, PUBLIC_URL=PUBLIC)
    async with running_gateway(settings) as url, httpx.AsyncClient() as client:
        voice = url + "/signalwire/voice"
        good = sign(PUBLIC + "/signalwire/voice", FORM)
        assert (await client.post(voice, data=FORM)).status_code == 403
        wrong = RequestValidator("another key").compute_signature(PUBLIC + "/signalwire/voice", FORM)
        assert (
            await client.post(voice, data=FORM, headers={"X-SignalWire-Signature": wrong})
        ).status_code == 403
        tampered = {**FORM, "To": "+15559999999"}
        refused = await client.post(voice, data=tampered, headers={"X-SignalWire-Signature": good})
        assert refused.status_code == 403
        ok = await client.post(voice, data=FORM, headers={"X-SignalWire-Signature": good})
        assert ok.status_code == 200
        root = ET.fromstring(ok.text)
        stream = root.find("./Connect/Stream")
        assert stream is not None and root[1].tag == "Hangup"
        assert stream.get("url") == "wss://voice.example.com/signalwire/media"
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        assert parameters["To"] == "+15550002222" and parameters["token"]
        bearer = stream.get("authBearerToken") or ""
        assert len(bearer) >= 32

        media = url.replace("http", "ws") + "/signalwire/media"
        for headers in ({}, {"Authorization": "Bearer " + bearer[:-1]}, {"Authorization": bearer + "x"}):
            with pytest.raises(websockets.InvalidStatus) as closed:
                async with connect(media, additional_headers=headers):
                    pass
            assert closed.value.response.status_code == 403  # refused before the upgrade is accepted
        async with connect(media, additional_headers={"Authorization": f"Bearer {bearer}"}) as ws:
            assert ws.protocol.state.name == "OPEN"


async def test_hang_up_and_transfer_go_through_the_compatibility_api_at_the_space():
    async with fake_signalwire_api("proj-1", "PT-token") as (space_url, api):
        control = signalwire_control("proj-1", "PT-token", space_url)
        assert await control.transfer("call-1", "+15550009999")
        assert await control.hang_up("call-2")
        api.ended.add("call-3")
        assert not await control.hang_up("call-3")  # already ended: not a failure
        await control.close()
    (sid, transfer), (sid2, hang_up) = api.updates
    assert (sid, sid2) == ("call-1", "call-2")
    assert "<Dial>+15550009999</Dial>" in transfer["Twiml"] and "<Hangup" in hang_up["Twiml"]


async def test_without_the_signing_key_a_development_gateway_answers_unsigned_webhooks():
    async with running_gateway(settings_for("ws://127.0.0.1:9/x")) as url, httpx.AsyncClient() as client:
        answer = await client.post(url + "/signalwire/voice", data=FORM)
        assert answer.status_code == 200 and "authBearerToken" in answer.text


def test_the_dialect_signs_under_both_names_and_presents_the_bearer_on_the_upgrade():
    from gateway.devtools.dialects.signalwire import SignalWireDialect

    dialect = SignalWireDialect(KEY)
    request = dialect.webhook("http://gw/signalwire/voice", PUBLIC + "/signalwire/voice", dict(FORM))
    assert request.data is not None
    signature = request.headers["X-SignalWire-Signature"]
    assert signature == request.headers["X-Twilio-Signature"]
    assert RequestValidator(KEY).validate(PUBLIC + "/signalwire/voice", request.data, signature)
    cxml = (
        '<Response><Connect><Stream url="wss://pub/signalwire/media" authBearerToken="b3arer">'
        '<Parameter name="token" value="t"/></Stream></Connect></Response>'
    )
    answered = dialect.answered(cxml, "https://pub/")
    assert answered.parameters == {"token": "t"}
    assert dialect.upgrade_headers(answered.stream_url) == {"Authorization": "Bearer b3arer"}
