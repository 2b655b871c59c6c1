"""The local Live backend's pure parts, without sockets: protocol parsing, VAD state machine, agent rules."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.local_live import protocol as p
from gateway.local_live.agent import HistoryTurn, LocalAgent
from gateway.local_live.protocol import VadSettings
from gateway.local_live.vad import Segmenter, VadParams

CAPS = p.MODELS[p.DEFAULT_MODEL]


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
@pytest.mark.parametrize("strip_padding", [False, True])
def test_base64_in_all_four_spellings(encode, strip_padding):
    data = bytes(range(250, 256)) + b"\xfb\xff\xbe"
    text = encode(data).decode()
    if strip_padding:
        text = text.rstrip("=")
    assert p.decode_b64(text, "x") == data


def test_snake_and_camel_case_parse_alike():
    camel = {
        "model": "gemini-2.5-flash-native-audio-latest",
        "generationConfig": {"speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}}},
        "realtimeInputConfig": {"automaticActivityDetection": {"silenceDurationMs": 300}},
        "proactivity": {"proactiveAudio": True},
    }
    snake = {
        "model": "models/gemini-2.5-flash-native-audio-latest",
        "generation_config": {
            "speech_config": {"voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}}}
        },
        "realtime_input_config": {"automatic_activity_detection": {"silence_duration_ms": "300"}},
        "proactivity": {"proactive_audio": True},
    }
    a, b = p.parse_setup(camel, "v1alpha"), p.parse_setup(snake, "v1alpha")
    assert a == b
    assert a.voice_name == "Kore" and a.vad.silence_duration_ms == 300 and a.proactive_audio


def test_free_form_values_keep_their_keys():
    msg = {"tool_response": {"function_responses": [{"id": "1", "name": "f", "response": {"snake_key": 1}}]}}
    (event,) = p.parse_client_message(json.dumps(msg), CAPS)
    assert event.responses[0].response == {"snake_key": 1}


def test_unknown_field_reason_names_field_and_path():
    with pytest.raises(p.ProtocolError) as info:
        p.parse_setup(
            {"model": p.DEFAULT_MODEL, "generation_config": {"enable_affective_dialog": True}}, "v1beta"
        )
    assert info.value.code == 1007
    assert info.value.reason.startswith(
        'Invalid JSON payload received. Unknown name "enable_affective_dialog"'
    )
    assert len(info.value.reason.encode()) <= 123


def test_realtime_input_events_and_rates():
    pcm = b"\x01\x00" * 80
    msg = {
        "realtimeInput": {
            "audio": {"data": base64.b64encode(pcm).decode(), "mimeType": "audio/pcm;rate=8000"}
        }
    }
    (event,) = p.parse_client_message(json.dumps(msg), CAPS)
    assert event == p.AudioIn(pcm, 8000)
    assert p.parse_client_message('{"realtime_input": {"activity_start": {}}}', CAPS) == [p.ActivityStart()]
    assert p.parse_client_message('{"realtimeInput": {"audioStreamEnd": true}}', CAPS) == [p.AudioStreamEnd()]


def test_server_messages():
    assert p.go_away(5.0) == {"goAway": {"timeLeft": "5s"}}
    assert p.duration(2.5) == "2.5s"
    assert p.resumption_update(None) == {"sessionResumptionUpdate": {}}
    usage = p.usage(50, 13, 100, 0)
    assert usage["totalTokenCount"] == 163
    assert usage["promptTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": 13},
        {"modality": "AUDIO", "tokenCount": 50},
    ]
    assert json.loads(p.encode(p.audio_chunk(b"\x00\x01"))) == {
        "serverContent": {
            "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AAE="}}]}
        }
    }


def test_segmenter_honours_sensitivity_and_silence():
    high = Segmenter(VadParams.from_settings(VadSettings(silence_duration_ms=100)))
    low = Segmenter(VadParams.from_settings(VadSettings(start_sensitivity="START_SENSITIVITY_LOW")))
    probs = [0.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1]
    high_events = [(i, e) for i, x in enumerate(probs) if (e := high.push(x))]
    low_events = [(i, e) for i, x in enumerate(probs) if (e := low.push(x))]
    assert high_events == [(2, "start"), (11, "end")]  # 64 ms to start, 4 frames (128 ms) of silence
    assert low_events == [(7, "start")]  # 200 ms of speech needed, and 1 s of silence to end


def test_agent_rules():
    agent = LocalAgent(can_end_call=True, proactive=False)
    assert agent.respond("", []).text == "Sorry, I didn't catch that."
    assert LocalAgent(proactive=True).respond("  ", []) is None
    bye = agent.respond("okay goodbye", [])
    assert bye.end_call and "Goodbye" in bye.text
    assert "It is" in agent.respond("what time is it", []).text
    history = [
        HistoryTurn("user", "my name is john"),
        HistoryTurn("model", "I heard you say: my name is john."),
    ]
    assert "my name is john" in agent.respond("what did I say before", history).text
    assert "Hello" in agent.respond("Greet the caller", [], source="content").text
    assert "local offline test agent" in agent.respond("book a flight to Paris", [], source="content").text


def test_agent_rules_for_keypresses_transfers_and_named_tools():
    transfer = {"properties": {"target": {"type": "STRING", "enum": ["+15005550009"]}}}
    agent = LocalAgent(can_end_call=True, tools={"transfer_call": transfer, "order_status": None})
    assert agent.respond("[The caller pressed the # key on their phone keypad.]", []).text == "You pressed #."
    moved = agent.respond("transfer me to an operator please", [], source="content")
    assert (moved.tool, moved.args) == ("transfer_call", {"target": "+15005550009"})
    lookup = agent.respond("check the order status", [], source="content")
    assert lookup.tool == "order_status" and lookup.args == {"request": "check the order status"}
    assert "shipped" in agent.after_tool("order_status", {"status": "shipped"})
    assert "failed: timed out" in agent.after_tool("order_status", {"error": "timed out"})
    # without the tool declared, the words are only words
    assert LocalAgent().respond("transfer me", []).tool == ""
