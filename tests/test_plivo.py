"""Plivo's pure parts: the audio-stream protocol, V3 signatures, the XML answers and the settings."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest

from gateway.config import ConfigError, load_settings
from gateway.plivo import protocol as pp
from gateway.plivo import signing
from gateway.plivo.answer import dial_xml, redirect_xml, stream_xml
from gateway.plivo.rest import transfer_url

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
