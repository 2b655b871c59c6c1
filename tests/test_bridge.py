"""End to end over real sockets: the caller simulator -> the gateway -> a scripted Live peer, and back."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest
import websockets
from websockets.asyncio.client import connect

from gateway.audio import OutboundAudio
from gateway.devtools.simulator import CallScript, SimulatorError, place_call
from gateway.server import running_gateway
from tests.support.audio import agent_tone, caller_tone, loud_seconds
from tests.support.gateway import logged, settings_for, stream_token
from tests.support.live_peer import LivePeer, PeerSession

pytestmark = pytest.mark.e2e

GREETING_S = 1.0
# A turn's audio comes out whole plus the resampler's ring-out (its group delay), never clipped.
TAIL = OutboundAudio().delay_ms * 8 + 2


def agent_bytes_after(result, kind: str) -> int:
    """Mu-law bytes (= 8 kHz samples) the gateway sent after the first event of `kind`."""
    first = next(i for i, e in enumerate(result.events) if e.kind == kind)
    return sum(e.details.get("bytes", 0) for e in result.events[first:] if e.kind == "media")


async def greet(session: PeerSession) -> None:
    async with asyncio.timeout(10):
        await session.got_turn.wait()
    await session.send_audio(agent_tone(GREETING_S))
    await session.send({"serverContent": {"outputTranscription": {"text": "Hello there."}}})
    await session.send({"serverContent": {"generationComplete": True}})
    await session.send(
        {
            "serverContent": {"turnComplete": True},
            "usageMetadata": {"promptTokenCount": 10, "responseTokenCount": 25, "totalTokenCount": 35},
        }
    )


async def test_greeting_and_audio_both_ways_with_exact_sample_counts():
    transcripts: list[tuple[str, str]] = []
    async with LivePeer(greet) as peer:
        settings = settings_for(peer.url, AGENT_GREETING="Say hello")
        async with running_gateway(
            settings, on_transcript=lambda sid, role, text: transcripts.append((role, text))
        ) as url:
            result = await place_call(url, CallScript(audio=caller_tone(1.0), trailing_silence_s=1.5))
        session = await peer.session()

    # setup as sent over the wire
    assert session.setup["model"].startswith("models/gemini-2.5-flash-native-audio")
    assert session.setup["generationConfig"]["enableAffectiveDialog"] is True
    assert session.setup["proactivity"] == {"proactiveAudio": True}
    assert session.setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert "inputAudioTranscription" in session.setup and "outputAudioTranscription" in session.setup
    assert session.client_turns == ["Say hello"]  # the greeting asked the agent to speak first

    # caller -> Live: every 20 ms mu-law frame became 320 samples at 16 kHz, nothing lost or added
    assert session.audio_mime == {"audio/pcm;rate=16000"}
    assert result.media_frames_sent > 100
    assert session.audio_bytes == result.media_frames_sent * 320 * 2

    # Live -> caller: 1.0 s at 24 kHz became 8000 samples at 8 kHz, the resampler's tail flushed, not clipped
    assert GREETING_S * 8000 <= result.media_bytes_received <= GREETING_S * 8000 + TAIL
    # the mark after the turn came back once the audio had played
    assert any(e.kind == "mark" for e in result.events)
    assert len(result.mark_round_trips) == 1 and result.mark_round_trips[0] >= GREETING_S - 0.1
    # what the caller heard is the 440 Hz tone
    heard = np.frombuffer(result.heard, "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(heard))
    assert abs(np.argmax(spectrum) * 8000 / len(heard) - 440) < 5
    assert ("agent", "Hello there.") in transcripts
    # the session to Live was closed when the caller hung up
    async with asyncio.timeout(5):
        await session.closed.wait()


async def test_barge_in_clears_twilio_and_discards_late_audio_of_the_interrupted_turn():
    async def script(session: PeerSession) -> None:
        await session.send_audio(agent_tone(5.0))  # a long answer, delivered faster than real time
        await asyncio.sleep(1.0)  # the caller talks over it
        await session.send({"serverContent": {"interrupted": True}})
        await session.send_audio(agent_tone(1.0, 1000.0))  # late audio of the interrupted turn
        await session.send({"serverContent": {"turnComplete": True}})
        await session.send_audio(agent_tone(0.5, 600.0))  # the next answer
        await session.send({"serverContent": {"turnComplete": True}})

    async with LivePeer(script) as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            result = await place_call(url, CallScript(audio=caller_tone(0.2), trailing_silence_s=3.0))

    kinds = [e.kind for e in result.events]
    assert "clear" in kinds
    # after the clear only the next answer arrives: 0.5 s = 4000 samples (plus its tail), no late audio
    assert 4000 <= agent_bytes_after(result, "clear") <= 4000 + TAIL
    # the caller heard about a second of the first answer, not five
    assert 1.0 <= loud_seconds(result.heard) <= 2.0
    assert 5 * 8000 + 4000 <= agent_bytes_after(result, "media") <= 5 * 8000 + 4000 + TAIL


async def test_caller_hang_up_closes_live_and_leaves_no_call_behind():
    async with LivePeer() as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            result = await place_call(url, CallScript(audio=caller_tone(0.3), trailing_silence_s=0.2))
            session = await peer.session()
            async with asyncio.timeout(5):
                await session.closed.wait()
            async with httpx.AsyncClient() as client:
                for _ in range(100):
                    health = (await client.get(url + "/healthz")).json()
                    if health["active_calls"] == 0:
                        break
                    await asyncio.sleep(0.02)
            assert health == {"status": "ok", "active_calls": 0}
    assert result.closed_by == "caller"


async def test_live_ending_the_session_ends_the_call_so_the_twiml_after_connect_runs():
    async def script(session: PeerSession) -> None:
        await asyncio.sleep(0.5)
        await session.ws.close(1000)

    async with LivePeer(script) as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            result = await place_call(
                url, CallScript(audio=caller_tone(0.2), trailing_silence_s=10, hang_up=False)
            )
    assert result.closed_by == "gateway"
    assert result.duration_s < 5


async def test_config_rejection_is_reported_and_the_call_ends_cleanly(capsys):
    reason = 'Invalid JSON payload received. Unknown name "enable_affective_dialog"'
    async with LivePeer(reject=(1007, reason)) as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            result = await place_call(
                url, CallScript(audio=caller_tone(0.2), trailing_silence_s=10, hang_up=False)
            )
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(url + "/metrics")).text
    # no retry loop: one attempt, then the apology played to its end, then the stream closed
    assert len(peer.sessions) == 1
    assert result.closed_by == "gateway" and result.duration_s < 15
    assert any(e.kind == "mark" and e.details.get("name") == "final" for e in result.events)
    assert 'gateway_calls_total{outcome="live_config_error"}' in metrics
    failure = next(line for line in logged(capsys) if line["event"] == "live_session_failed")
    assert failure["code"] == 1007 and "enable_affective_dialog" in failure["error"]
    assert failure["call_sid"] == result.call_sid and failure["stream_sid"] == result.stream_sid


async def test_every_log_line_of_a_call_carries_its_sids(capsys):
    async with LivePeer(greet) as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="hi")) as url:
            result = await place_call(url, CallScript(audio=caller_tone(0.5), trailing_silence_s=1.5))
    lines = logged(capsys)
    call_events = {"call_started", "transcript", "agent_turn_played", "line_ended", "call_ended"}
    call_lines = [line for line in lines if line["event"] in call_events]
    assert {"call_started", "transcript", "call_ended"} <= {line["event"] for line in call_lines}
    for line in call_lines:
        assert line["call_sid"] == result.call_sid and line["stream_sid"] == result.stream_sid
    ended = next(line for line in call_lines if line["event"] == "call_ended")
    assert ended["total_tokens"] == 35 and ended["outcome"] == "caller_hung_up"


async def test_bad_input_is_skipped_and_a_concurrent_call_is_unaffected():
    async with LivePeer() as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            good = asyncio.create_task(
                place_call(url, CallScript(audio=caller_tone(1.0), trailing_silence_s=0.5))
            )
            token = await stream_token(url, "CAbad")
            async with connect(url.replace("http", "ws") + "/twilio/media") as ws:
                await ws.send(
                    '{"event":"media","streamSid":"MZ1","media":{"payload":"/w=="}}'
                )  # before start
                await ws.send("not json at all")
                await ws.send(b"\x00\x01binary")
                await ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
                await ws.send(
                    json.dumps(
                        {
                            "event": "start",
                            "streamSid": "MZbad",
                            "start": {
                                "streamSid": "MZbad",
                                "callSid": "CAbad",
                                "accountSid": "AC1",
                                "customParameters": {"token": token},
                                "mediaFormat": {
                                    "encoding": "audio/x-mulaw",
                                    "sampleRate": 8000,
                                    "channels": 1,
                                },
                            },
                        }
                    )
                )
                frame = base64.b64encode(b"\xff" * 160).decode()
                for i in range(10):
                    await ws.send(f'{{"event":"media","streamSid":"MZbad","media":{{"payload":"{frame}"}}}}')
                    await ws.send(
                        '{"event":"media","streamSid":"MZbad","media":{"payload":"%%%%"}}'
                    )  # bad b64
                    await ws.send('{"event":"surprise"}')
                    await ws.send("[1, 2, 3]")
                    if i == 5:
                        await ws.send(
                            '{"event":"media","streamSid":"MZbad","media":{"payload":"' + "A" * 40_000 + '"}}'
                        )
                await ws.send('{"event":"stop","streamSid":"MZbad","stop":{"callSid":"CAbad"}}')
                with pytest.raises(websockets.ConnectionClosed):
                    async with asyncio.timeout(5):
                        while True:
                            await ws.recv()
            result = await good
    ok, bad = sorted(peer.sessions, key=lambda s: s.audio_bytes)  # the junk call sent the big frame
    # the junk call: exactly the 10 good frames reached Live, plus the big valid one
    assert bad.audio_bytes == (10 * 160 + 30_000) * 4
    assert ok.audio_bytes == result.media_frames_sent * 320 * 2


async def test_signatures_are_checked_on_the_webhook_and_the_stream_upgrade():
    token = "test-auth-token-1234"
    async with LivePeer() as peer:
        settings = settings_for(peer.url, AGENT_GREETING="none", TWILIO_AUTH_TOKEN=token)
        async with running_gateway(settings) as url:
            async with httpx.AsyncClient() as client:
                response = await client.post(url + "/twilio/voice", data={"CallSid": "CA1"})
                assert response.status_code == 403
            with pytest.raises(SimulatorError):
                await place_call(url, CallScript(audio=caller_tone(0.1)), auth_token="wrong-token")
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with connect(url.replace("http", "ws") + "/twilio/media"):
                    pass
            assert refused.value.response.status_code == 403
            result = await place_call(
                url, CallScript(audio=caller_tone(0.3), trailing_silence_s=0.2), auth_token=token
            )
    assert result.closed_by == "caller" and len(peer.sessions) == 1


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1011, "internal error"),
        # Live has been seen to close with 1008 around tool calls: once set up, that is a break, not config.
        (1008, "Operation is not implemented, or supported, or enabled."),
    ],
)
async def test_a_broken_live_connection_is_resumed_with_the_latest_handle_and_no_caller_audio_is_lost(
    code: int, reason: str
):
    async def script(session: PeerSession) -> None:
        if session.setup["sessionResumption"].get("handle"):
            return  # the resumed connection just listens
        await session.send({"sessionResumptionUpdate": {"newHandle": "handle-1", "resumable": True}})
        await asyncio.sleep(0.6)
        await session.ws.close(code, reason)

    async with LivePeer(script) as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            result = await place_call(url, CallScript(audio=caller_tone(2.0), trailing_silence_s=0.5))
    first, second = peer.sessions
    assert first.close_code == code and second.setup["sessionResumption"] == {"handle": "handle-1"}
    assert result.closed_by == "caller"
    # Every caller frame reached a Live connection; the audio after the handle was sent again on the new one.
    total_frames = (first.audio_bytes + second.audio_bytes) // 640
    assert total_frames >= result.media_frames_sent
    assert second.audio_bytes // 640 >= result.media_frames_sent - first.audio_bytes // 640


async def test_when_live_cannot_be_brought_back_the_caller_hears_an_apology_not_dead_air():
    async def script(session: PeerSession) -> None:
        await asyncio.sleep(0.3)
        await session.ws.close(1011, "overloaded")

    async with LivePeer(script, reject=(1011, "overloaded"), reject_from=1) as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            result = await place_call(
                url, CallScript(audio=caller_tone(0.2), trailing_silence_s=30, hang_up=False)
            )
    assert result.closed_by == "gateway"
    assert len(peer.sessions) == 1 + 5  # the first connection, then every bounded retry
    # the apology was played to the end (its mark echoed) before the stream closed
    assert loud_seconds(result.heard, threshold=500) > 2.0
    assert any(e.kind == "mark" and e.details.get("name") == "final" for e in result.events)


async def test_talking_over_a_reply_that_is_still_playing_out_clears_it():
    async def script(session: PeerSession) -> None:
        await session.send_audio(agent_tone(4.0))  # all of it sent at once: Twilio plays it out for 4 s
        await session.send({"serverContent": {"turnComplete": True}})  # Live is done: no `interrupted` later
        await asyncio.sleep(1.0)
        await session.send({"serverContent": {"inputTranscription": {"text": "wait"}}})  # the caller talks

    async with LivePeer(script) as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            result = await place_call(url, CallScript(audio=caller_tone(0.1), trailing_silence_s=3.0))
    assert "clear" in [e.kind for e in result.events]
    assert 0.8 <= loud_seconds(result.heard) <= 1.6  # about the first second, not all four
