"""The local Live backend over real sockets on loopback: protocol fidelity and the offline voice loop."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.local_live.agent import LocalAgent
from tests.support.audio import room_noise
from tests.support.local_live import (
    MODEL,
    LiveClient,
    audio_of,
    b64,
    caller_speech,
    is_turn_complete,
    setup_message,
    texts,
)

FAST = LocalLiveOptions(audio_lead_s=60.0)  # replies sent at once: keeps the suite quick


@pytest.fixture
async def server():
    async with LocalLiveServer(options=LocalLiveOptions()) as srv:
        yield srv


@pytest.fixture
async def fast_server():
    async with LocalLiveServer(options=FAST) as srv:
        yield srv


async def close_of(url: str, *messages: str | bytes) -> tuple[int, str]:
    """Send raw frames and return the close code and reason the server answers with."""
    async with websockets.connect(url, max_size=None) as ws:
        for message in messages:
            await ws.send(message)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("not closed")


def setup_json(**extra) -> str:
    return json.dumps(setup_message(**extra))


async def test_setup_complete_in_binary_frame_and_404_elsewhere(server):
    client = await LiveClient.connect(server.url(), setup_message())
    assert client.log[0].binary
    await client.close()
    v1beta = await LiveClient.connect(server.url("v1beta"), setup_message())
    await v1beta.close()
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(f"ws://127.0.0.1:{server.port}/ws/elsewhere?key=secret")
    assert info.value.response.status_code == 404


# The agent answers "what is the time" with "It is HH:MM." from its clock; spoken, that lasts 0.86 to 1.89 s
# depending on the minute, and 43 minutes of the day give 1.0 s or less (04:50: 0.99 s). This test needs more
# than 1.0 s of reply, more than the audio the backend sends ahead of real time, to tell paced audio from a
# burst, so the agent's clock is fixed at a minute that gives 1.39 s, whatever the time of day of the run.
AGENT_TIME = datetime(2026, 1, 1, 12, 34)


@pytest.fixture
async def clocked_server():
    async with LocalLiveServer(options=LocalLiveOptions(clock=lambda: AGENT_TIME)) as srv:
        yield srv


@pytest.mark.e2e
async def test_audio_turn(clocked_server):
    client = await LiveClient.connect(clocked_server.url(), setup_message())
    await client.send_audio(caller_speech("what is the time"), pace=4.0)
    got = await client.until(is_turn_complete, timeout=20)
    heard = texts(got, "inputTranscription")
    assert {"what", "time"} & set(heard.split()), heard
    said = texts(got, "outputTranscription")
    assert said.strip(), got
    pcm = audio_of(got)
    audio_s = len(pcm) / 48000
    assert audio_s > 1.0
    stamps = [r.at for r in client.log if "modelTurn" in r.message.get("serverContent", {})]
    assert stamps[-1] - stamps[0] < audio_s - 0.5, "audio must arrive faster than real time"
    assert all(r.binary for r in client.log)
    usage = got[-1]["usageMetadata"]
    assert usage["responseTokenCount"] == pytest.approx(audio_s * 25, abs=2)
    assert usage["promptTokenCount"] > 10
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"]
    assert usage["responseTokensDetails"] == [
        {"modality": "AUDIO", "tokenCount": usage["responseTokenCount"]}
    ]
    assert any(g.get("serverContent", {}).get("generationComplete") for g in got)
    await client.close()


def test_the_agent_tells_the_time_of_its_clock_at_every_minute_of_the_day():
    midnight = datetime(2026, 1, 1)
    for minute in range(24 * 60):
        now = midnight + timedelta(minutes=minute)
        agent = LocalAgent(clock=lambda now=now: now)
        assert agent.respond("what is the time", []).text == f"It is {now:%H:%M}."


@pytest.mark.e2e
async def test_snake_case_urlsafe_base64_and_8khz_input(fast_server):
    setup = {
        "setup": {
            "model": MODEL.removeprefix("models/"),
            "generation_config": {
                "response_modalities": ["AUDIO"],
                "speech_config": {"language_code": "en-US"},
            },
            "input_audio_transcription": {},
            "realtime_input_config": {"automatic_activity_detection": {"silence_duration_ms": 400}},
        }
    }
    client = await LiveClient.connect(fast_server.url(), setup)
    pcm = caller_speech("my name is john", rate=8000)
    step = 8000 * 40 // 1000 * 2
    for i in range(0, len(pcm), step):
        data = b64(pcm[i : i + step], urlsafe=True).rstrip("=")
        await client.send({"realtime_input": {"audio": {"data": data, "mime_type": "audio/pcm;rate=8000"}}})
    got = await client.until(is_turn_complete)
    heard = texts(got, "inputTranscription")
    # 8 kHz speech is phone-band: PocketSphinx's wide-band model transcribes it roughly (measured: "my name
    # is john" -> "my dog", "i did ya"), so this asserts the audio was decoded, not what was understood.
    assert heard.strip(), "no transcription of 8 kHz input"
    await client.close()


@pytest.mark.parametrize(
    ("messages", "code", "reason_part"),
    [
        ([json.dumps({"realtimeInput": {"audioStreamEnd": True}})], 1007, "setup"),
        ([setup_json(generationConfig={"responseModalities": ["TEXT", "AUDIO"]})], 1007, "modalit"),
        ([setup_json(bogus=1)], 1007, 'Unknown name "bogus"'),
        ([setup_json(generationConfig={"speechConfig": {"voice": 1}})], 1007, "Unknown name"),
        (["{not json"], 1007, "Invalid JSON"),
        ([json.dumps({})], 1007, "exactly one"),
        ([json.dumps({**setup_message(), "clientContent": {}})], 1007, "exactly one"),
        ([setup_json(), json.dumps({"surprise": {}})], 1007, "Unknown name"),
        (
            [
                setup_json(),
                json.dumps({"realtimeInput": {"audio": {"data": "***", "mimeType": "audio/pcm"}}}),
            ],
            1007,
            "Base64",
        ),
        ([setup_json(), setup_json()], 1007, "setup"),
        ([setup_json(model="models/gemini-nonexistent")], 1008, "not found"),
        ([setup_json(sessionResumption={"handle": "no-such-handle"})], 1008, "handle"),
        (
            [setup_json(model="gemini-live-2.5-flash-preview", proactivity={"proactiveAudio": True})],
            1007,
            "proactiv",
        ),
        ([setup_json(model="gemini-3.8-live", proactivity={"proactiveAudio": False})], 1007, "proactive"),
    ],
)
async def test_invalid_input_closes_with_reason(fast_server, messages, code, reason_part):
    got_code, reason = await close_of(fast_server.url(), *messages)
    assert (got_code, reason_part in reason) == (code, True), reason


async def test_v1beta_rejects_preview_fields_v1alpha_accepts_them(fast_server):
    affective = {"responseModalities": ["AUDIO"], "enable_affective_dialog": True}
    code, reason = await close_of(fast_server.url("v1beta"), setup_json(generationConfig=affective))
    assert code == 1007 and 'Unknown name "enable_affective_dialog"' in reason
    code, reason = await close_of(fast_server.url("v1beta"), setup_json(proactivity={"proactiveAudio": True}))
    assert code == 1007 and 'Unknown name "proactivity"' in reason
    ok = await LiveClient.connect(
        fast_server.url("v1alpha"),
        setup_message(generationConfig=affective, proactivity={"proactiveAudio": True}),
    )
    await ok.close()


async def test_deprecated_media_chunks_by_model(fast_server):
    chunk = {
        "realtimeInput": {"mediaChunks": [{"data": b64(room_noise(0.1)), "mimeType": "audio/pcm;rate=16000"}]}
    }
    code, reason = await close_of(
        fast_server.url(), setup_json(model="gemini-3.1-flash-live-preview"), json.dumps(chunk)
    )
    assert code == 1007 and "media_chunks" in reason
    client = await LiveClient.connect(fast_server.url(), setup_message())
    await client.send(chunk)
    await client.send(
        {
            "clientContent": {
                "turns": [{"role": "user", "parts": [{"text": "Greet the caller"}]}],
                "turnComplete": True,
            }
        }
    )
    got = await client.until(is_turn_complete)
    assert "Hello" in texts(got, "outputTranscription")
    await client.close()


async def test_oversize_frame_is_refused_and_server_survives(fast_server):
    ws = await websockets.connect(fast_server.url(), max_size=None)
    await ws.send(setup_json())
    await ws.recv()
    await ws.send("x" * (5 * 1024 * 1024))
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd.code == 1009
    # (no ws.close(): the server already dropped the socket, and closing again trips an asyncio corner)
    client = await LiveClient.connect(fast_server.url(), setup_message())
    await client.close()


@pytest.mark.e2e
async def test_interruption(server):
    client = await LiveClient.connect(server.url(), setup_message())
    await client.send_audio(caller_speech("hello can you hear me"), pace=4.0)
    await client.until(lambda m: "modelTurn" in m.get("serverContent", {}))
    # The caller talks over the reply, in real time.
    talk = asyncio.create_task(client.send_audio(caller_speech("what is the time"), pace=1.0))
    got = await client.until(lambda m: m.get("serverContent", {}).get("interrupted"), timeout=10)
    after = await client.until(is_turn_complete, timeout=5)
    assert after[-1]["serverContent"] == {"turnComplete": True}
    assert not audio_of(after), "no audio between interrupted and turnComplete"
    assert got[-1]["serverContent"] == {"interrupted": True}
    await talk
    # The interrupting utterance gets its own answer.
    nxt = await client.until(is_turn_complete, timeout=20)
    assert texts(nxt, "outputTranscription")
    await client.close()


@pytest.mark.e2e
async def test_proactive_audio_ignores_noise_and_silence(fast_server):
    manual = {"automaticActivityDetection": {"disabled": True}}
    client = await LiveClient.connect(
        fast_server.url(),
        setup_message(proactivity={"proactiveAudio": True}, realtimeInputConfig=manual),
    )
    await client.send({"realtimeInput": {"activityStart": {}}})
    await client.send_audio(room_noise(1.0))
    await client.send({"realtimeInput": {"activityEnd": {}}})
    with pytest.raises(TimeoutError):
        await client.recv(timeout=2.0)
    await client.close()

    # Automatic VAD, proactive: noise and silence get nothing.
    client = await LiveClient.connect(fast_server.url(), setup_message(proactivity={"proactiveAudio": True}))
    import numpy as np

    noise = np.random.default_rng(3).normal(0, 3000, 16000).astype("<i2").tobytes()
    await client.send_audio(room_noise(0.5) + noise + room_noise(1.0))
    await client.send({"realtimeInput": {"audioStreamEnd": True}})
    with pytest.raises(TimeoutError):
        await client.recv(timeout=2.0)
    await client.close()

    # Without proactive audio, an empty utterance gets an apology.
    client = await LiveClient.connect(fast_server.url(), setup_message(realtimeInputConfig=manual))
    await client.send({"realtimeInput": {"activityStart": {}}})
    await client.send_audio(room_noise(0.5))
    await client.send({"realtimeInput": {"activityEnd": {}}})
    got = await client.until(is_turn_complete)
    assert "didn't catch that" in texts(got, "outputTranscription")
    await client.close()


@pytest.mark.e2e
async def test_vad_disabled_uses_activity_markers(fast_server):
    manual = {"automaticActivityDetection": {"disabled": True}}
    client = await LiveClient.connect(fast_server.url(), setup_message(realtimeInputConfig=manual))
    await client.send_audio(caller_speech("what is the time"))  # outside activityStart/End: discarded
    with pytest.raises(TimeoutError):
        await client.recv(timeout=1.5)
    await client.send({"realtimeInput": {"activityStart": {}}})
    await client.send_audio(caller_speech("what is the time"))
    await client.send({"realtimeInput": {"activityEnd": {}}})
    got = await client.until(is_turn_complete)
    assert {"what", "time"} & set(texts(got, "inputTranscription").split())
    await client.close()


@pytest.mark.e2e
async def test_end_call_tool(fast_server):
    tools = [{"functionDeclarations": [{"name": "end_call", "description": "Hang up."}]}]
    client = await LiveClient.connect(fast_server.url(), setup_message(tools=tools))
    await client.send_audio(caller_speech("please hang up"))
    got = await client.until(lambda m: "toolCall" in m)
    assert "Goodbye" in texts(got, "outputTranscription"), texts(got, "inputTranscription")
    (call,) = got[-1]["toolCall"]["functionCalls"]
    assert call["name"] == "end_call" and call["id"]
    await client.send(
        {
            "toolResponse": {
                "functionResponses": [{"id": call["id"], "name": "end_call", "response": {"result": "ok"}}]
            }
        }
    )
    done = await client.until(is_turn_complete)
    assert "usageMetadata" in done[-1]
    await client.close()


@pytest.mark.parametrize(
    ("answer", "spoken"),
    [
        ({"error": "transfers are not available on this line"}, "transfers are not available on this line"),
        ({"result": "The caller will be transferred."}, None),
    ],
)
async def test_a_refused_transfer_is_told_to_the_caller_a_granted_one_is_not(fast_server, answer, spoken):
    """A transfer the service refuses (no REST credentials, a target not allowed) is said aloud: the "I will
    transfer you now" before it must not be the last the caller hears."""
    target = {"type": "STRING", "enum": ["+15005550009"]}
    declaration = {
        "name": "transfer_call",
        "parameters": {"type": "OBJECT", "properties": {"target": target}},
    }
    client = await LiveClient.connect(
        fast_server.url(), setup_message(tools=[{"functionDeclarations": [declaration]}])
    )
    turn = {"role": "user", "parts": [{"text": "Transfer me to an operator."}]}
    await client.send({"clientContent": {"turns": [turn], "turnComplete": True}})
    got = await client.until(lambda m: "toolCall" in m)
    (call,) = got[-1]["toolCall"]["functionCalls"]
    assert call["name"] == "transfer_call" and call["args"] == {"target": "+15005550009"}
    response = {"id": call["id"], "name": "transfer_call", "response": answer}
    await client.send({"toolResponse": {"functionResponses": [response]}})
    after = texts(await client.until(is_turn_complete), "outputTranscription")
    if spoken is None:
        assert after.strip() == "", after
    else:
        assert spoken in after and "Sorry" in after, after
    await client.close()


async def test_interruption_cancels_pending_tool_call(fast_server):
    tools = [{"functionDeclarations": [{"name": "end_call"}]}]
    client = await LiveClient.connect(fast_server.url(), setup_message(tools=tools))
    await client.send({"realtimeInput": {"text": "goodbye"}})
    got = await client.until(lambda m: "toolCall" in m)
    call_id = got[-1]["toolCall"]["functionCalls"][0]["id"]
    await client.send({"realtimeInput": {"text": "wait, what is the time"}})
    got = await client.until(is_turn_complete)
    kinds = [next(iter(m)) if "serverContent" not in m else next(iter(m["serverContent"])) for m in got]
    assert kinds[:3] == ["interrupted", "toolCallCancellation", "turnComplete"], kinds
    assert got[1]["toolCallCancellation"]["ids"] == [call_id]
    await client.close()


@pytest.mark.e2e
async def test_goaway_then_resumption_keeps_history():
    options = LocalLiveOptions(audio_lead_s=60.0, goaway_after_s=2.5, goaway_time_left_s=1.0)
    async with LocalLiveServer(options=options) as srv:
        client = await LiveClient.connect(srv.url(), setup_message(sessionResumption={}))
        await client.send_audio(caller_speech("my name is john"))
        got = await client.until(is_turn_complete)
        heard = texts(got, "inputTranscription").strip()
        assert heard
        update = await client.until(lambda m: "sessionResumptionUpdate" in m)
        handle = update[-1]["sessionResumptionUpdate"]["newHandle"]
        assert update[-1]["sessionResumptionUpdate"]["resumable"] is True
        away = await client.until(lambda m: "goAway" in m, timeout=5)
        assert away[-1]["goAway"]["timeLeft"] == "1s"
        with pytest.raises(ConnectionClosed) as info:
            await client.recv(timeout=5)
        assert info.value.rcvd.code == 1011

        resumed = await LiveClient.connect(srv.url(), setup_message(sessionResumption={"handle": handle}))
        await resumed.send({"realtimeInput": {"text": "what did I say before"}})
        got = await resumed.until(is_turn_complete)
        assert heard in texts(got, "outputTranscription")
        await resumed.close()


@pytest.mark.e2e
async def test_bad_clients_do_not_disturb_a_call(fast_server):
    client = await LiveClient.connect(fast_server.url(), setup_message())
    speaking = asyncio.create_task(client.send_audio(caller_speech("what is the time"), pace=2.0))

    async def vandal(frames: list[str | bytes]) -> None:
        try:
            async with websockets.connect(fast_server.url()) as ws:
                for frame in frames:
                    await ws.send(frame)
                await asyncio.wait_for(ws.recv(), 5)
        except (ConnectionClosed, TimeoutError):
            pass

    await asyncio.gather(
        vandal([b"\xff\xfe"]),
        vandal([setup_json(), b"{]"]),
        vandal([setup_json(), json.dumps({"realtimeInput": {"audio": {"data": 5}}})]),
        vandal([setup_json(), json.dumps({"toolResponse": {"functionResponses": "x"}})]),
        vandal([setup_json(), json.dumps({"clientContent": {"turns": [{"parts": [{"text": 3}]}]}})]),
    )
    await speaking
    got = await client.until(is_turn_complete, timeout=20)
    assert texts(got, "outputTranscription")
    await client.close()
