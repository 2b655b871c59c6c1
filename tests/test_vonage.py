"""Vonage's pure parts: the WebSocket protocol, whole frames, marks across a clear, signed JWTs both ways,
the NCCO and the settings."""

from __future__ import annotations

import json

import jwt
import pytest

from gateway.call.line_marks import PendingMarks
from gateway.config import ConfigError, load_settings
from gateway.vonage import protocol as vp
from gateway.vonage import signing
from gateway.vonage.answer import connect_ncco, e164
from gateway.vonage.rest import transfer_ncco
from tests.support.keys import rsa_private_pem

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
        marks.sent(name)
    assert marks.played("b") == ["a", "b"]  # playout is in order: a notify for b means a played too
    assert marks.played("a") == []  # already released
    assert marks.cleared() == ["c"]
    assert marks.played("c") == []  # the carrier's late answer for a flushed mark is ignored
    marks.sent("d")
    assert marks.played("zzz") == [] and len(marks) == 1


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
