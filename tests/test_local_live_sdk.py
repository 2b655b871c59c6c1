"""Conformance: Google's own SDK (google-genai) talks to the local Live backend unchanged."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from gateway.local_live import LocalLiveOptions, LocalLiveServer
from tests.support.local_live import MODEL, caller_speech
from tests.support.tls import loopback_tls

pytestmark = pytest.mark.e2e

genai = pytest.importorskip("google.genai")
from google.genai import errors, types  # noqa: E402


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway self-signed certificate for 127.0.0.1: (server context, client context)."""
    return loopback_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def server(tls):
    async with LocalLiveServer(options=LocalLiveOptions(audio_lead_s=60.0, ssl_context=tls[0])) as srv:
        yield srv


@pytest.fixture
def sdk(server, tls) -> genai.Client:
    # With an API key the SDK always dials wss://{base_url host}/ws/google.ai.generativelanguage.
    # {api_version}.GenerativeService.BidiGenerateContent and sends the key as x-goog-api-key (ignored
    # locally), so the backend serves TLS here and the SDK gets the test certificate through
    # async_client_args["ssl"].
    return genai.Client(
        api_key="test",
        http_options={
            "api_version": "v1alpha",
            "base_url": f"https://127.0.0.1:{server.port}",
            "async_client_args": {"ssl": tls[1]},
        },
    )


async def test_sdk_completes_an_audio_turn(sdk):
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        speech_config=types.SpeechConfig(
            voice_config=types.VoiceConfig(prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Kore"))
        ),
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        enable_affective_dialog=True,
        proactivity=types.ProactivityConfig(proactive_audio=True),
        session_resumption=types.SessionResumptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(
                start_of_speech_sensitivity=types.StartSensitivity.START_SENSITIVITY_HIGH,
                silence_duration_ms=500,
            )
        ),
        tools=[
            types.Tool(
                function_declarations=[types.FunctionDeclaration(name="end_call", description="Hang up")]
            )
        ],
    )
    heard, said, audio, usage, handles = "", "", b"", None, []
    async with sdk.aio.live.connect(model=MODEL, config=config) as session:
        pcm = caller_speech("my name is john")
        for i in range(0, len(pcm), 1280):
            await session.send_realtime_input(
                audio=types.Blob(data=pcm[i : i + 1280], mime_type="audio/pcm;rate=16000")
            )

        async def collect() -> None:
            nonlocal heard, said, audio, usage
            async for message in session.receive():
                if message.session_resumption_update and message.session_resumption_update.new_handle:
                    handles.append(message.session_resumption_update.new_handle)
                content = message.server_content
                if content is None:
                    continue
                if content.input_transcription and content.input_transcription.text:
                    heard += content.input_transcription.text
                if content.output_transcription and content.output_transcription.text:
                    said += content.output_transcription.text
                if content.model_turn:
                    for part in content.model_turn.parts or []:
                        if part.inline_data and part.inline_data.data:
                            assert part.inline_data.mime_type == "audio/pcm;rate=24000"
                            audio += part.inline_data.data
                if content.turn_complete:
                    usage = message.usage_metadata
                    return

        await asyncio.wait_for(collect(), 20)
    assert {"name", "john"} & set(heard.split()), heard
    assert set(heard.split()) & set(said.lower().replace(",", " ").replace(".", " ").split())  # answers it
    assert len(audio) / 48000 > 1.0
    assert usage is not None and usage.response_token_count and usage.prompt_token_count
    assert handles


async def test_sdk_reports_invalid_setup_as_1007(sdk):
    config = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT, types.Modality.AUDIO])
    with pytest.raises(errors.APIError) as info:
        async with sdk.aio.live.connect(model=MODEL, config=config) as session:
            async for _ in session.receive():
                pass
    assert info.value.code == 1007


async def test_sdk_reports_unknown_model_as_1008(sdk):
    with pytest.raises(errors.APIError) as info:
        async with sdk.aio.live.connect(model="gemini-unknown", config={}) as session:
            async for _ in session.receive():
                pass
    assert info.value.code == 1008


async def test_sdk_on_vertex_talks_to_the_local_vertex_path_with_transparent_resumption(tls):
    from google.oauth2.credentials import Credentials

    options = LocalLiveOptions(audio_lead_s=60.0, ssl_context=tls[0], bearer_check=lambda t: t == "ya29.sdk")
    async with LocalLiveServer(options=options) as server:
        client = genai.Client(
            vertexai=True,
            project="phone-line-1",
            location="us-central1",
            credentials=Credentials(token="ya29.sdk"),
            http_options={
                "api_version": "v1beta1",
                "base_url": f"https://127.0.0.1:{server.port}",
                "async_client_args": {"ssl": tls[1]},
            },
        )
        config = types.LiveConnectConfig(
            response_modalities=[types.Modality.AUDIO],
            session_resumption=types.SessionResumptionConfig(transparent=True),
            output_audio_transcription=types.AudioTranscriptionConfig(),
        )
        consumed: list[int | None] = []
        said = ""
        async with client.aio.live.connect(
            model="gemini-live-2.5-flash-native-audio", config=config
        ) as session:
            await session.send_realtime_input(text="what time is it")

            async def collect() -> None:
                nonlocal said
                async for message in session.receive():
                    update = message.session_resumption_update
                    if update is not None and update.new_handle:
                        consumed.append(update.last_consumed_client_message_index)
                    content = message.server_content
                    if content is not None and content.output_transcription is not None:
                        said += content.output_transcription.text or ""
                    if content is not None and content.turn_complete:
                        return

            await asyncio.wait_for(collect(), 20)
    assert said.startswith("It is"), said
    assert consumed and all(index is not None for index in consumed)
