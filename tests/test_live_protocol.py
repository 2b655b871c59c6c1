import base64
import json
from types import SimpleNamespace

import orjson
import pytest

from gateway import wire
from gateway.live import protocol as lp


def setup_of(**kwargs):
    return lp.build_setup(lp.LiveConfig(**kwargs))["setup"]


def test_native_audio_setup_has_proactivity_and_affective_dialog_in_their_places():
    setup = setup_of(instructions="Be kind.", voice="Puck", language="de-DE")
    assert setup["model"] == "models/" + lp.DEFAULT_MODEL
    gen = setup["generationConfig"]
    assert gen["responseModalities"] == ["AUDIO"]
    assert gen["enableAffectiveDialog"] is True  # inside generationConfig
    assert setup["proactivity"] == {"proactiveAudio": True}  # top level of setup
    assert "enableAffectiveDialog" not in setup and "proactivity" not in gen
    assert gen["speechConfig"] == {
        "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}},
        "languageCode": "de-DE",
    }
    assert setup["systemInstruction"] == {"parts": [{"text": "Be kind."}]}
    assert setup["inputAudioTranscription"] == {} and setup["outputAudioTranscription"] == {}
    vad = setup["realtimeInputConfig"]["automaticActivityDetection"]
    assert vad["disabled"] is False and vad["silenceDurationMs"] == 500
    assert vad["startOfSpeechSensitivity"] == "START_SENSITIVITY_HIGH"
    assert setup["contextWindowCompression"]["slidingWindow"]["targetTokens"] == 12800


@pytest.mark.parametrize("model", ["gemini-live-2.5-flash-preview", "gemini-3.1-flash-live-preview"])
def test_models_without_the_features_never_get_the_fields(model):
    setup = setup_of(model=model)
    assert "proactivity" not in setup
    assert "enableAffectiveDialog" not in setup["generationConfig"]


def test_always_proactive_model_gets_no_proactivity_field_and_cannot_turn_it_off():
    assert "proactivity" not in setup_of(model="gemini-3.8-live")
    with pytest.raises(lp.LiveConfigError, match="always"):
        lp.LiveConfig(model="gemini-3.8-live", proactive_audio=False, affective_dialog=False).validate()


def test_unknown_model_gets_configured_fields():
    caps = lp.model_capabilities("some-future-model")
    assert not caps.known
    setup = setup_of(model="some-future-model")
    assert setup["proactivity"] == {"proactiveAudio": True}


def test_turning_features_off_removes_the_fields():
    setup = setup_of(proactive_audio=False, affective_dialog=False)
    assert "proactivity" not in setup and "enableAffectiveDialog" not in setup["generationConfig"]


def test_resumption_handle_goes_into_setup():
    assert lp.build_setup(lp.LiveConfig(), "h1")["setup"]["sessionResumption"] == {"handle": "h1"}


def test_language_checks_say_what_would_work():
    with pytest.raises(lp.LiveConfigError, match="not offered with native-audio"):
        lp.LiveConfig(language="en-GB").validate()
    with pytest.raises(lp.LiveConfigError, match="en-US"):
        lp.LiveConfig(language="xx-XX").validate()
    half_cascade = lp.LiveConfig(
        model="gemini-live-2.5-flash-preview", language="en-GB", proactive_audio=False, affective_dialog=False
    )
    half_cascade.validate()


def test_audio_message_is_valid_json_with_the_rate():
    msg = json.loads(lp.audio_message(b"\x01\x00\x02\x00", 16000))
    audio = msg["realtimeInput"]["audio"]
    assert audio["mimeType"] == "audio/pcm;rate=16000"
    assert base64.b64decode(audio["data"]) == b"\x01\x00\x02\x00"


def test_client_messages():
    assert json.loads(lp.client_turn_message("hi")) == {
        "clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}], "turnComplete": True}
    }
    assert json.loads(lp.text_input_message("5")) == {"realtimeInput": {"text": "5"}}
    assert json.loads(lp.tool_response_message([{"id": "1", "name": "x", "response": {}}]))["toolResponse"]


def test_parse_audio_transcripts_and_turn_in_order():
    pcm = b"\x10\x00" * 10
    msg = {
        "serverContent": {
            "modelTurn": {
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": "audio/pcm;rate=24000",
                            "data": base64.b64encode(pcm).decode(),
                        }
                    }
                ]
            },
            "outputTranscription": {"text": "Hello"},
            "turnComplete": True,
        },
        "usageMetadata": {
            "promptTokenCount": 3,
            "responseTokenCount": 4,
            "totalTokenCount": 7,
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 4}],
        },
    }
    events = lp.parse_server_message(json.dumps(msg).encode())  # binary frame
    assert events == [
        lp.AgentAudio(pcm, 24000),
        lp.OutputTranscript("Hello"),
        lp.TurnComplete(),
        lp.Usage(3, 4, 7, {"response_audio": 4}),
    ]


def test_parse_accepts_snake_case_and_urlsafe_base64():
    pcm = bytes([0xFB, 0xFF, 0xFE, 0x00])
    data = base64.urlsafe_b64encode(pcm).decode().rstrip("=")
    msg = {
        "server_content": {
            "model_turn": {"parts": [{"inline_data": {"mime_type": "audio/pcm;rate=24000", "data": data}}]}
        }
    }
    assert lp.parse_server_message(json.dumps(msg)) == [lp.AgentAudio(pcm, 24000)]


def test_interrupted_comes_before_turn_complete():
    events = lp.parse_server_message('{"serverContent":{"interrupted":true,"turnComplete":true}}')
    assert events == [lp.Interrupted(), lp.TurnComplete()]


def test_parse_control_messages():
    assert lp.parse_server_message('{"setupComplete":{}}') == [lp.SetupComplete()]
    assert lp.parse_server_message('{"goAway":{"timeLeft":"50s"}}') == [lp.GoAway(50.0)]
    assert lp.parse_server_message('{"sessionResumptionUpdate":{"newHandle":"h","resumable":true}}') == [
        lp.ResumptionUpdate("h", True)
    ]
    calls = lp.parse_server_message('{"toolCall":{"functionCalls":[{"id":"1","name":"end_call","args":{}}]}}')
    assert calls == [lp.ToolCall((lp.FunctionCall("1", "end_call", {}),))]
    assert lp.parse_server_message('{"toolCallCancellation":{"ids":["1"]}}') == [
        lp.ToolCallCancellation(("1",))
    ]
    # Vertex spells the response count differently
    assert lp.parse_server_message('{"usageMetadata":{"candidatesTokenCount":9}}') == [lp.Usage(0, 9, 0, {})]


@pytest.mark.parametrize(
    "data",
    [
        "nope",
        "[]",
        '{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm","data":"***"}}]}}}',
        '{"goAway":{"timeLeft":"soon"}}',
    ],
)
def test_bad_server_messages_raise(data):
    with pytest.raises(lp.LiveProtocolError):
        lp.parse_server_message(data)


def test_durations():
    assert lp.parse_duration("1.5s") == 1.5
    assert lp.parse_duration({"seconds": 2, "nanos": 500_000_000}) == 2.5


def test_binary_frames_are_read_alike_by_orjson_and_by_the_standard_library(monkeypatch):
    """Live's messages come in binary frames: bytes take orjson's path as text does; what orjson refuses
    (UTF-16, which `json` detects) or nests too deep still goes to `json`, which has the last word."""
    message = {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": "AAA=", "mimeType": "a"}}]}}}
    text = json.dumps(message)
    read: list[object] = []

    def spy(data):
        read.append(type(data))
        return orjson.loads(data)

    monkeypatch.setattr(wire, "orjson", SimpleNamespace(loads=spy, JSONDecodeError=orjson.JSONDecodeError))
    assert lp.parse_server_message(text.encode()) == lp.parse_server_message(text)
    assert read == [bytes, str]
    assert lp.parse_server_message(text.encode("utf-16")) == lp.parse_server_message(text)
    deep = b'{"x": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    with pytest.raises(lp.LiveProtocolError, match="malformed JSON"):
        lp.parse_server_message(deep)
