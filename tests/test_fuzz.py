"""Property-based fuzzing of every parser that reads what a peer sends: whatever arrives, a parser either
returns typed events or raises its own protocol error. Anything else would end a call (or a session of the
local backend) on hostile input instead of skipping the message."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.browser import protocol as bp
from gateway.live import protocol as lp
from gateway.local_live import protocol as local
from gateway.twilio import protocol as tp

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
b64ish = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_%", max_size=24)


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Real message shapes with any field replaced by anything: the inputs that reach deepest."""

    def replace_at(path: list[str], value: Any) -> dict[str, Any]:
        msg = json.loads(json.dumps(base))
        node = msg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return msg

    paths: list[list[str]] = []

    def walk(node: Any, prefix: list[str]) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                paths.append([*prefix, key])
                walk(child, [*prefix, key])

    walk(base, [])
    return st.builds(replace_at, st.sampled_from(paths), json_values | b64ish)


TWILIO_SHAPES = [
    {"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "chunk": "2", "timestamp": "5",
                                                      "payload": "/w=="}},
    {"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "callSid": "CA1",
     "accountSid": "AC1", "tracks": ["inbound"], "customParameters": {"token": "x"},
     "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}},
    {"event": "mark", "streamSid": "MZ1", "mark": {"name": "turn-1"}},
    {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": "1"}},
    {"event": "stop", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}},
]  # fmt: skip

LIVE_SHAPES = [
    {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                                               "data": "AAAA"}}]}}},
    {"serverContent": {"inputTranscription": {"text": "hi"}, "outputTranscription": {"text": "yo"},
                       "interrupted": True, "turnComplete": True, "generationComplete": True}},
    {"toolCall": {"functionCalls": [{"id": "1", "name": "end_call", "args": {}}]}},
    {"toolCallCancellation": {"ids": ["1"]}},
    {"goAway": {"timeLeft": "50s"}},
    {"sessionResumptionUpdate": {"newHandle": "h", "resumable": True}},
    {"usageMetadata": {"promptTokenCount": 1, "responseTokenCount": 2, "totalTokenCount": 3,
                       "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 2}]}},
]  # fmt: skip

CLIENT_SHAPES = [
    {"realtimeInput": {"audio": {"data": "AAAA", "mimeType": "audio/pcm;rate=16000"}}},
    {"realtime_input": {"activity_start": {}}},
    {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}], "turnComplete": True}},
    {"toolResponse": {"functionResponses": [{"id": "1", "name": "end_call", "response": {"ok": True}}]}},
]


def _any_message(shapes: list[dict[str, Any]]) -> st.SearchStrategy[str | bytes]:
    return st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        json_values.map(json.dumps),
        st.one_of(*(_mutations(shape) for shape in shapes)).map(json.dumps),
    )


@FUZZ
@given(_any_message(TWILIO_SHAPES))
def test_twilio_parser_returns_an_event_or_a_protocol_error(message: str | bytes) -> None:
    try:
        event = tp.parse(message)
    except tp.ProtocolError as exc:
        assert len(str(exc)) < 200  # errors quote the peer briefly, so junk cannot flood the logs
        return
    assert isinstance(event, tp.Connected | tp.Start | tp.Media | tp.Dtmf | tp.Mark | tp.Clear | tp.Stop)


@FUZZ
@given(_any_message(LIVE_SHAPES))
def test_live_parser_returns_events_or_a_protocol_error(message: str | bytes) -> None:
    try:
        events = lp.parse_server_message(message)
    except lp.LiveProtocolError:
        return
    assert isinstance(events, list)


@FUZZ
@given(_any_message(CLIENT_SHAPES))
def test_local_backend_parser_returns_events_or_a_close_reason(message: str | bytes) -> None:
    caps = local.lookup_model("gemini-2.5-flash-native-audio-preview-12-2025", "v1alpha")
    try:
        events = local.parse_client_message(message, caps)
    except local.ProtocolError as exc:
        assert exc.code in {1007, 1008, 1009} and exc.reason
        return
    assert isinstance(events, list)


BROWSER_SHAPES = [
    {"type": "start", "agent": "support", "quality": "phone"},
    {"type": "mark", "name": "turn-1"},
    {"type": "dtmf", "digit": "5"},
    {"type": "hangup"},
    {"type": "ping", "id": 3},
]


@FUZZ
@given(st.sampled_from(BROWSER_SHAPES).flatmap(_mutations) | json_values)
def test_browser_parser_returns_events_or_its_protocol_error(message: Any) -> None:
    try:
        event = bp.parse(json.dumps(message))
    except bp.ProtocolError:
        return
    assert isinstance(event, bp.Start | bp.Mark | bp.Dtmf | bp.Hangup | bp.Ping)


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_browser_parser_takes_any_text(text: str) -> None:
    try:
        bp.parse(text)
    except bp.ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=8000), st.sampled_from(["phone", "wideband"]))
def test_browser_audio_frames_decode_or_raise_the_protocol_error(data: bytes, quality: str) -> None:
    try:
        pcm = bp.QUALITIES[quality].decode(data)
    except bp.ProtocolError:
        return
    assert len(pcm) % 2 == 0


TELNYX_SHAPES = [
    {"event": "media", "sequence_number": "4", "stream_id": "32de0dea-53cb", "media": {"track": "inbound",
     "chunk": "2", "timestamp": "5", "payload": "AAAAAA=="}},
    {"event": "start", "sequence_number": "1", "stream_id": "32de0dea-53cb", "start": {"user_id": "u1",
     "call_control_id": "v3:abc", "client_state": None, "from": "+1555", "to": "+1666",
     "media_format": {"encoding": "L16", "sample_rate": 16000, "channels": 1}}},
    {"event": "mark", "stream_id": "32de0dea-53cb", "mark": {"name": "turn-1"}},
    {"event": "dtmf", "stream_id": "32de0dea-53cb", "dtmf": {"digit": "1"}},
    {"event": "error", "stream_id": "32de0dea-53cb", "payload": {"code": 100002, "title": "bad"}},
    {"event": "stop", "stream_id": "32de0dea-53cb", "stop": {"call_control_id": "v3:abc"}},
]  # fmt: skip


@FUZZ
@given(_any_message(TELNYX_SHAPES))
def test_telnyx_parser_returns_an_event_or_a_protocol_error(message: str | bytes) -> None:
    from gateway.telnyx import protocol as telnyx

    try:
        event = telnyx.parse(message)
    except telnyx.ProtocolError as exc:
        assert len(str(exc)) < 200  # errors quote the peer briefly, so junk cannot flood the logs
        return
    assert isinstance(event, telnyx.TelnyxEvent)


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
@given(_any_message(VONAGE_SHAPES) | st.binary(max_size=2000))  # binary frames are its audio
def test_vonage_parser_returns_an_event_or_a_protocol_error(message: str | bytes) -> None:
    from gateway.vonage import protocol as vp

    try:
        event = vp.parse(message)
    except vp.ProtocolError as exc:
        assert len(str(exc)) < 200
        return
    assert isinstance(event, vp.Connected | vp.Audio | vp.Dtmf | vp.Notified | vp.Cleared)


@FUZZ
@given(_any_message(PLIVO_SHAPES))
def test_plivo_parser_returns_an_event_or_a_protocol_error(message: str | bytes) -> None:
    from gateway.plivo import protocol as pp

    try:
        event = pp.parse(message)
    except pp.ProtocolError as exc:
        assert len(str(exc)) < 200
        return
    assert isinstance(event, pp.Start | pp.Media | pp.Dtmf | pp.PlayedStream | pp.ClearedAudio | pp.Stop)
