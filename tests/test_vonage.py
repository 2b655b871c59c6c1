"""Vonage: its WebSocket protocol, whole frames, marks across a clear, signed JWTs both ways, the NCCO, the
settings, the line in memory, the Voice API against its stand-in, and every entry point refused unless
Vonage signed it (before any Live session)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import numpy as np
import pytest
from websockets.asyncio.client import connect

from gateway.call import line_marks
from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, Played, Started
from gateway.call.line_marks import GRACE_S, PendingMarks
from gateway.config import ConfigError, load_settings
from gateway.devtools.vonage_api import fake_vonage_api
from gateway.server import running_gateway
from gateway.vonage import protocol as vp
from gateway.vonage import signing
from gateway.vonage.answer import connect_ncco, e164
from gateway.vonage.line import VonageLine
from gateway.vonage.rest import VonageControl, transfer_ncco
from gateway.vonage.signing import ApplicationJwt, load_private_key
from tests.support.gateway import settings_for
from tests.support.keys import rsa_private_pem
from tests.support.line_doubles import FakeControl, FakeSocket, closed, refused_upgrade
from tests.support.live_peer import LivePeer

SECRET = "signature-secret-for-tests-of-32-bytes"
NOW = 1_800_000_000.0
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"

# --- the WebSocket protocol ---------------------------------------------------------------------------------


def test_connected_carries_the_rate_and_our_ncco_headers():
    event = vp.parse(vp.connected_message({"uuid": "u-1", "from": "15550001111", "token": "t.o.k"}))
    assert event == vp.Connected(16000, {"uuid": "u-1", "from": "15550001111", "token": "t.o.k"})
    assert vp.parse(vp.connected_message({}, "audio/l16;rate=8000")) == vp.Connected(8000, {})


def test_binary_frames_are_audio_and_text_events_are_keys_notifies_and_clears():
    assert vp.parse(b"\x01\x00" * 320) == vp.Audio(b"\x01\x00" * 320)
    assert vp.parse(vp.dtmf_message("#", 300)) == vp.Dtmf("#", 300)
    assert vp.parse(vp.notified_message({"mark": "turn-3"})) == vp.Notified("turn-3")
    assert vp.parse(vp.cleared_message()) == vp.Cleared()


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"\x01\x02\x03", "in pairs"),
        ('{"event":"websocket:connected","content-type":"audio/x-mulaw"}', "not L16"),
        ('{"event":"websocket:dtmf","digit":"55"}', "not a key"),
        ('{"event":"websocket:notify","payload":{"other":"x"}}', "our mark"),
        ('{"event":"websocket:notify","payload":"turn-1"}', "our mark"),
        ('{"event":"websocket:hangup"}', "unknown event"),
        ("[1, 2]", "not an object"),
        ("{", "malformed"),
    ],
)
def test_what_is_not_vonage_is_a_protocol_error(message, error):
    with pytest.raises(vp.ProtocolError, match=error):
        vp.parse(message)


def test_we_send_notify_with_our_mark_and_a_bare_clear():
    assert json.loads(vp.notify_message("turn-1")) == {"action": "notify", "payload": {"mark": "turn-1"}}
    assert json.loads(vp.clear_message()) == {"action": "clear"}
    assert vp.parse_command(vp.notify_message("m")) == vp.Command("notify", {"mark": "m"})


def test_the_framer_sends_whole_20ms_frames_and_pads_a_turns_last_one():
    framer = vp.Framer()
    assert framer.frames(b"\x01" * 600) == []  # less than a frame waits for more
    frames = framer.frames(b"\x02" * 1000)  # 1600 bytes in all: two frames, 320 left
    assert [len(f) for f in frames] == [640, 640]
    assert frames[0] == b"\x01" * 600 + b"\x02" * 40
    last = framer.flush()
    assert last == b"\x02" * 320 + bytes(320)
    assert framer.flush() is None
    framer.frames(b"\x03" * 10)
    framer.drop()  # a clear drops the partial frame: it must not play after the clear
    assert framer.flush() is None


def test_marks_come_back_once_whether_or_not_the_carrier_answers_flushed_ones():
    marks = PendingMarks()
    for name in ("a", "b", "c"):
        marks.sent(name, now=0.0)
    assert marks.played("b") == ["a", "b"]  # playout is in order: a notify for b means a played too
    assert marks.played("a") == []  # already released
    assert marks.cleared(now=0.0) == ["c"]
    assert marks.played("c") == []  # the carrier's late answer for a flushed mark is ignored
    marks.sent("d", now=0.0)
    assert marks.played("zzz") == [] and len(marks) == 1


def test_a_mark_the_carrier_never_answers_is_released_after_its_audio_has_played_and_a_grace():
    marks = PendingMarks()
    marks.queued(2.0, now=10.0)  # two seconds of audio sent at t=10: played by t=12
    marks.queued(1.0, now=10.5)  # one more, sent before the first has played: by t=13
    marks.sent("goodbye", now=10.5)
    assert marks.next_due() == 13.0 + GRACE_S
    assert marks.overdue(now=13.9) == []
    assert marks.overdue(now=14.0) == ["goodbye"] and marks.next_due() is None
    marks.queued(1.0, now=20.0)  # after a pause the clock starts again from now
    marks.sent("next", now=20.0)
    assert marks.cleared(now=20.2) == ["next"]  # a clear: nothing queued any more
    marks.sent("after-clear", now=20.2)
    assert marks.next_due() == 20.2 + GRACE_S


# --- signed webhooks and stream upgrades --------------------------------------------------------------------


def test_a_webhook_vonage_signed_is_accepted_with_its_claims():
    body = b'{"uuid":"u-1","to":"447700900000"}'
    token = signing.sign(SECRET, NOW, body, api_key="abcd1234", application_id=APP_ID)
    claims = signing.verify(f"Bearer {token}", SECRET, NOW + 2, body, api_key="abcd1234")
    assert claims["application_id"] == APP_ID and claims["iss"] == "Vonage"
    # a GET webhook (no body) and the stream upgrade carry no payload_hash
    assert signing.verify(f"Bearer {signing.sign(SECRET, NOW)}", SECRET, NOW)["iss"] == "Vonage"


@pytest.mark.parametrize(
    ("authorization", "body", "why"),
    [
        (None, b"", "no Authorization"),
        ("Basic abc", b"", "no Authorization"),
        (f"Bearer {signing.sign('another-secret-that-is-32-bytes-long', NOW)}", b"", "bad signature"),
        (f"Bearer {signing.sign(SECRET, NOW, b'{}')}", b'{"to":"1"}', "payload_hash"),
        (f"Bearer {signing.sign(SECRET, NOW)}", b'{"to":"1"}', "without a payload_hash"),
        (f"Bearer {signing.sign(SECRET, NOW - 600)}", b"", "s ago"),
        (f"Bearer {signing.sign(SECRET, NOW + 600)}", b"", "s ago"),
        (f"Bearer {signing.sign(SECRET, NOW, api_key='other')}", b"", "another account"),
        (
            f"Bearer {jwt.encode({'iat': NOW, 'iss': 'Mallory'}, SECRET, algorithm='HS256')}",
            b"",
            "not issued",
        ),
        (f"Bearer {jwt.encode({'iat': NOW}, None, algorithm='none')}", b"", "not a valid JWT"),
        ("Bearer not-a-jwt", b"", "not a valid JWT"),
    ],
)
def test_unsigned_missigned_stale_or_tampered_requests_are_refused(authorization, body, why):
    with pytest.raises(signing.SignatureError, match=why):
        signing.verify(authorization, SECRET, NOW, body, api_key="abcd1234")


def test_application_jwts_are_rs256_for_our_application_and_short_lived():
    pem = signing.load_private_key(rsa_private_pem())
    token = signing.ApplicationJwt(APP_ID, pem).mint(NOW)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    from cryptography.hazmat.primitives import serialization

    public = (
        serialization.load_pem_private_key(pem.encode(), None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    claims = signing.verify_application_jwt(token, public, APP_ID, NOW + 60)
    assert claims["exp"] - claims["iat"] == signing.APPLICATION_JWT_S and claims["jti"]
    with pytest.raises(signing.SignatureError, match="expired"):
        signing.verify_application_jwt(token, public, APP_ID, NOW + 3600)
    with pytest.raises(signing.SignatureError, match="another application"):
        signing.verify_application_jwt(token, public, "x" + APP_ID[1:], NOW)


def test_the_private_key_is_read_as_pem_text_escaped_pem_or_a_path(tmp_path):
    pem = rsa_private_pem()
    path = tmp_path / "private.key"
    path.write_text(pem)
    assert signing.load_private_key(str(path)) == signing.load_private_key(pem)
    assert signing.load_private_key(pem.replace("\n", "\\n")) == signing.load_private_key(pem)
    with pytest.raises(signing.PrivateKeyError, match="readable file"):
        signing.load_private_key(str(tmp_path / "missing.key"))
    with pytest.raises(signing.PrivateKeyError, match="PEM private key"):
        signing.load_private_key("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----")


# --- the NCCO -----------------------------------------------------------------------------------------------


def test_the_ncco_connects_the_call_to_our_socket_in_wideband_with_signed_upgrades():
    (action,) = connect_ncco("wss://voice.example.com/vonage/media", {"token": "t"}, "447700900000", True)
    assert action["action"] == "connect" and action["from"] == "447700900000"
    (endpoint,) = action["endpoint"]
    assert endpoint == {
        "type": "websocket",
        "uri": "wss://voice.example.com/vonage/media",
        "content-type": "audio/l16;rate=16000",
        "headers": {"token": "t"},
        "authorization": {"type": "vonage"},
    }
    (unsigned,) = connect_ncco("ws://127.0.0.1:8080/vonage/media", {}, "alice", False)
    assert unsigned["randomFromNumber"] is True and "authorization" not in unsigned["endpoint"][0]


def test_a_transfer_dials_the_target_from_the_number_called():
    (action,) = transfer_ncco("+15550003333", "447700900000")
    assert action["endpoint"] == [{"type": "phone", "number": "15550003333"}]
    assert action["from"] == "447700900000"
    assert e164("447700900000") == "+447700900000" and e164("alice") == "alice"


# --- settings -----------------------------------------------------------------------------------------------


def test_vonage_settings_read_the_key_once_and_never_show_secrets(tmp_path):
    key = tmp_path / "private.key"
    key.write_text(rsa_private_pem())
    env = {
        "VONAGE_APPLICATION_ID": APP_ID,
        "VONAGE_PRIVATE_KEY": str(key),
        "VONAGE_SIGNATURE_SECRET": "sig-secret-value",
        "VONAGE_API_KEY": "abcd1234",
        "VONAGE_API_SECRET": "api-secret-value",
    }
    settings = load_settings(env, env_file=None)
    assert settings.vonage.can_control and "BEGIN PRIVATE KEY" in (settings.vonage.private_key or "")
    shown = repr(settings)
    assert "sig-secret-value" not in shown and "api-secret-value" not in shown and "PRIVATE" not in shown


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"VONAGE_APPLICATION_ID": APP_ID}, "VONAGE_PRIVATE_KEY is not set"),
        ({"VONAGE_PRIVATE_KEY": "/nowhere/private.key"}, "VONAGE_APPLICATION_ID is not set"),
        ({"VONAGE_APPLICATION_ID": "my-app", "VONAGE_PRIVATE_KEY": "x"}, "VONAGE_APPLICATION_ID="),
        (
            {"VONAGE_APPLICATION_ID": APP_ID, "VONAGE_PRIVATE_KEY": "/nowhere/private.key"},
            "VONAGE_PRIVATE_KEY:",
        ),
        ({"VONAGE_API_KEY": "abcd1234"}, "VONAGE_API_SECRET is not set"),
        ({"VONAGE_API_BASE_URL": "api.nexmo.com"}, "VONAGE_API_BASE_URL"),
    ],
)
def test_a_bad_vonage_setting_stops_start_up_naming_it(env, named):
    with pytest.raises(ConfigError, match=named) as refused:
        load_settings(env, env_file=None)
    assert "\n" not in str(refused.value)


# --- the line, in memory -----------------------------------------------------------------------------------

CALLER = np.arange(320, dtype="<i2").tobytes()  # 20 ms at 16 kHz


async def test_the_vonage_line_reads_the_stream_and_plays_whole_frames_with_notify_marks():
    headers = {"uuid": "u-1", "from": "15550001111", "to": "447700900000", "token": "t.o.k"}
    ws = FakeSocket(
        [
            vp.connected_message(headers),
            CALLER,
            b"\x01\x02\x03",  # half a sample: skipped
            vp.dtmf_message("9"),
            vp.connected_message(headers),  # a second one: skipped
        ]
    )
    control = FakeControl()
    line = VonageLine(ws, control)  # type: ignore[arg-type]
    started = await line.receive()
    assert started == Started(
        "u-1", caller="+15550001111", called="+447700900000", parameters=headers, carrier="vonage"
    )
    assert line.audio == LineAudio(16000, 16000)  # no narrowband resampler either way
    assert await line.receive() == CallerAudio(CALLER)
    assert await line.receive() == Keypress("9")
    assert await line.receive() == Ended("closed") and line.bad_messages == 2

    agent = np.arange(800, dtype="<i2").tobytes()  # 50 ms: two frames and 10 ms over
    await line.play(agent)
    await line.mark("turn-1")  # the 10 ms remainder goes out first, padded
    frames, notify = ws.sent[:3], ws.sent[3]
    assert frames == [agent[:640], agent[640:1280], agent[1280:] + bytes(320)]
    assert json.loads(notify) == {"action": "notify", "payload": {"mark": "turn-1"}}

    await line.close()  # the caller already left: no hang-up through the API
    assert control.calls == [] and ws.closed == (1000, "")


async def test_vonage_marks_come_back_on_notify_and_at_once_on_a_clear():
    ws = FakeSocket([vp.connected_message({"uuid": "u-1"})])
    control = FakeControl()
    line = VonageLine(ws, control)  # type: ignore[arg-type]
    await line.receive()
    for name in ("a", "b", "c"):
        await line.mark(name)
    ws.incoming += [
        vp.notified_message({"mark": "b"}),
        vp.cleared_message(),
        vp.notified_message({"mark": "c"}),
    ]
    assert [await line.receive(), await line.receive()] == [Played("a"), Played("b")]
    await line.play(bytes(100))
    await line.clear()  # c was in the buffer: released by the clear, its late notify ignored
    assert json.loads(ws.sent[-1]) == {"action": "clear"}
    assert await line.receive() == Played("c")
    ws.incoming.append(vp.dtmf_message("1"))
    assert await line.receive() == Keypress("1")  # the cleared and late notify were skipped quietly
    await line.mark("d")
    assert ws.sent[-1] == vp.notify_message("d")  # the 100 bytes before the clear were dropped, not padded
    await line.close()  # our side ends the call: hung up through the Voice API
    assert control.calls == [("hang_up", "u-1")]


async def test_a_notify_vonage_never_answers_comes_back_once_its_audio_has_played(capsys, monkeypatch):
    monkeypatch.setattr(line_marks, "GRACE_S", 0.2)
    ws = FakeSocket([vp.connected_message({"uuid": "u-1"})])
    ws.hold = True  # then nothing more arrives: the socket stays open, silent
    line = VonageLine(ws)  # type: ignore[arg-type]
    await line.receive()
    await line.play(bytes(640 * 5))  # 100 ms of the agent
    await line.mark("turn-1")
    began = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(line.receive(), 5) == Played("turn-1")
    waited = asyncio.get_running_loop().time() - began
    assert waited >= 0.1 + 0.2 - 0.02  # not before the audio could have played, plus the grace
    assert "vonage_mark_not_answered" in capsys.readouterr().err


async def test_a_transferred_vonage_call_is_not_hung_up_after_the_transfer():
    ws = FakeSocket([vp.connected_message({"uuid": "u-1", "to": "447700900000"})])
    control = FakeControl()
    line = VonageLine(ws, control)  # type: ignore[arg-type]
    await line.receive()
    assert await line.transfer("+15550003333")
    await line.close()
    assert control.calls == [("transfer", "u-1", "+15550003333", "+447700900000")]


# --- the Voice API, against its stand-in -------------------------------------------------------------------


@pytest.mark.e2e  # real sockets on loopback
async def test_vonage_hang_up_and_transfer_carry_a_valid_application_jwt():
    pem = load_private_key(rsa_private_pem())
    async with fake_vonage_api(APP_ID, pem) as (url, api):
        control = VonageControl(ApplicationJwt(APP_ID, pem), base_url=url)
        try:
            assert await control.transfer("call-1", "+15550003333", "447700900000")
            assert await control.hang_up("call-2")
            assert not await control.hang_up("call-2")  # over already: not an error
        finally:
            await control.close()
        (transfer, destination), (hang_up, body) = api.updates
        assert (transfer, hang_up, body) == ("call-1", "call-2", {"action": "hangup"})
        ncco = destination["destination"]["ncco"]
        assert ncco[0]["endpoint"] == [{"type": "phone", "number": "15550003333"}]
        # a key that is not the application's is refused as Vonage refuses it
        other = VonageControl(ApplicationJwt(APP_ID, load_private_key(_another_key())), base_url=url)
        try:
            with pytest.raises(RuntimeError, match="401"):
                await other.hang_up("call-3")
        finally:
            await other.close()
        assert api.refused and "call-3" not in api.ended


def _another_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# --- the entry points, over real sockets ------------------------------------------------------------------

PUBLIC = "https://voice.example.com"


def _bearer(body: bytes = b"") -> dict[str, str]:
    return {"Authorization": f"Bearer {signing.sign(SECRET, time.time(), body)}"}


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
                {"Authorization": f"Bearer {signing.sign('x' * 40, time.time(), body)}"},
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
        assert await refused_upgrade(media, {}) == 403
        assert await refused_upgrade(media, {"Authorization": "Bearer nonsense"}) == 403
        # a signed upgrade whose connected message carries another call's token: closed, no Live session
        async with connect(media, additional_headers=_bearer()) as ws:
            await ws.send(vp.connected_message({"uuid": "u-other", "token": token}))
            assert await closed(ws) == 1008
        assert len(peer.sessions) == 2  # the two answered calls' pre-warmed sessions, nothing more
