"""Plivo: its audio-stream protocol, V3 signatures, the XML answers, the settings, the line in memory, its API
against the stand-in, and every entry point refused unsigned or without the call's stream token (before any
Live session)."""

from __future__ import annotations

import asyncio
import base64
import json
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from gateway.call.line import CallerAudio, Ended, Keypress, Played, Started
from gateway.config import ConfigError, load_settings
from gateway.devtools.plivo_api import fake_plivo_api
from gateway.plivo import protocol as pp
from gateway.plivo import signing
from gateway.plivo.answer import dial_xml, redirect_xml, stream_xml
from gateway.plivo.line import PlivoLine
from gateway.plivo.rest import PlivoApiError, PlivoControl, transfer_url
from gateway.server import running_gateway
from tests.support.gateway import settings_for
from tests.support.line_doubles import FakeControl, FakeSocket, refused_upgrade
from tests.support.live_peer import LivePeer

TOKEN = "auth-token-of-the-plivo-account"
STREAM = "87654321-4321-4321-4321-cba987654321"

# --- the stream protocol ------------------------------------------------------------------------------------


def test_start_carries_ids_format_and_our_extra_headers():
    sender = pp.PlivoSender(STREAM, extra_headers="token=abc,from=15550001111")
    event = pp.parse(sender.start("12345678-1234-1234-1234-123456789abc", "MA1234"))
    assert event == pp.Start(
        STREAM,
        "12345678-1234-1234-1234-123456789abc",
        "MA1234",
        "audio/x-l16",
        16000,
        {"token": "abc", "from": "15550001111"},
    )
    # as Plivo's reference writes them: `;` between pairs
    assert pp.parse_extra_headers("userId=12345;sessionId=abc-xyz") == {
        "userId": "12345",
        "sessionId": "abc-xyz",
    }


def test_media_dtmf_checkpoint_answers_and_clears_are_read():
    sender = pp.PlivoSender(STREAM)
    assert pp.parse(sender.media(b"\x01\x00\x02\x00", 20)) == pp.Media(STREAM, b"\x01\x00\x02\x00")
    assert pp.parse(sender.dtmf("7", 40)) == pp.Dtmf(STREAM, "7")
    assert pp.parse(sender.played("turn-2")) == pp.PlayedStream(STREAM, "turn-2")
    played = {"event": "played", "streamId": STREAM, "name": "turn-3"}  # as Plivo's support pages name it
    assert pp.parse(json.dumps(played)) == pp.PlayedStream(STREAM, "turn-3")
    assert pp.parse(sender.cleared()) == pp.ClearedAudio(STREAM)
    assert pp.parse('{"event":"stop","streamId":"s1"}') == pp.Stop("s1")


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"\x00\x01", "binary"),
        ('{"event":"media","streamId":"s","media":{"payload":"%%%"}}', "base64"),
        ('{"event":"media","streamId":"s\\"x","media":{"payload":""}}', "plain id"),
        (
            '{"event":"start","start":{"streamId":"s","callId":"c","mediaFormat":{"sampleRate":44100}}}',
            "8000",
        ),
        ('{"event":"start","start":{"streamId":"s","callId":"c","mediaFormat":{"sampleRate":true}}}', "8000"),
        ('{"event":"dtmf","streamId":"s","dtmf":{"digit":"x"}}', "not a key"),
        ('{"event":"playedStream","streamId":"s"}', "without a name"),
        ('{"event":"hangup"}', "unknown event"),
        ("{", "malformed"),
    ],
)
def test_what_is_not_plivo_is_a_protocol_error(message, error):
    with pytest.raises(pp.ProtocolError, match=error):
        pp.parse(message)


def test_we_play_l16_at_16k_and_send_checkpoints_and_clears_for_our_stream():
    play = json.loads(pp.play_message(b"\x01\x02\x03\x04"))
    assert play == {
        "event": "playAudio",
        "media": {
            "contentType": "audio/x-l16",
            "sampleRate": 16000,
            "payload": base64.b64encode(b"\x01\x02\x03\x04").decode(),
        },
    }
    assert json.loads(pp.checkpoint_message(STREAM, "turn-1")) == {
        "event": "checkpoint",
        "streamId": STREAM,
        "name": "turn-1",
    }
    assert json.loads(pp.clear_message(STREAM)) == {"event": "clearAudio", "streamId": STREAM}
    assert pp.parse_command(pp.play_message(b"\x05\x06")) == pp.Command(
        "playAudio", pcm=b"\x05\x06", rate=16000
    )


# --- V3 signatures ------------------------------------------------------------------------------------------


def test_a_post_is_signed_over_url_nonce_and_sorted_parameters():
    url, params = (
        "https://voice.example.com/plivo/answer",
        {"To": "15550002222", "CallUUID": "u-1", "From": "1"},
    )
    headers = signing.signed_headers(TOKEN, "POST", url, params)
    nonce, given = headers[signing.NONCE_HEADER], headers[signing.SIGNATURE_HEADER]
    assert signing.valid(TOKEN, "POST", url, nonce, given, params)
    assert signing.valid(TOKEN, "POST", url, nonce, f"old-key-signature,{given}", params)  # a rotation
    assert not signing.valid(TOKEN, "POST", url, nonce, given, {**params, "To": "15559999999"})
    assert not signing.valid(TOKEN, "POST", url + "?x=1", nonce, given, params)
    assert not signing.valid(TOKEN, "POST", url, "another-nonce", given, params)
    assert not signing.valid("another-token", "POST", url, nonce, given, params)
    assert not signing.valid(TOKEN, "POST", url, None, given, params)
    assert not signing.valid(TOKEN, "POST", url, nonce, None, params)


def test_a_get_is_signed_over_the_url_with_its_query_sorted():
    url = "wss://voice.example.com/plivo/media?b=2&a=1"
    headers = signing.signed_headers(TOKEN, "GET", url)
    nonce, given = headers[signing.NONCE_HEADER], headers[signing.SIGNATURE_HEADER]
    assert signing.valid(TOKEN, "GET", url, nonce, given)
    assert signing.valid(TOKEN, "GET", "wss://voice.example.com/plivo/media?a=1&b=2", nonce, given)
    assert not signing.valid(TOKEN, "GET", "wss://voice.example.com/plivo/media?a=1&b=3", nonce, given)


# --- the XML answers ----------------------------------------------------------------------------------------


def test_the_answer_streams_bidirectional_wideband_alone_with_the_call_in_the_url():
    url = "wss://voice.example.com/plivo/media?call=u-1&token=1800000060.Ab_c-12.XyZ-_"
    (stream,) = ET.fromstring(stream_xml(url))
    assert stream.tag == "Stream" and stream.text == url
    assert stream.attrib["bidirectional"] == "true" and stream.attrib["keepCallAlive"] == "true"
    assert stream.attrib["contentType"] == "audio/x-l16;rate=16000"
    assert stream.attrib["audioTrack"] == "inbound"
    wait, redirect = ET.fromstring(redirect_xml("https://voice.example.com/plivo/answer"))
    assert (wait.tag, redirect.tag, redirect.text) == (
        "Wait",
        "Redirect",
        "https://voice.example.com/plivo/answer",
    )


def test_a_transfer_is_xml_that_dials_the_target_at_a_url_of_ours():
    assert ET.fromstring(dial_xml("+15550003333")).find("Dial/Number").text == "+15550003333"
    url = transfer_url("https://voice.example.com/", "+15550003333")
    assert url == "https://voice.example.com/plivo/transfer?to=%2B15550003333"


# --- settings -----------------------------------------------------------------------------------------------


def test_plivo_settings_go_together_and_the_token_is_never_shown():
    settings = load_settings(
        {"PLIVO_AUTH_ID": "MAXXXXXXXXXXXXXXXXXX", "PLIVO_AUTH_TOKEN": "tok-value"}, env_file=None
    )
    assert settings.plivo.can_control and "tok-value" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PLIVO_AUTH_ID": "MAXXXXXXXXXXXXXXXXXX"}, "PLIVO_AUTH_TOKEN is not set"),
        ({"PLIVO_AUTH_TOKEN": "t"}, "PLIVO_AUTH_ID is not set"),
        ({"PLIVO_AUTH_ID": "my account", "PLIVO_AUTH_TOKEN": "t"}, "PLIVO_AUTH_ID="),
        ({"PLIVO_API_BASE_URL": "ftp://x"}, "PLIVO_API_BASE_URL"),
    ],
)
def test_a_bad_plivo_setting_stops_start_up_naming_it(env, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(env, env_file=None)


# --- the line, in memory -----------------------------------------------------------------------------------

CALLER = np.arange(320, dtype="<i2").tobytes()  # 20 ms at 16 kHz


async def test_the_plivo_line_reads_the_stream_and_sends_play_checkpoint_and_clear():
    sender = pp.PlivoSender("s-1")
    query = {"call": "c-1", "token": "t.o.k", "from": "15550001111", "to": "14155550123"}
    ws = FakeSocket(
        [
            sender.start("c-1", "MA1"),
            sender.media(CALLER, 0),
            json.dumps({"event": "media", "streamId": "other", "media": {"payload": ""}}),
            sender.dtmf("#", 20),
            sender.played("m-2"),
        ],
        query,
    )
    control = FakeControl()
    line = PlivoLine(ws, control, "https://voice.example.com")  # type: ignore[arg-type]
    started = await line.receive()
    assert started == Started(
        "c-1",
        "s-1",
        "MA1",
        caller="+15550001111",
        called="+14155550123",
        parameters={"token": "t.o.k", "from": "15550001111", "to": "14155550123"},
        carrier="plivo",
    )
    assert await line.receive() == CallerAudio(CALLER)
    assert await line.receive() == Keypress("#")  # the other stream's media was skipped
    await line.play(CALLER)
    await line.mark("m-1")
    await line.mark("m-2")
    play, first, second = (json.loads(m) for m in ws.sent)
    assert base64.b64decode(play["media"]["payload"]) == CALLER and play["media"]["sampleRate"] == 16000
    assert (first, second["name"]) == ({"event": "checkpoint", "streamId": "s-1", "name": "m-1"}, "m-2")
    assert [await line.receive(), await line.receive()] == [Played("m-1"), Played("m-2")]
    assert await line.receive() == Ended("closed") and line.bad_messages == 1
    assert await line.transfer("+15550003333")
    await line.close()  # transferred: not hung up
    assert control.calls == [
        ("transfer", "c-1", "https://voice.example.com/plivo/transfer?to=%2B15550003333")
    ]


async def test_a_plivo_stream_that_is_not_l16_at_16k_is_not_taken_and_a_refusal_is_not_hung_up():
    narrow = json.loads(pp.PlivoSender("s-1").start("c-1", "MA1", rate=8000))
    ws = FakeSocket([json.dumps(narrow)], {"call": "c-1"})
    control = FakeControl()
    line = PlivoLine(ws, control)  # type: ignore[arg-type]
    assert await line.receive() == Ended("closed") and line.bad_messages == 1
    await line.close("no stream token")
    assert control.calls == [] and ws.closed == (1008, "no stream token")


# --- the API, against its stand-in -------------------------------------------------------------------------


@pytest.mark.e2e  # real sockets on loopback
async def test_plivo_hang_up_and_transfer_and_plivo_fetches_the_transfer_xml_signed():
    async with fake_plivo_api(PLIVO_ID, "plivo-token") as (url, api):
        control = PlivoControl(PLIVO_ID, "plivo-token", base_url=url)
        try:
            assert await control.hang_up("call-1")
            assert not await control.hang_up("call-1")
            assert await control.transfer("call-2", url + "/nowhere")  # the XML fetch fails: Plivo's problem
            wrong = PlivoControl(PLIVO_ID, "not-the-token", base_url=url)
            with pytest.raises(PlivoApiError, match="401"):
                await wrong.hang_up("call-3")
            await wrong.close()
        finally:
            await control.close()
        assert api.hangups == ["call-1"]
        await asyncio.wait_for(api.transfers[0].done.wait(), 5)
        assert api.transfers[0].status == 404


# --- the entry points, over real sockets ------------------------------------------------------------------

PLIVO_ID, PLIVO_TOKEN = "MAXXXXXXXXXXXXXXXXXX", "plivo-auth-token-for-tests"
PUBLIC = "https://voice.example.com"


async def test_plivo_answers_only_what_plivo_signed_and_the_upgrade_needs_the_calls_token():
    env = {"PLIVO_AUTH_ID": PLIVO_ID, "PLIVO_AUTH_TOKEN": PLIVO_TOKEN, "PUBLIC_URL": PUBLIC}
    async with (
        LivePeer() as peer,
        running_gateway(settings_for(peer.url, AGENT_GREETING="none", **env)) as url,
    ):
        form = {"CallUUID": "c-1", "From": "15550001111", "To": "14155550123"}
        signed = signing.signed_headers(PLIVO_TOKEN, "POST", PUBLIC + "/plivo/answer", form)
        async with httpx.AsyncClient() as client:
            ok = await client.post(url + "/plivo/answer", data=form, headers=signed)
            assert ok.status_code == 200
            (stream,) = ET.fromstring(ok.text)
            stream_url = stream.text or ""
            query = {k: v[0] for k, v in parse_qs(urlsplit(stream_url).query).items()}
            assert stream_url.startswith("wss://voice.example.com/plivo/media?") and query["call"] == "c-1"
            local = signing.signed_headers(
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
        assert await refused_upgrade(media, {}) == 403  # no call, no token
        assert await refused_upgrade(f"{media}?call=c-2&token={query['token']}", {}) == 403  # another call's
        bad_signature = {signing.NONCE_HEADER: "n", signing.SIGNATURE_HEADER: "forged"}
        assert await refused_upgrade(f"{media}?{local_query}", bad_signature) == 403
        # the URL our answer gave, signed as Plivo signs it: accepted, and the call starts
        upgrade = signing.signed_headers(PLIVO_TOKEN, "GET", stream_url)
        async with connect(f"{media}?{local_query}", additional_headers=upgrade) as ws:
            sender = pp.PlivoSender("s-1")
            await ws.send(sender.start("c-1", PLIVO_ID))
            await ws.close()
        assert len(peer.sessions) == 1  # the answered call's pre-warmed session


async def test_in_production_vonage_and_plivo_without_their_secrets_are_refused_not_open():
    env = {"TWILIO_AUTH_TOKEN": "twilio-token", "PUBLIC_URL": PUBLIC}
    async with running_gateway(settings_for("ws://127.0.0.1:9/x", **env)) as url:
        async with httpx.AsyncClient() as client:
            assert (await client.get(url + "/vonage/answer", params={"uuid": "u-1"})).status_code == 403
            assert (await client.post(url + "/plivo/answer", data={"CallUUID": "c-1"})).status_code == 403
        assert await refused_upgrade(url.replace("http", "ws") + "/vonage/media", {}) == 403
