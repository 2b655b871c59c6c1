"""Vonage's and Plivo's stream parsers fuzzed as tests/test_fuzz.py fuzzes Twilio's: whatever arrives, a
parser returns a typed event or raises its own protocol error with a short message."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.plivo import protocol as pp
from gateway.vonage import protocol as vp
from tests.test_fuzz import FUZZ, _any_message

VONAGE_SHAPES = [
    {"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "uuid": "u-1", "token": "t"},
    {"event": "websocket:dtmf", "digit": "5", "duration": 260},
    {"event": "websocket:notify", "payload": {"mark": "turn-1"}},
    {"event": "websocket:cleared"},
]

PLIVO_SHAPES = [
    {"event": "start", "sequenceNumber": 1, "start": {"callId": "c-1", "streamId": "s-1", "accountId": "MA1",
     "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000}},
     "extra_headers": "token=abc;from=1555"},
    {"event": "media", "sequenceNumber": 2, "streamId": "s-1", "media": {"track": "inbound",
     "timestamp": "1705312200000", "chunk": 1, "payload": "AAAA"}},
    {"event": "dtmf", "sequenceNumber": 3, "streamId": "s-1", "dtmf": {"track": "inbound", "digit": "1",
     "timestamp": "1"}},
    {"event": "playedStream", "sequenceNumber": 4, "streamId": "s-1", "name": "turn-1"},
    {"event": "clearedAudio", "sequenceNumber": 5, "streamId": "s-1"},
]  # fmt: skip


@FUZZ
@given(_any_message(VONAGE_SHAPES) | st.binary(max_size=2000))
def test_vonage_parser_returns_an_event_or_a_protocol_error(message: str | bytes) -> None:
    try:
        event = vp.parse(message)
    except vp.ProtocolError as exc:
        assert len(str(exc)) < 200
        return
    assert isinstance(event, vp.Connected | vp.Audio | vp.Dtmf | vp.Notified | vp.Cleared)


@FUZZ
@given(_any_message(PLIVO_SHAPES))
def test_plivo_parser_returns_an_event_or_a_protocol_error(message: str | bytes) -> None:
    try:
        event = pp.parse(message)
    except pp.ProtocolError as exc:
        assert len(str(exc)) < 200
        return
    assert isinstance(event, pp.Start | pp.Media | pp.Dtmf | pp.PlayedStream | pp.ClearedAudio | pp.Stop)
