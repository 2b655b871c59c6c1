"""Conformance: for each model family on both platforms, the gateway's `setup` is what Google's own SDK
(google-genai) sends for the equivalent `LiveConnectConfig`: the SDK's first frame is captured on a loopback
TLS server (it insists on wss:// when it holds a key) and compared field by field, key casing normalised (the
SDK mixes camelCase with snake_case inside nested configs; the server's protobuf JSON takes both).

The path and the authentication header the SDK dials are compared too: the Developer API's key header, and on
Vertex AI the LlmBidiService path with a bearer token and the project's model path.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve

from gateway.agents import builtin_declaration
from gateway.live import protocol as lp
from tests.support.tls import loopback_tls

genai = pytest.importorskip("google.genai")
from google.genai import types  # noqa: E402
from google.oauth2.credentials import Credentials  # noqa: E402

PROJECT, LOCATION = "phone-line-1", "us-central1"
INSTRUCTIONS = "You answer the phone for a bakery."
LOOKUP = {
    "name": "lookup_order",
    "description": "Find an order by its number",
    "parameters": {"type": "OBJECT", "properties": {"number": {"type": "STRING"}}, "required": ["number"]},
}


@dataclass
class Capture:
    """What one connect sent: the path, the headers, the first message."""

    frames: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)

    async def handler(self, ws: ServerConnection) -> None:
        first = json.loads(await ws.recv())
        assert ws.request is not None
        self.frames.append((ws.request.path, dict(ws.request.headers), first))
        await ws.send(json.dumps({"setupComplete": {}}))
        await ws.wait_closed()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return loopback_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def capture(tls):
    cap = Capture()
    async with serve(cap.handler, "127.0.0.1", 0, ssl=tls[0]) as server:
        cap.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        yield cap


def _camel(key: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)


def normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(k): normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def sdk_client(platform: str, port: int, client_tls) -> Any:
    http = {"base_url": f"https://127.0.0.1:{port}", "async_client_args": {"ssl": client_tls}}
    if platform == "vertex":
        return genai.Client(
            vertexai=True,
            project=PROJECT,
            location=LOCATION,
            credentials=Credentials(token="ya29.test-token"),
            http_options={**http, "api_version": lp.VERTEX_API_VERSION},
        )
    return genai.Client(api_key="test-key", http_options={**http, "api_version": "v1alpha"})


async def sdk_first_frame(platform: str, model: str, config: types.LiveConnectConfig, capture, tls):
    client = sdk_client(platform, capture.port, tls[1])
    async with client.aio.live.connect(model=model, config=config):
        pass
    return capture.frames[-1]


def gateway_config(platform: str, model: str, **kwargs: Any) -> lp.LiveConfig:
    caps = lp.model_capabilities(model, platform)  # type: ignore[arg-type]
    config = lp.LiveConfig(
        model=model,
        voice="Puck",
        language="en-US",
        instructions=INSTRUCTIONS,
        proactive_audio=caps.proactive_audio != "no",
        affective_dialog=caps.affective_dialog or caps.affective_always,
        platform=platform,  # type: ignore[arg-type]
        project=PROJECT if platform == "vertex" else "",
        location=LOCATION if platform == "vertex" else "",
        transparent_resumption=platform == "vertex",
        **kwargs,
    )
    config.validate()
    return config


def sdk_config(config: lp.LiveConfig, **kwargs: Any) -> types.LiveConnectConfig:
    """The LiveConnectConfig an SDK user would write for the same agent, by the model's documented rules."""
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        speech_config=types.SpeechConfig(
            voice_config=types.VoiceConfig(
                prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=config.voice)
            ),
            language_code=config.language,
        ),
        system_instruction=types.Content(parts=[types.Part(text=config.instructions)]),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(
                disabled=False,
                start_of_speech_sensitivity=types.StartSensitivity.START_SENSITIVITY_HIGH,
                end_of_speech_sensitivity=types.EndSensitivity.END_SENSITIVITY_LOW,
                prefix_padding_ms=20,
                silence_duration_ms=500,
            ),
            activity_handling=types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS,
        ),
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        session_resumption=types.SessionResumptionConfig(
            transparent=True if config.platform == "vertex" else None
        ),
        context_window_compression=types.ContextWindowCompressionConfig(
            trigger_tokens=25600, sliding_window=types.SlidingWindow(target_tokens=12800)
        ),
        **kwargs,
    )


def declarations(*behaviors: str | None) -> list[types.FunctionDeclaration]:
    """end_call and lookup_order, with these `behavior`s (None: the field is not sent)."""
    decls = [builtin_declaration("end_call"), LOOKUP]
    return [
        types.FunctionDeclaration(**{k: v for k, v in d.items()}, behavior=b)  # type: ignore[arg-type]
        for d, b in zip(decls, behaviors, strict=True)
    ]


PROACTIVE = types.ProactivityConfig(proactive_audio=True)

# (platform, model, gateway LiveConfig extras, SDK LiveConnectConfig extras): one per family and platform.
CASES = [
    pytest.param(
        "developer",
        "gemini-2.5-flash-native-audio-preview-12-2025",
        {
            "thinking_budget": 512,
            "tools": (builtin_declaration("end_call"), {**LOOKUP, "behavior": "NON_BLOCKING"}),
        },
        {
            "enable_affective_dialog": True,
            "proactivity": PROACTIVE,
            "thinking_config": types.ThinkingConfig(thinking_budget=512),
            "tools": [types.Tool(function_declarations=declarations("BLOCKING", "NON_BLOCKING"))],
        },
        id="developer-2.5-native-audio",
    ),
    pytest.param(
        "developer",
        "gemini-2.5-flash-exp-native-audio-thinking-dialog",
        {"thinking_budget": -1},
        {
            "enable_affective_dialog": True,
            "proactivity": PROACTIVE,
            "thinking_config": types.ThinkingConfig(thinking_budget=-1),
        },
        id="developer-2.5-native-audio-thinking",
    ),
    pytest.param(
        "developer",
        "gemini-3.1-flash-live-preview",
        {"thinking_level": "minimal", "tools": (builtin_declaration("end_call"), LOOKUP)},
        {
            "thinking_config": types.ThinkingConfig(thinking_level=types.ThinkingLevel.MINIMAL),
            "tools": [types.Tool(function_declarations=declarations(None, None))],
        },
        id="developer-3.1-flash-live",
    ),
    pytest.param(
        "developer",
        "gemini-3.8-live",
        {"tools": (builtin_declaration("end_call"), {**LOOKUP, "behavior": "BLOCKING"})},
        {"tools": [types.Tool(function_declarations=declarations("NON_BLOCKING", "BLOCKING"))]},
        id="developer-3.8-live",
    ),
    pytest.param(
        "developer",
        "gemini-3.8-live-extended-thinking",
        {"thinking_level": "high", "tools": (builtin_declaration("end_call"), LOOKUP)},
        {
            "thinking_config": types.ThinkingConfig(thinking_level=types.ThinkingLevel.HIGH),
            "tools": [types.Tool(function_declarations=declarations("NON_BLOCKING", "NON_BLOCKING"))],
        },
        id="developer-3.8-live-extended-thinking",
    ),
    pytest.param(
        "vertex",
        "gemini-live-2.5-flash-native-audio",
        {
            "thinking_budget": 0,
            "tools": (builtin_declaration("end_call"), {**LOOKUP, "behavior": "NON_BLOCKING"}),
        },
        {
            "enable_affective_dialog": True,
            "proactivity": PROACTIVE,
            "thinking_config": types.ThinkingConfig(thinking_budget=0),
            "tools": [types.Tool(function_declarations=declarations("BLOCKING", "NON_BLOCKING"))],
        },
        id="vertex-2.5-native-audio",
    ),
    pytest.param(
        "vertex",
        "gemini-3.8-live",
        {"tools": (builtin_declaration("end_call"), LOOKUP)},
        {"tools": [types.Tool(function_declarations=declarations("NON_BLOCKING", "NON_BLOCKING"))]},
        id="vertex-3.8-live",
    ),
]


@pytest.mark.parametrize(("platform", "model", "ours", "theirs"), CASES)
async def test_setup_is_what_the_sdk_sends(platform, model, ours, theirs, capture, tls):
    config = gateway_config(platform, model, **ours)
    path, headers, sdk_message = await sdk_first_frame(
        platform, model, sdk_config(config, **theirs), capture, tls
    )
    expected = normalised(sdk_message)["setup"]
    setup = lp.build_setup(config)["setup"]
    for key in sorted(expected.keys() | setup.keys()):  # field by field, for a readable failure
        assert setup.get(key) == expected.get(key), key
    # Where and how the SDK dials, against where and how the gateway would.
    if platform == "vertex":
        assert path == urlsplit(lp.vertex_url(LOCATION)).path
        assert headers["authorization"] == "Bearer ya29.test-token"
        assert setup["model"] == f"projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{model}"
    else:
        assert path == lp.LIVE_PATH.format(version="v1alpha")
        assert headers["x-goog-api-key"] == "test-key"


def test_every_listed_model_has_a_conformance_case():
    families = {
        (lp.model_capabilities(m, p).family, p) for p in lp.PLATFORMS for m in lp.MODELS_BY_PLATFORM[p]
    }
    covered = {(lp.model_capabilities(c.values[1], c.values[0]).family, c.values[0]) for c in CASES}
    assert families == covered


async def test_a_resuming_setup_carries_the_handle_as_the_sdk_does(capture, tls):
    config = gateway_config("vertex", "gemini-3.8-live")
    theirs = sdk_config(config).model_copy(
        update={"session_resumption": types.SessionResumptionConfig(handle="h-42", transparent=True)}
    )
    _, _, sdk_message = await sdk_first_frame("vertex", "gemini-3.8-live", theirs, capture, tls)
    assert (
        lp.build_setup(config, "h-42")["setup"]["sessionResumption"]
        == normalised(sdk_message)["setup"]["sessionResumption"]
    )


def test_sdk_refuses_the_developer_only_and_vertex_only_fields_the_gateway_never_sends():
    """The SDK's converters say which fields are platform-only; the gateway's validation agrees."""
    with pytest.raises(ValueError, match="transparent"):
        asyncio.run(
            sdk_first_frame(
                "developer",
                "gemini-3.8-live",
                types.LiveConnectConfig(session_resumption=types.SessionResumptionConfig(transparent=True)),
                SimpleNamespace(port=1, frames=[]),
                (None, None),
            )
        )
    with pytest.raises(lp.LiveConfigError, match="Vertex AI only"):
        lp.LiveConfig(transparent_resumption=True).validate()
