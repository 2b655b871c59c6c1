"""The browser softphone's protocol core (gateway.browser.protocol): pure, tested without sockets."""

from __future__ import annotations

import json

import pytest

from gateway.audio import pcm16_to_ulaw
from gateway.browser import protocol as bp
from gateway.call.line import LineAudio


def test_the_page_messages_parse_into_typed_values():
    start = '{"type":"start","agent":"support","quality":"wideband"}'
    assert bp.parse(start) == bp.Start("support", bp.WIDEBAND)
    assert bp.parse('{"type":"start"}') == bp.Start("", bp.PHONE)  # the default agent, as a phone hears it
    assert bp.parse('{"type":"mark","name":"turn-3"}') == bp.Mark("turn-3")
    assert bp.parse('{"type":"dtmf","digit":"#"}') == bp.Dtmf("#")
    assert bp.parse('{"type":"hangup"}') == bp.Hangup()
    assert bp.parse('{"type":"ping","id":7}') == bp.Ping(7)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("nope", "malformed JSON"),
        ("[1]", "message is not an object"),
        ('{"type":"start","quality":"hifi"}', "quality must be one of phone, wideband"),
        ('{"type":"start","agent":"<script>"}', "agent must be"),
        ('{"type":"start","agent":7}', "agent must be a string"),
        ('{"type":"mark"}', "a mark needs a name"),
        ('{"type":"dtmf","digit":"55"}', "digit must be"),
        ('{"type":"dtmf","digit":"x"}', "digit must be"),
        ('{"type":"ping","id":true}', "non-negative integer"),
        ('{"type":"ping","id":-1}', "non-negative integer"),
        ('{"type":"media"}', "unknown message type 'media'"),
        ('{"type":"mark","name":"' + "x" * 3000 + '"}', "control message of"),
    ],
)
def test_a_bad_message_says_what_is_wrong(text, error):
    with pytest.raises(bp.ProtocolError, match=error):
        bp.parse(text)


def test_the_two_qualities_are_the_phone_line_and_live_s_own_rates():
    assert bp.PHONE.audio == LineAudio(8000, 8000, mulaw=True) and bp.PHONE.encoding == "mulaw"
    assert bp.WIDEBAND.audio == LineAudio(16000, 24000) and bp.WIDEBAND.encoding == "pcm16"
    pcm = b"".join(int(v).to_bytes(2, "little", signed=True) for v in range(-8000, 8000, 50))
    # Phone: the page's mu-law is the gateway's codec, both ways (what a Twilio caller hears).
    assert bp.PHONE.encode(pcm) == pcm16_to_ulaw(pcm)
    assert bp.PHONE.decode(bp.PHONE.encode(pcm)) == bp.PHONE.decode(pcm16_to_ulaw(pcm))
    assert len(bp.PHONE.decode(bytes(160))) == 320
    # Wideband: PCM16 as it is.
    assert bp.WIDEBAND.encode(pcm) == pcm and bp.WIDEBAND.decode(pcm) == pcm


def test_audio_frames_are_bounded_and_whole():
    assert len(bp.PHONE.decode(bytes(1600))) == 3200  # 200 ms: the most a frame may carry
    with pytest.raises(bp.ProtocolError, match="frames are 20 ms"):
        bp.PHONE.decode(bytes(1601))
    with pytest.raises(bp.ProtocolError, match="frames are 20 ms"):
        bp.WIDEBAND.decode(bytes(6402))
    with pytest.raises(bp.ProtocolError, match="odd number of bytes"):
        bp.WIDEBAND.decode(bytes(641))


def test_what_the_gateway_sends_is_json_the_page_reads():
    started = json.loads(bp.started_message("BR1", "support", bp.WIDEBAND))
    assert started == {
        "type": "started", "call_sid": "BR1", "agent": "support", "quality": "wideband",
        "in_rate": 16000, "out_rate": 24000, "encoding": "pcm16",
    }  # fmt: skip
    assert json.loads(bp.mark_message("turn-1")) == {"type": "mark", "name": "turn-1"}
    assert json.loads(bp.clear_message()) == {"type": "clear"}
    assert json.loads(bp.pong_message(3)) == {"type": "pong", "id": 3}
    assert json.loads(bp.transcript_message("agent", 'He said "hi"')) == {
        "type": "transcript", "role": "agent", "text": 'He said "hi"'
    }  # fmt: skip
    assert json.loads(bp.response_message(0.6234)) == {"type": "response", "latency_ms": 623}
    assert json.loads(bp.transfer_message("+15550009999")) == {"type": "transfer", "target": "+15550009999"}
    assert json.loads(bp.ended_message("agent_hung_up")) == {"type": "ended", "outcome": "agent_hung_up"}
