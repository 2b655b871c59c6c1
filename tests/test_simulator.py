"""The caller simulator against a scripted gateway on real loopback sockets (Starlette + uvicorn)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import pytest
import scipy.io.wavfile
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from gateway.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.devtools.simulator import (
    CallObserver,
    CallResult,
    CallScript,
    Event,
    Overlap,
    SimulatorError,
    Turn,
    add_call_arguments,
    agent_speech,
    caller_lines,
    load_wav,
    overlaps,
    place_call,
    segment_speech,
    summarize,
    write_stereo_wav,
)
from gateway.devtools.wavfile import load_caller_wav
from gateway.twilio.protocol import clear_message, mark_message, media_message

RATE = 8000


def tone(seconds: float, freq: float = 440.0, amp: float = 8000.0, rate: int = RATE) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(round(seconds * RATE) * 2)


def frame_rms(pcm: bytes) -> np.ndarray:
    """RMS per 20 ms frame."""
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    n = len(x) // 160
    return np.sqrt(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1))


def rms_between(pcm: bytes, start_s: float, end_s: float) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)[round(start_s * RATE) : round(end_s * RATE)]
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def onsets(pcm: bytes, threshold: float = 1000.0) -> list[float]:
    """Times (s) where frames go from quiet to loud."""
    loud = frame_rms(pcm) > threshold
    return [i * 0.02 for i in range(len(loud)) if loud[i] and (i == 0 or not loud[i - 1])]


# --- the scripted gateway ---


@dataclass
class Session:
    """One media WebSocket as the scripted gateway sees it."""

    ws: WebSocket
    received: list[tuple[float, Any]] = field(default_factory=list)  # (monotonic, parsed JSON)
    sent_at: dict[str, float] = field(default_factory=dict)  # label -> monotonic
    started: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    start_time: float = 0.0
    stream_sid: str = ""

    async def read(self) -> None:
        try:
            while True:
                text = await self.ws.receive_text()
                msg = json.loads(text)
                self.received.append((time.monotonic(), msg))
                if msg["event"] == "start":
                    self.start_time = time.monotonic()
                    self.stream_sid = msg["streamSid"]
                    self.started.set()
        except WebSocketDisconnect:
            pass
        finally:
            self.disconnected.set()

    async def at(self, t: float) -> None:
        """Sleep until t seconds after the `start` message arrived (the caller's timeline, ~0.1 ms off)."""
        await asyncio.sleep(max(0.0, self.start_time + t - time.monotonic()))

    async def send_media(self, pcm: bytes, chunk_s: float = 0.02) -> None:
        """Agent audio in a burst of chunks, faster than real time, as a TTS/LLM backend would."""
        step = round(chunk_s * RATE) * 2
        for i in range(0, len(pcm), step):
            await self.ws.send_text(media_message(self.stream_sid, pcm16_to_ulaw(pcm[i : i + step])))

    async def send_mark(self, name: str) -> None:
        self.sent_at[name] = time.monotonic()
        await self.ws.send_text(mark_message(self.stream_sid, name))

    async def send_clear(self) -> None:
        self.sent_at["clear"] = time.monotonic()
        await self.ws.send_text(clear_message(self.stream_sid))

    def messages(self, event: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.received if m.get("event") == event]

    def echo_time(self, name: str) -> float:
        return next(t for t, m in self.messages("mark") if m["mark"]["name"] == name)


Behaviour = Callable[[Session], Awaitable[None]]


@dataclass
class ScriptedGateway:
    token: str | None = None
    behaviour: Behaviour | None = None
    check_webhook: bool = True
    check_upgrade: bool = True
    public_url: str | None = None  # behind a "proxy": Twilio signs and streams to this host
    twiml: str | None = None  # answer this instead of <Connect><Stream>
    port: int = 0
    webhooks: list[dict[str, str]] = field(default_factory=list)
    webhook_ok: list[bool] = field(default_factory=list)
    upgrade_ok: list[bool] = field(default_factory=list)
    upgrade_headers: list[dict[str, str]] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.public_url or f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/twilio/media"

    def valid(self, url: str, params: dict[str, str], signature: str) -> bool:
        return bool(self.token) and RequestValidator(self.token).validate(url, params, signature)

    async def voice(self, request: Request) -> Response:
        params = dict(parse_qsl((await request.body()).decode()))
        self.webhooks.append(params)
        ok = self.valid(self.base + "/twilio/voice", params, request.headers.get("x-twilio-signature", ""))
        self.webhook_ok.append(ok)
        if self.token and self.check_webhook and not ok:
            return Response("invalid signature", status_code=403)
        if self.twiml is not None:
            return Response(self.twiml, media_type="application/xml")
        response = VoiceResponse()
        stream = response.connect().stream(url=self.stream_url)
        stream.parameter(name="caller", value=params.get("From", ""))
        stream.parameter(name="greeting", value="hello there")
        response.hangup()
        return Response(str(response), media_type="application/xml")

    async def media(self, ws: WebSocket) -> None:
        self.upgrade_headers.append(dict(ws.headers))
        ok = self.valid(self.stream_url, {}, ws.headers.get("x-twilio-signature", ""))
        self.upgrade_ok.append(ok)
        if self.token and self.check_upgrade and not ok:
            await ws.close(code=1008)  # before accept: the upgrade gets HTTP 403
            return
        await ws.accept()
        session = Session(ws)
        self.sessions.append(session)
        reader = asyncio.create_task(session.read())
        try:
            await asyncio.wait_for(session.started.wait(), 5)
            if self.behaviour is not None:
                await self.behaviour(session)
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            await reader

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/twilio/voice", self.voice, methods=["POST"]),
                WebSocketRoute("/twilio/media", self.media),
            ]
        )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[ScriptedGateway], Awaitable[str]]]:
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(gateway: ScriptedGateway) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        gateway.port = sock.getsockname()[1]
        config = uvicorn.Config(
            gateway.app(),
            ws="websockets-sansio",
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        running.append((server, asyncio.create_task(server.serve(sockets=[sock]))))
        while not server.started:
            await asyncio.sleep(0.005)
        return f"http://127.0.0.1:{gateway.port}"

    yield start
    for server, task in running:
        server.should_exit = True
        await task


# --- pacing and numbering ---


async def test_paces_frames_in_real_time_and_numbers_them_like_twilio(serve) -> None:
    gateway = ScriptedGateway(token="secret")
    url = await serve(gateway)
    audio = tone(2.0, freq=300)
    live: list[Any] = []
    result = await place_call(
        url,
        CallScript(audio, trailing_silence_s=0.2, dtmf=[(0.5, "1"), (1.0, "#")]),
        auth_token="secret",
        on_event=live.append,
    )

    assert gateway.webhook_ok == [True] and gateway.upgrade_ok == [True]
    hook = gateway.webhooks[0]
    assert hook["CallSid"] == result.call_sid and len(hook["CallSid"]) == 34 and hook["CallSid"][:2] == "CA"
    assert (hook["CallStatus"], hook["Direction"], hook["ApiVersion"]) == ("ringing", "inbound", "2010-04-01")
    assert hook["From"] == "+15005550006" and hook["AccountSid"] == "AC" + "0" * 32

    session = gateway.sessions[0]
    messages = [m for _, m in session.received]
    assert messages[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = messages[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert start["streamSid"] == result.stream_sid and start["streamSid"].startswith("MZ")
    assert start["start"]["callSid"] == result.call_sid
    assert start["start"]["customParameters"] == {"caller": "+15005550006", "greeting": "hello there"}
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    # One sequence for every message after `connected`, one chunk count for media, timestamps in ms.
    assert [m["sequenceNumber"] for m in messages[1:]] == [str(i) for i in range(1, len(messages))]
    media = [m for m in messages if m["event"] == "media"]
    assert len(media) == 110 == result.media_frames_sent
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, 111)]
    assert [m["media"]["timestamp"] for m in media] == [str(i * 20) for i in range(110)]
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)
    assert all(m["media"]["track"] == "inbound" and m["streamSid"] == result.stream_sid for m in media)
    dtmf = [(i, m) for i, m in enumerate(messages) if m["event"] == "dtmf"]
    assert [m["dtmf"]["digit"] for _, m in dtmf] == ["1", "#"]
    assert messages[dtmf[0][0] + 1]["media"]["timestamp"] == "500"  # pressed at 0.5 s on the stream timeline
    assert messages[-1]["event"] == "stop" and messages[-1]["stop"]["callSid"] == result.call_sid

    # Pacing: absolute deadlines, so 100 frames span 2 s (+-1%) and no frame drifts away from its slot.
    times = np.array([t for t, _ in session.messages("media")])
    assert 100 / (times[100] - times[0]) == pytest.approx(50, rel=0.01)
    drift = times - times[0] - np.arange(len(times)) * 0.02
    assert np.abs(drift).max() < 0.03
    # A frame sent over 5 ms past its slot is counted; how many is the scheduler's luck on a busy machine
    # (6 of 110 on one), but a pacer that lost its deadlines would be late on most of them.
    assert result.late_frames_sent < len(media) // 4

    # What the gateway received is the caller's audio (through mu-law).
    received = ulaw_to_pcm16(b"".join(base64.b64decode(m["media"]["payload"]) for m in media))
    x, y = np.frombuffer(received[: len(audio)], "<i2"), np.frombuffer(audio, "<i2")
    assert np.corrcoef(x, y)[0, 1] > 0.999
    assert len(result.sent) == len(result.heard) == 110 * 320
    assert result.sent[: len(audio)] == audio

    assert result.closed_by == "caller" and result.close_code == 1000
    assert [t.speech_start for t in result.turns] == [0.0] and result.turns[0].response_latency is None
    assert live == result.events and [e.kind for e in live][:3] == ["webhook", "connected", "start"]
    assert "closed by caller" in summarize(result)


async def test_the_caller_hangs_up_once_told_after_its_audio_and_never_before(serve) -> None:
    gateway = ScriptedGateway(token="secret")
    url = await serve(gateway)
    asked: list[int] = []

    def done() -> bool:  # asked once per frame after the audio: true from the fifth time on
        asked.append(1)
        return len(asked) >= 5

    script = CallScript(tone(0.4, freq=300), trailing_silence_s=30.0, hang_up_when=done)
    result = await place_call(url, script, auth_token="secret")
    assert result.media_frames_sent == 20 + 4  # the audio's 20 frames whatever it says, then 4 of silence
    assert result.closed_by == "caller"


# --- signatures ---


async def test_signature_on_webhook_and_upgrade_and_user_agents(serve) -> None:
    gateway = ScriptedGateway(token="tok")
    url = await serve(gateway)
    await place_call(url, CallScript(silence(0.1), trailing_silence_s=0), auth_token="tok")
    assert gateway.webhook_ok == [True] and gateway.upgrade_ok == [True]
    assert gateway.upgrade_headers[0]["user-agent"] == "Twilio.TmeWs/1.0"
    assert "sec-websocket-extensions" not in gateway.upgrade_headers[0]  # Twilio does not compress


async def test_wrong_token_is_refused_on_the_webhook(serve) -> None:
    gateway = ScriptedGateway(token="right")
    url = await serve(gateway)
    with pytest.raises(SimulatorError, match="403") as info:
        await place_call(url, CallScript(silence(0.1)), auth_token="wrong")
    assert info.value.status == 403 and gateway.webhook_ok == [False] and gateway.upgrade_ok == []


async def test_wrong_token_is_refused_on_the_upgrade(serve) -> None:
    gateway = ScriptedGateway(token="right", check_webhook=False)
    url = await serve(gateway)
    with pytest.raises(SimulatorError, match="refused the handshake: HTTP 403"):
        await place_call(url, CallScript(silence(0.1)), auth_token="wrong")
    assert gateway.upgrade_ok == [False] and gateway.sessions == []


async def test_behind_a_proxy_signs_the_public_url_and_dials_directly(serve) -> None:
    gateway = ScriptedGateway(token="tok", public_url="https://voice.example.com")
    url = await serve(gateway)
    result = await place_call(
        url,
        CallScript(silence(0.1), trailing_silence_s=0),
        auth_token="tok",
        public_url="https://voice.example.com",
    )
    assert result.stream_url == "wss://voice.example.com/twilio/media"
    assert gateway.webhook_ok == [True] and gateway.upgrade_ok == [True] and len(gateway.sessions) == 1


async def test_twiml_without_a_stream_fails_clearly(serve) -> None:
    gateway = ScriptedGateway(twiml="<Response><Say>Sorry</Say><Hangup/></Response>")
    url = await serve(gateway)
    with pytest.raises(SimulatorError, match=r"no <Connect><Stream"):
        await place_call(url, CallScript(silence(0.1)))


# --- playout: marks, clear, alignment ---


async def test_mark_echo_at_once_when_idle_and_after_playout(serve) -> None:
    async def behaviour(s: Session) -> None:
        await s.at(0.2)
        await s.send_mark("idle")
        await s.at(0.4)
        await s.send_media(tone(1.0))
        await s.send_mark("after-audio")

    gateway = ScriptedGateway(behaviour=behaviour)
    url = await serve(gateway)
    result = await place_call(url, CallScript(silence(1.8), trailing_silence_s=0))

    session = gateway.sessions[0]
    assert session.echo_time("idle") - session.sent_at["idle"] < 0.03
    assert session.echo_time("after-audio") - session.sent_at["after-audio"] == pytest.approx(1.0, abs=0.05)
    echo = next(m for _, m in session.messages("mark") if m["mark"]["name"] == "after-audio")
    assert set(echo) == {"event", "sequenceNumber", "streamSid", "mark"}
    assert echo["streamSid"] == result.stream_sid
    assert result.mark_round_trips[0] < 0.03 and result.mark_round_trips[1] == pytest.approx(1.0, abs=0.05)
    assert result.media_frames_received == 50 and result.media_bytes_received == 8000
    # Sequence numbers stay one sequence, in order on the wire, with echoes interleaved among media.
    numbers = [int(m["sequenceNumber"]) for _, m in session.received[1:]]
    assert numbers == list(range(1, len(numbers) + 1))


async def test_clear_flushes_audio_and_echoes_pending_marks_at_once(serve) -> None:
    async def behaviour(s: Session) -> None:
        await s.at(0.3)
        await s.send_media(tone(2.0))
        await s.send_mark("m1")
        await s.at(0.8)
        await s.send_clear()
        await s.at(1.0)
        await s.send_media(tone(0.2, freq=660))
        await s.send_mark("m2")

    gateway = ScriptedGateway(behaviour=behaviour)
    url = await serve(gateway)
    # The caller talks over the agent from 0.6 s: a barge-in the gateway answers with `clear` at 0.8 s.
    caller = silence(0.6) + tone(0.5, freq=250) + silence(0.5)
    result = await place_call(url, CallScript(caller, trailing_silence_s=0))

    session = gateway.sessions[0]
    assert session.echo_time("m1") - session.sent_at["clear"] < 0.03
    assert session.echo_time("m2") - session.sent_at["m2"] == pytest.approx(0.2, abs=0.05)
    heard = result.heard
    assert rms_between(heard, 0.35, 0.75) > 3000
    assert rms_between(heard, 0.85, 0.98) == 0  # flushed: never played
    assert rms_between(heard, 1.05, 1.15) > 3000  # audio after the clear plays normally
    assert rms_between(heard, 1.25, 1.6) == 0
    clear = next(e for e in result.events if e.kind == "clear")
    assert clear.details["flushed_s"] == pytest.approx(1.5, abs=0.05)
    assert len(result.barge_ins) == 1 and result.barge_ins[0] == pytest.approx(0.2, abs=0.04)
    assert result.unanswered_barge_ins == []
    # Read back from the events: the agent's speech as played, cut off by the clear, and the overlap's fate.
    first, second = agent_speech(result)
    assert (first.start, first.end) == (pytest.approx(0.3, abs=0.03), pytest.approx(0.8, abs=0.03))
    assert first.cleared_at == pytest.approx(0.8, abs=0.03) and first.flushed_s == pytest.approx(
        1.5, abs=0.05
    )
    assert first.cut_off and first.heard_s == pytest.approx(0.5, abs=0.04)
    assert second.start == pytest.approx(1.0, abs=0.03) and not second.cut_off
    (overlap,) = overlaps(result)
    assert overlap.verdict() == "cleared" and overlap.cleared_after == pytest.approx(0.2, abs=0.04)
    assert "cleared after" in summarize(result) and "NOT cleared" not in summarize(result)


class Stamps(CallObserver):
    """Every observer callback, in order: (name, args..., at)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def stream_started(self, t0: float) -> None:
        self.calls.append(("stream_started", t0))

    def media_sent(self, frame: int, at: float) -> None:
        self.calls.append(("media_sent", frame, at))

    def media_received(self, payload: bytes, at: float) -> None:
        self.calls.append(("media_received", payload, at))

    def mark_received(self, name: str, at: float) -> None:
        self.calls.append(("mark_received", name, at))

    def mark_echoed(self, name: str, at: float) -> None:
        self.calls.append(("mark_echoed", name, at))

    def clear_received(self, at: float) -> None:
        self.calls.append(("clear_received", at))

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == name]


async def test_an_observer_sees_every_frame_stamped_and_an_unrecorded_call_measures_the_same(serve) -> None:
    async def behaviour(s: Session) -> None:
        await s.at(0.3)
        await s.send_media(tone(1.0))
        await s.send_mark("m1")
        await s.at(0.6)
        await s.send_clear()
        await s.at(0.8)
        await s.send_media(tone(0.1, freq=660))
        await s.send_mark("m2")

    gateway = ScriptedGateway(behaviour=behaviour)
    url = await serve(gateway)
    stamps, live = Stamps(), []
    caller = silence(0.5) + tone(0.3, freq=250) + silence(0.4)  # talks over the agent from 0.5 s
    result = await place_call(
        url, CallScript(caller, trailing_silence_s=0), observer=stamps, record=False, on_event=live.append
    )

    ((t0,),) = stamps.of("stream_started")
    session = gateway.sessions[0]
    assert abs(session.start_time - t0) < 0.01  # t0: when `start` went out
    # Frame n is stamped on its deadline (t0 + n x 20 ms), before the gateway receives it.
    sent = stamps.of("media_sent")
    assert [frame for frame, _ in sent] == list(range(60)) and result.media_frames_sent == 60
    arrived = [t for t, _ in session.messages("media")]
    assert all(t0 + n * 0.02 - 0.001 <= at <= arrived[n] for n, at in sent)
    # Stamps on arrival, in the order the gateway sent: 50 + 5 media, m1, clear, m1 echoed at once, m2.
    kinds = [c[0] for c in stamps.calls if c[0] not in ("stream_started", "media_sent")]
    assert kinds == ["media_received"] * 50 + ["mark_received", "clear_received", "mark_echoed"] + [
        "media_received"
    ] * 5 + ["mark_received", "mark_echoed"]
    received = stamps.of("media_received")
    assert sum(len(payload) for payload, _ in received) == result.media_bytes_received == 8800
    assert all(isinstance(payload, bytes) and len(payload) == 160 for payload, _ in received)
    ((_, clear_at),) = [c for c in stamps.calls if c[0] == "clear_received"]
    assert 0 < clear_at - session.sent_at["clear"] < 0.03
    assert [name for name, _ in stamps.of("mark_echoed")] == ["m1", "m2"]
    assert stamps.of("mark_echoed")[0][1] - session.sent_at["clear"] < 0.03  # flushed: echoed at once

    # record=False: no audio and no event list kept, on_event still told; the measures are the same.
    assert (result.heard, result.sent, result.events) == (b"", b"", [])
    assert [e.kind for e in live][:3] == ["webhook", "connected", "start"] and live[-1].kind == "closed"
    assert len(result.barge_ins) == 1 and result.barge_ins[0] == pytest.approx(0.1, abs=0.04)
    assert len(result.mark_round_trips) == 2 and result.mark_round_trips[1] == pytest.approx(0.1, abs=0.04)
    assert [t.speech_start for t in result.turns] == [pytest.approx(0.5)]
    assert result.closed_by == "caller" and result.media_frames_received == 55


async def test_recording_is_aligned_and_turn_latency_measured(serve) -> None:
    async def behaviour(s: Session) -> None:
        await s.at(0.9)
        await s.send_media(tone(0.1))
        await s.at(1.3)
        await s.send_media(tone(0.1))

    gateway = ScriptedGateway(behaviour=behaviour)
    url = await serve(gateway)
    script = CallScript(tone(0.4, freq=250) + silence(1.2), leading_silence_s=0.2, trailing_silence_s=0)
    result = await place_call(url, script)

    assert len(result.sent) == len(result.heard) == 90 * 320
    assert onsets(result.sent) == [pytest.approx(0.2)]
    heard_onsets = onsets(result.heard)
    assert len(heard_onsets) == 2
    assert heard_onsets[0] == pytest.approx(0.9, abs=0.03) and heard_onsets[1] == pytest.approx(1.3, abs=0.03)
    (turn,) = result.turns
    assert (turn.speech_start, turn.speech_end) == (pytest.approx(0.2), pytest.approx(0.6))
    assert turn.response_latency == pytest.approx(0.3, abs=0.03)
    assert turn.playout_latency == pytest.approx(0.3, abs=0.03)
    assert turn.agent_audio_s == pytest.approx(0.2, abs=0.021)


async def test_turn_latency_ignores_an_answer_still_streaming_when_the_caller_stops(serve) -> None:
    async def behaviour(s: Session) -> None:
        await s.at(0.2)  # a greeting streams in, a little ahead of playout, until 0.7 s (plays until 1.0 s)
        await s.send_media(tone(0.2))
        for k in range(1, 6):
            await s.at(0.2 + 0.1 * k)
            await s.send_media(tone(0.1))
        await s.at(1.4)  # the actual answer
        await s.send_media(tone(0.2, freq=660))

    gateway = ScriptedGateway(behaviour=behaviour)
    url = await serve(gateway)
    result = await place_call(url, CallScript(tone(0.4, freq=250) + silence(1.4), trailing_silence_s=0))
    (turn,) = result.turns
    assert turn.speech_end == pytest.approx(0.4)
    assert turn.response_latency == pytest.approx(1.0, abs=0.03)
    assert turn.playout_latency == pytest.approx(1.0, abs=0.03)


async def test_writes_a_stereo_recording(tmp_path) -> None:
    path = tmp_path / "call.wav"
    write_stereo_wav(path, tone(0.5), tone(0.25, freq=660), RATE)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, RATE, 4000)
        frames = np.frombuffer(w.readframes(4000), "<i2").reshape(-1, 2)
    assert np.array_equal(frames[:, 0], np.frombuffer(tone(0.5), "<i2"))
    assert not frames[2000:, 1].any()  # the shorter track is padded with silence


# --- the gateway ending the call, and bad messages ---


async def test_gateway_closing_first_ends_the_call_and_bad_messages_are_recorded(serve) -> None:
    async def behaviour(s: Session) -> None:
        await s.at(0.1)
        await s.ws.send_bytes(b"\x00\x01")
        await s.ws.send_text("{not json")
        await s.ws.send_text('{"event":"dance"}')
        await s.ws.send_text(media_message("MZother", b"\xff" * 160))
        await s.ws.send_text(json.dumps({"event": "stop", "streamSid": s.stream_sid}))
        await s.send_media(tone(0.1))
        await s.at(0.5)
        await s.ws.close(code=1000)

    gateway = ScriptedGateway(behaviour=behaviour)
    url = await serve(gateway)
    result = await place_call(url, CallScript(silence(0.2), hang_up=False, max_duration_s=5))

    assert result.closed_by == "gateway" and result.close_code == 1000
    assert 0.45 < result.duration_s < 0.7
    assert result.bad_messages == 5 and result.media_frames_received == 5
    kinds = [e.kind for e in result.events]
    assert kinds.count("bad_message") == 4 and kinds.count("unexpected") == 1 and kinds[-1] == "closed"
    assert not gateway.sessions[0].messages("stop")  # the caller did not hang up
    assert not gateway.errors


async def test_what_the_caller_never_said_is_no_turn_when_the_gateway_hangs_up_first(serve) -> None:
    async def behaviour(s: Session) -> None:
        await s.at(1.0)
        await s.ws.close(code=1000)  # in the caller's pause: its second utterance is never said

    url = await serve(ScriptedGateway(behaviour=behaviour))
    script = CallScript(tone(0.4) + silence(1.2) + tone(0.6), hang_up=False, max_duration_s=5)
    result = await place_call(url, script)
    assert result.closed_by == "gateway"
    assert len(result.turns) == 1 and result.turns[0].speech_end < 1.0, result.turns
    assert "caller line 2" not in summarize(result)


async def test_no_hang_up_gives_up_after_max_duration(serve) -> None:
    gateway = ScriptedGateway()
    url = await serve(gateway)
    result = await place_call(url, CallScript(silence(0.1), hang_up=False, max_duration_s=0.3))
    assert result.closed_by == "caller" and result.media_frames_sent == 15
    assert any(e.kind == "timeout" for e in result.events)
    assert gateway.sessions[0].messages("stop")


# --- reading a finished call ---


def turn(index: int, start: float, end: float, latency: float | None) -> Turn:
    return Turn(
        index, start, end, latency, None if latency is None else latency + 0.01, 1.0 if latency else 0.0
    )


def recorded(
    events: list[Event], turns: tuple[Turn, ...] | list[Turn] = (), duration_s: float = 10.0
) -> CallResult:
    return CallResult(
        call_sid="CA1", stream_sid="MZ1", twiml="", stream_url="", custom_parameters={}, heard=b"", sent=b"",
        events=events, turns=list(turns), barge_ins=[], unanswered_barge_ins=[], mark_round_trips=[],
        close_code=1000, closed_by="caller", media_frames_sent=500, media_frames_received=0,
        media_bytes_received=0, late_frames_sent=7, bad_messages=0, duration_s=duration_s,
    )  # fmt: skip


def media(t: float, seconds: float) -> Event:
    return Event(t, "media", {"bytes": round(seconds * RATE)})


def test_a_pause_the_agent_leaves_unanswered_is_inside_one_caller_line() -> None:
    turns = [
        turn(0, 1.0, 2.0, 0.8),
        turn(1, 5.0, 6.0, None),  # a 0.56 s pause, unanswered: the same line goes on
        turn(2, 6.56, 8.0, 0.7),
        turn(3, 12.0, 13.0, None),  # a 2 s silence the agent left unanswered: a turn of its own
        turn(4, 15.0, 16.0, 0.5),
    ]
    lines = caller_lines(turns)
    assert [(line.start, line.end) for line in lines] == [(1.0, 2.0), (5.0, 8.0), (12.0, 13.0), (15.0, 16.0)]
    assert lines[1].pauses == (pytest.approx(0.56),) and lines[1].response_latency == 0.7
    assert lines[2].response_latency is None and lines[2].pauses == ()
    text = summarize(recorded([], turns))
    assert "caller line 2 (5.00-8.00 s, pause of 0.56 s inside (under 1.0 s)): response 700 ms" in text
    assert "caller line 3 (12.00-13.00 s): response no answer" in text
    assert "caller pacing: 7 of 500 frames late (1.4%" in text


def test_the_agents_speech_is_rebuilt_as_played_cut_off_or_not() -> None:
    events = [
        media(0.51, 0.4),
        media(0.6, 0.4),
        media(0.7, 0.4),  # one greeting, arriving ahead of its playout
        media(2.5, 1.0),
        media(2.6, 1.0),  # an answer...
        Event(2.9, "barge_in", {"buffered_s": 1.6}),
        Event(3.1, "clear", {"flushed_s": 1.4}),  # ...cut off 0.58 s in
        media(4.0, 0.2),
        media(4.4, 0.2),  # a dry spell of 0.2 s inside one speech
        Event(6.0, "barge_in", {"buffered_s": 0.2}),  # over the last 0.26 s of an answer: no clear needed
        media(5.0, 1.26),
        media(8.0, 3.0),
        Event(8.5, "barge_in", {"buffered_s": 2.5}),  # talked over, never cleared; the call ends first
    ]
    result = recorded(sorted(events, key=lambda e: e.t), duration_s=10.0)
    greeting, answer, dry, last, unended = agent_speech(result)
    assert (greeting.start, greeting.end, greeting.received_s) == (
        0.52,
        pytest.approx(1.72),
        pytest.approx(1.2),
    )
    assert not greeting.cut_off
    assert (answer.start, answer.cleared_at, answer.flushed_s) == (2.5, 3.1, 1.4)
    assert answer.heard_s == pytest.approx(0.6) and answer.cut_off
    assert (dry.start, dry.end) == (4.0, pytest.approx(4.6))
    assert (last.start, last.end) == (5.0, pytest.approx(6.26))
    assert unended.call_ended and unended.heard_s == pytest.approx(2.0)
    cleared, short, ignored = overlaps(result)
    assert cleared.verdict() == "cleared" and cleared.cleared_after == pytest.approx(0.2)
    assert short.verdict() == "ended by itself" and short.agent_went_on_s == pytest.approx(0.26)
    assert ignored.verdict() == "not cleared" and ignored.agent_went_on_s == pytest.approx(1.5)
    assert Overlap(1.0, 1.6, 1.6).verdict() == "not cleared"  # a clear, but too late
    text = summarize(result)
    assert "2.90 s: cleared after 200 ms" in text
    assert "6.00 s: over the agent's last 0.26 s, which ended by itself" in text
    assert "8.50 s: NOT cleared: the agent played on for 1.50 s" in text


# --- caller speech segmentation ---


def test_segments_caller_speech_with_hangover() -> None:
    pcm = tone(0.5) + silence(0.1) + tone(0.3) + silence(0.6) + tone(0.2) + silence(0.3)
    assert segment_speech(pcm, offset_s=1.0) == [
        (pytest.approx(1.0), pytest.approx(1.9)),
        (pytest.approx(2.5), pytest.approx(2.7)),
    ]
    assert segment_speech(silence(1.0)) == []
    assert segment_speech(silence(0.5) + tone(0.02) + silence(0.5)) == []  # a click is not an utterance


# --- WAV loading ---


def dominant_hz(pcm: bytes) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("rate", "channels", "dtype"),
    [
        (16000, 2, np.int16),
        (44100, 1, np.int16),
        (48000, 1, np.float32),
        (8000, 1, np.uint8),
        (22050, 2, np.int32),
    ],
)
def test_load_wav_mixes_to_mono_8k(tmp_path, rate: int, channels: int, dtype: Any) -> None:
    t = np.arange(rate) / rate
    wave_ = 0.5 * np.sin(2 * np.pi * 1000 * t)
    scale = {np.int16: 32767, np.int32: 2**31 - 1, np.float32: 1.0}
    data = np.round(wave_ * 127 + 128) if dtype is np.uint8 else wave_ * scale[dtype]
    data = data.astype(dtype)
    if channels == 2:
        data = np.stack([data, data], axis=1)  # same signal on both sides: the mix keeps its level
    path = tmp_path / "in.wav"
    scipy.io.wavfile.write(path, rate, data)

    pcm = load_wav(path)
    assert len(pcm) == 2 * RATE
    assert dominant_hz(pcm) == pytest.approx(1000, abs=2)
    assert rms_between(pcm, 0.1, 0.9) == pytest.approx(0.5 * 32768 / np.sqrt(2), rel=0.03)


def test_a_stereo_recording_gives_the_caller_its_left_channel_only(tmp_path) -> None:
    # `gateway demo` and --record-stereo write the caller left and what they heard right: mixed, the agent's
    # own voice would go back to it as the caller's
    t = np.arange(RATE) / RATE
    caller, agent = 0.5 * np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 600 * t)
    path = tmp_path / "call.wav"
    scipy.io.wavfile.write(path, RATE, (np.stack([caller, agent], axis=1) * 32767).astype(np.int16))

    pcm, channels = load_caller_wav(path)
    assert channels == 2 and dominant_hz(pcm) == pytest.approx(1000, abs=2)
    assert rms_between(pcm, 0.1, 0.9) == pytest.approx(0.5 * 32768 / np.sqrt(2), rel=0.03)
    mono = tmp_path / "mono.wav"
    scipy.io.wavfile.write(mono, RATE, (caller * 32767).astype(np.int16))
    assert load_caller_wav(mono)[1] == 1 and load_caller_wav(mono)[0] == load_wav(mono)


def test_call_command_arguments() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_call_arguments(parser)
    args = parser.parse_args(
        [
            "--url",
            "http://h:1",
            "--audio",
            "c.wav",
            "--dtmf",
            "1.5:1,3:#",
            "--no-hang-up",
            "--record",
            "x.wav",
        ]
    )
    assert args.audio == "c.wav"
    assert (args.url, args.dtmf, args.no_hang_up, args.record) == ("http://h:1", "1.5:1,3:#", True, "x.wav")


async def test_a_failing_progress_callback_still_releases_the_socket(serve) -> None:
    gateway = ScriptedGateway()
    url = await serve(gateway)

    def explode(event: Any) -> None:
        if event.kind == "start":
            raise RuntimeError("demo printer broke")

    with pytest.raises(RuntimeError, match="demo printer broke"):
        await place_call(url, CallScript(silence(5.0)), on_event=explode)
    # The gateway sees the socket close at once, not after the 5 s script.
    await asyncio.wait_for(gateway.sessions[0].disconnected.wait(), 1)
