import base64
import json

import pytest

from gateway.twilio import protocol as tp


def test_parse_start_reads_everything_twilio_sends():
    sender = tp.TwilioSender("MZ" + "a" * 32)
    event = tp.parse(sender.start("CA1", "AC1", {"From": "+15551234567"}))
    assert isinstance(event, tp.Start)
    assert event.stream_sid == "MZ" + "a" * 32
    assert (event.call_sid, event.account_sid) == ("CA1", "AC1")
    assert event.custom_parameters == {"From": "+15551234567"}
    assert (event.encoding, event.sample_rate, event.channels) == ("audio/x-mulaw", 8000, 1)


def test_parse_media_decodes_payload_and_string_counters():
    sender = tp.TwilioSender("MZ1")
    sender.start("CA1", "AC1", {})
    event = tp.parse(sender.media(b"\x01\x02\xff", timestamp_ms=40))
    assert event == tp.Media("MZ1", b"\x01\x02\xff", "inbound", 1, 40)
    assert json.loads(sender.media(b"", 60))["sequenceNumber"] == "3"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"event":"connected","protocol":"Call","version":"1.0.0"}', tp.Connected),
        ('{"event":"mark","streamSid":"MZ1","mark":{"name":"turn-1"}}', tp.Mark),
        ('{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"5"}}', tp.Dtmf),
        ('{"event":"stop","streamSid":"MZ1","stop":{"callSid":"CA1"}}', tp.Stop),
        ('{"event":"clear","streamSid":"MZ1"}', tp.Clear),
    ],
)
def test_parse_other_events(text, kind):
    assert isinstance(tp.parse(text), kind)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("not json", "malformed JSON"),
        ("[1,2]", "not an object"),
        ('{"event":"nope"}', "unknown event"),
        ('{"event":"media","streamSid":"MZ1","media":{"payload":"!!!"}}', "base64"),
        ('{"event":"media","streamSid":"MZ1","media":"x"}', "not an object"),
        ('{"event":"media","streamSid":"MZ1","media":{"payload":"AA==","timestamp":"x"}}', "integer"),
        ('{"event":"media","streamSid":"M\\"Z","media":{"payload":"AA=="}}', "plain id"),
        ('{"event":"start","start":{}}', "streamSid"),
        (b"\x00\x01", "binary"),
    ],
)
def test_bad_input_raises_protocol_error(data, error):
    with pytest.raises(tp.ProtocolError, match=error):
        tp.parse(data)


def test_outbound_messages_are_what_twilio_expects():
    media = json.loads(tp.media_message("MZ1", b"\xff\x7f"))
    assert media == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(b"\xff\x7f").decode()},
    }
    assert json.loads(tp.mark_message("MZ1", "turn-1")) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "turn-1"},
    }
    assert json.loads(tp.clear_message("MZ1")) == {"event": "clear", "streamSid": "MZ1"}
    # The app's own messages parse back (the simulator reads them with the same core).
    assert tp.parse(tp.media_message("MZ1", b"ab")) == tp.Media("MZ1", b"ab")


def test_json_nested_deeper_than_the_stdlib_reads_is_skipped_not_a_crash() -> None:
    """orjson reads any depth; such a value would exhaust the stack wherever it is printed. The standard
    library decides for it, as before: a malformed message."""
    deep = "[" * 3000 + "]" * 3000
    start = tp.TwilioSender("MZ" + "1" * 32).start("CA" + "2" * 32, "AC" + "3" * 32, {"From": "x"})
    with pytest.raises(tp.ProtocolError, match="malformed JSON"):
        tp.parse(start.replace('"x"', deep))
