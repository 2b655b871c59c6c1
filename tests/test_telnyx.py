"""Telnyx: its media protocol core, its Ed25519 webhook signatures, the TeXML answer, the wideband line, and
every entry point refused unsigned or without a stream token (no Live session is involved: the Live URL
answers nobody)."""

from __future__ import annotations

import base64
import json
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import numpy as np
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import connect

from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, Played, Started
from gateway.server import running_gateway
from gateway.telnyx import protocol as tp
from gateway.telnyx.auth import TOLERANCE_S, WebhookVerifier, public_key_of, sign
from gateway.telnyx.line import TelnyxLine
from gateway.telnyx.rest import TelnyxControl, TelnyxError, dial_texml
from tests.support.gateway import settings_for

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = public_key_of(KEY)
NOW = 1_800_000_000


# --- the protocol core ------------------------------------------------------------------------------------


def test_telnyx_events_parse_into_typed_values():
    sender = tp.TelnyxSender("32DE0DEA-53CB")
    assert tp.parse(sender.connected()) == tp.Connected("1.0.0")
    start = tp.parse(sender.start("v3:abc", "+15550001111", "+15550002222"))
    assert start == tp.Start("32DE0DEA-53CB", "v3:abc", "+15550001111", "+15550002222", "L16", 16000, 1)
    media = tp.parse(sender.media(b"\x01\x02\x03\x04", 20))
    assert isinstance(media, tp.Media) and media.payload == b"\x01\x02\x03\x04" and media.track == "inbound"
    assert tp.parse(sender.dtmf("#")) == tp.Dtmf("32DE0DEA-53CB", "#")
    assert tp.parse(sender.mark("turn-1")) == tp.Mark("32DE0DEA-53CB", "turn-1")
    assert tp.parse(sender.stop("v3:abc")) == tp.Stop("32DE0DEA-53CB")
    error = {"event": "error", "stream_id": "s1", "payload": {"code": 100002, "title": "Unknown error"}}
    assert tp.parse(json.dumps(error)) == tp.Error("s1", 100002, "Unknown error")
    # a narrowband stream is read as such (the line then resamples as for Twilio)
    pcmu = tp.parse(sender.start("v3:abc", "", "", encoding="PCMU", rate=8000))
    assert isinstance(pcmu, tp.Start) and (pcmu.encoding, pcmu.sample_rate) == ("PCMU", 8000)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"\x00binary", "binary frame"),
        ("{not json", "malformed JSON"),
        ('{"event": "media", "media": {"payload": "***"}}', "not valid base64"),
        ('{"event": "dtmf", "dtmf": {"digit": "x"}}', "not a key"),
        (
            '{"event": "start", "start": {"call_control_id": "v3:a", "media_format": {"encoding": "OPUS"}}}',
            "OPUS",
        ),
        (
            '{"event": "start", "start": {"call_control_id": "v3:a", '
            '"media_format": {"encoding": "PCMU", "sample_rate": 16000}}}',
            "not carried",
        ),
        ('{"event": "start", "start": {"call_control_id": "a\\"b"}}', "not a plain id"),
        ('{"event": "media", "stream_id": "a\\"b", "media": {"payload": ""}}', "not a plain id"),
        ('{"event": "surprise"}', "unknown event"),
    ],
)
def test_what_cannot_be_read_is_a_protocol_error(message: str | bytes, error: str):
    with pytest.raises(tp.ProtocolError, match=error):
        tp.parse(message)


def test_l16_is_big_endian_on_the_wire_and_little_endian_on_the_seam():
    pcm = np.array([1, -2, 0x1234], "<i2").tobytes()
    wire = tp.pcm16_to_l16(pcm)
    assert wire == np.array([1, -2, 0x1234], ">i2").tobytes() == b"\x00\x01\xff\xfe\x12\x34"
    assert tp.l16_to_pcm16(wire) == pcm
    assert tp.l16_to_pcm16(wire + b"\x07") == pcm  # an odd trailing byte is dropped


def test_what_the_gateway_sends_is_telnyx_json():
    media = json.loads(tp.media_message(b"\x00\x01"))
    assert media == {"event": "media", "media": {"payload": base64.b64encode(b"\x00\x01").decode()}}
    assert json.loads(tp.mark_message('a "name"')) == {"event": "mark", "mark": {"name": 'a "name"'}}
    assert json.loads(tp.clear_message()) == {"event": "clear"}


def test_a_transfer_dials_the_target_in_texml():
    assert ET.fromstring(dial_texml("+15550009999")).findtext("Dial") == "+15550009999"


# --- Ed25519 webhook signatures ---------------------------------------------------------------------------


def test_a_webhook_signed_with_the_account_key_is_accepted_and_nothing_else_is():
    verifier = WebhookVerifier(PUBLIC)
    body = b"CallSid=v3%3Aabc&From=%2B15550001111"
    headers = sign(KEY, body, NOW)
    signature, timestamp = headers["telnyx-signature-ed25519"], headers["telnyx-timestamp"]
    assert verifier.refusal(body, signature, timestamp, NOW + 10) is None
    assert verifier.refusal(body + b"&To=1", signature, timestamp, NOW) == "the signature does not match"
    assert verifier.refusal(body, signature, str(NOW + 1), NOW) == "the signature does not match"
    other = sign(Ed25519PrivateKey.generate(), body, NOW)["telnyx-signature-ed25519"]
    assert verifier.refusal(body, other, timestamp, NOW) == "the signature does not match"
    assert "no telnyx-signature-ed25519" in (verifier.refusal(body, None, timestamp, NOW) or "")
    assert "no telnyx-signature-ed25519" in (verifier.refusal(body, signature, None, NOW) or "")
    assert verifier.refusal(body, "not base64!", timestamp, NOW) == "the signature is not base64"
    assert verifier.refusal(body, signature, "12e3", NOW) == "the timestamp is not Unix seconds"
    # the replay window: a captured webhook is good for TOLERANCE_S either way of our clock, then never
    assert verifier.refusal(body, signature, timestamp, NOW + TOLERANCE_S) is None
    assert "more than" in (verifier.refusal(body, signature, timestamp, NOW + TOLERANCE_S + 1) or "")
    assert "more than" in (verifier.refusal(body, signature, timestamp, NOW - TOLERANCE_S - 1) or "")


# --- the line: wideband audio, 20 ms chunks, marks after everything queued --------------------------------


class FakeSocket:
    """A Starlette WebSocket as the line uses it: what it was sent, and messages to receive."""

    def __init__(self, query: dict[str, str], incoming: list[str]) -> None:
        self.query_params = query
        self.incoming = incoming
        self.sent: list[dict[str, Any]] = []
        self.scope: dict[str, Any] = {}  # served by no MediaSocket: plain ASGI

    async def receive(self) -> dict[str, Any]:
        if not self.incoming:
            return {"type": "websocket.disconnect"}
        return {"type": "websocket.receive", "text": self.incoming.pop(0)}

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))


async def test_the_line_carries_l16_at_16_khz_both_ways_in_whole_20_ms_frames():
    sender = tp.TelnyxSender("s1")
    caller = np.arange(320, dtype="<i2").tobytes()  # 20 ms at 16 kHz
    query = {"call": "v3:abc", "token": "t", "account": "acc", "to": "+15550002222"}
    ws = FakeSocket(
        query,
        [
            sender.connected(),
            sender.start("v3:abc", "+15550001111", ""),
            sender.media(tp.pcm16_to_l16(caller), 0),
            sender.dtmf("5"),
            sender.mark("m1"),
            json.dumps({"event": "media", "stream_id": "other", "media": {"payload": ""}}),
            sender.stop("v3:abc"),
        ],
    )
    line = TelnyxLine(ws)  # type: ignore[arg-type]
    started = await line.receive()
    assert isinstance(started, Started)
    assert (started.call_sid, started.account_sid, started.caller, started.called) == (
        "v3:abc",
        "acc",
        "+15550001111",
        "+15550002222",  # the start had no `to`: the webhook's, from the stream URL
    )
    assert started.parameters["token"] == "t" and started.carrier == "telnyx"
    assert line.audio == LineAudio(16000, 16000)
    assert await line.receive() == CallerAudio(caller)
    assert await line.receive() == Keypress("5")
    assert await line.receive() == Played("m1")
    assert await line.receive() == Ended("stop")  # the other stream's media was skipped on the way
    assert line.bad_messages == 1

    agent = np.arange(800, dtype="<i2").tobytes()  # 50 ms: two whole frames and 10 ms over
    await line.play(agent)
    (first,) = ws.sent
    assert tp.l16_to_pcm16(base64.b64decode(first["media"]["payload"])) == agent[:1280]
    await line.mark("turn-1")  # the 10 ms remainder goes out first, padded to a whole frame
    padded, mark = ws.sent[1:]
    assert tp.l16_to_pcm16(base64.b64decode(padded["media"]["payload"])) == agent[1280:] + bytes(320)
    assert mark == {"event": "mark", "mark": {"name": "turn-1"}}
    await line.play(agent[:100])
    await line.clear()  # a clear drops the remainder with everything queued
    assert ws.sent[-1] == {"event": "clear"}
    await line.mark("turn-2")
    assert ws.sent[-1] == {"event": "mark", "mark": {"name": "turn-2"}}


async def test_a_narrowband_telnyx_stream_is_carried_at_8_khz():
    sender = tp.TelnyxSender("s1")
    ws = FakeSocket({"call": "v3:abc"}, [sender.start("v3:abc", "", "", encoding="PCMU", rate=8000)])
    line = TelnyxLine(ws)  # type: ignore[arg-type]
    assert isinstance(await line.receive(), Started)
    assert line.audio == LineAudio(8000, 8000)
    await line.play(bytes(320))
    assert base64.b64decode(ws.sent[0]["media"]["payload"]) == b"\xff" * 160  # mu-law silence


# --- the TeXML REST API -----------------------------------------------------------------------------------


async def test_transfer_and_hang_up_update_the_call_through_texml_rest():
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path.endswith("/gone"):
            return httpx.Response(404, json={"errors": [{"code": "20404", "title": "Call not found"}]})
        if request.url.path.endswith("/bad"):
            return httpx.Response(422, json={"errors": [{"code": "10015", "title": "Bad"}]})
        return httpx.Response(200, json={"sid": "v3:abc"})

    control = TelnyxControl("KEY-secret", base_url="https://api.example/v2")
    control._http._transport = httpx.MockTransport(handler)
    assert await control.transfer("acc", "v3:abc", "+15550009999")
    assert await control.hang_up("acc", "v3:abc")
    assert not await control.hang_up("acc", "gone")  # already ended: not a failure
    transfer, hang_up, _ = requests
    assert transfer.url.path == "/v2/texml/Accounts/acc/Calls/v3:abc"
    assert transfer.headers["authorization"] == "Bearer KEY-secret"
    form = parse_qs(transfer.content.decode())
    assert ET.fromstring(form["Texml"][0]).findtext("Dial") == "+15550009999"
    assert parse_qs(hang_up.content.decode()) == {"Status": ["completed"]}
    control._http._transport = httpx.MockTransport(lambda r: httpx.Response(401, json={"errors": []}))
    with pytest.raises(TelnyxError, match="401"):
        await control.transfer("acc", "v3:abc", "+15550009999")
    await control.close()


# --- the entry points, over real sockets ------------------------------------------------------------------


def signed(body: bytes, at: int | None = None) -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded", **sign(KEY, body, at or int(time.time()))}


async def test_unsigned_mis_signed_and_stale_webhooks_and_streams_without_a_token_are_refused():
    public = "https://voice.example.com"
    settings = settings_for("ws://127.0.0.1:9/x", TELNYX_PUBLIC_KEY=PUBLIC, PUBLIC_URL=public)
    form = {"CallSid": "v3:call-1", "AccountSid": "acc-1", "From": "+15550001111", "To": "+15550002222"}
    body = urlencode(form).encode()
    async with running_gateway(settings) as url, httpx.AsyncClient() as client:
        voice = url + "/telnyx/voice"
        plain = {"Content-Type": "application/x-www-form-urlencoded"}
        assert (await client.post(voice, content=body, headers=plain)).status_code == 403
        tampered = body.replace(b"%2B1555000", b"%2B1666000")
        assert (await client.post(voice, content=tampered, headers=signed(body))).status_code == 403
        stale = signed(body, int(time.time()) - TOLERANCE_S - 60)
        assert (await client.post(voice, content=body, headers=stale)).status_code == 403
        # Twilio's route is closed too: once a carrier's signatures are checked, unsigned is never open
        assert (await client.post(url + "/twilio/voice", data=form)).status_code == 403

        ok = await client.post(voice, content=body, headers=signed(body))
        assert ok.status_code == 200
        stream = ET.fromstring(ok.text).find("./Connect/Stream")
        assert stream is not None
        assert (stream.get("codec"), stream.get("bidirectionalCodec")) == ("L16", "L16")
        assert (stream.get("bidirectionalMode"), stream.get("bidirectionalSamplingRate")) == ("rtp", "16000")
        assert ET.fromstring(ok.text)[1].tag == "Hangup"
        stream_url = urlsplit(stream.get("url", ""))
        assert (stream_url.scheme, stream_url.netloc, stream_url.path) == (
            "wss",
            "voice.example.com",
            "/telnyx/media",
        )
        query = {k: v[0] for k, v in parse_qs(stream_url.query).items()}
        assert query["call"] == "v3:call-1" and query["to"] == "+15550002222" and query["token"]
        # asked again while the stream is on its way: the same answer (Telnyx retries), not a new token
        again = await client.post(voice, content=body, headers=signed(body))
        assert again.text == ok.text

        media = url.replace("http", "ws") + "/telnyx/media"
        for bad in (
            {},
            {"call": "v3:call-1"},
            {"call": "v3:call-2", "token": query["token"]},
            {"call": "v3:call-1", "token": query["token"][:-2] + "xx"},
        ):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with connect(f"{media}?{urlencode(bad)}"):
                    pass
            assert refused.value.response.status_code == 403  # refused before the upgrade is accepted
        async with connect(f"{media}?{stream_url.query}") as ws:
            assert ws.protocol.state.name == "OPEN"


async def test_without_the_public_key_a_development_gateway_answers_unsigned_telnyx_webhooks():
    async with running_gateway(settings_for("ws://127.0.0.1:9/x")) as url, httpx.AsyncClient() as client:
        answer = await client.post(url + "/telnyx/voice", data={"CallSid": "v3:dev", "To": "+1555"})
        assert answer.status_code == 200 and "<Stream" in answer.text
        assert (await client.post(url + "/telnyx/voice", data={"To": "+1555"})).status_code == 400


# --- the simulator's Telnyx dialect -----------------------------------------------------------------------


def test_the_dialect_signs_its_webhook_and_reads_the_rate_from_the_texml():
    from gateway.devtools.dialects import DialectError
    from gateway.devtools.dialects.telnyx import TelnyxDialect, new_key_pair

    private, public = new_key_pair()
    dialect = TelnyxDialect(private)
    request = dialect.webhook(
        "http://gw/telnyx/voice", "https://pub/telnyx/voice", {"CallSid": "v3:x", "To": "1"}
    )
    assert request.content is not None and b"CallSid=v3%3Ax" in request.content
    verifier = WebhookVerifier(public)
    headers = request.headers
    now = int(headers["telnyx-timestamp"])
    assert verifier.refusal(request.content, headers["telnyx-signature-ed25519"], str(now), now) is None
    assert dialect.upgrade_headers("wss://pub/telnyx/media") == {}  # Telnyx does not sign its upgrade

    def texml(**attributes: str) -> str:
        attrs = " ".join(f'{k}="{v}"' for k, v in attributes.items())
        stream = f'<Stream url="wss://pub/telnyx/media?call=v3%3Ax" {attrs}/>'
        return f"<Response><Connect>{stream}</Connect></Response>"

    answered = dialect.answered(texml(bidirectionalMode="rtp", bidirectionalCodec="L16",
                                      bidirectionalSamplingRate="16000"), "https://pub/")  # fmt: skip
    assert answered.stream_url == "wss://pub/telnyx/media?call=v3%3Ax" and dialect.rate == 16000
    dialect.answered(texml(bidirectionalMode="rtp", bidirectionalCodec="PCMU"), "https://pub/")
    assert (dialect.encoding, dialect.rate) == ("PCMU", 8000)
    with pytest.raises(DialectError, match="rtp"):  # the caller would hear nothing
        dialect.answered(texml(), "https://pub/")
    with pytest.raises(DialectError, match="G722"):
        dialect.answered(texml(bidirectionalMode="rtp", bidirectionalCodec="G722"), "https://pub/")
