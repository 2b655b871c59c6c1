"""TwilioLine without a server: Twilio's messages in, the line seam's events out, and back."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from starlette.websockets import WebSocketState
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from gateway.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.call.line import CallerAudio, Ended, Keypress, Played, Started
from gateway.live import session as live_session
from gateway.twilio.line import TwilioLine
from gateway.twilio.protocol import TwilioSender

STREAM = "MZ" + "4" * 32
CALL = "CA" + "5" * 32
ACCOUNT = "AC" + "6" * 32


class FakeWebSocket:
    """The part of Starlette's WebSocket a line uses: messages to receive, what was sent, how it closed."""

    def __init__(self, *texts: str, disconnect: bool = True) -> None:
        self.inbox = [{"type": "websocket.receive", "text": text} for text in texts]
        if disconnect:
            self.inbox.append({"type": "websocket.disconnect", "code": 1000})
        self.sent: list[dict] = []
        self.closed: tuple[int, str] | None = None
        self.application_state = WebSocketState.CONNECTED
        self.scope: dict[str, Any] = {}  # served by no MediaSocket: plain ASGI

    async def receive(self) -> dict:
        if not self.inbox:
            raise RuntimeError('Cannot call "receive" once a disconnect message has been received.')
        return self.inbox.pop(0)

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.application_state = WebSocketState.DISCONNECTED


async def events_of(line: TwilioLine, count: int) -> list:
    return [await line.receive() for _ in range(count)]


async def test_twilio_events_become_neutral_events_and_junk_is_skipped():
    twilio = TwilioSender(STREAM)
    ulaw = bytes(range(0, 256, 2))[:160]
    ws = FakeWebSocket(
        twilio.connected(),
        "not json",
        twilio.start(CALL, ACCOUNT, {"From": "+15550001111", "To": "+15550002222", "token": "t"}),
        twilio.start(CALL, ACCOUNT, {}),  # a second start on the same stream
        twilio.media(ulaw, 0),
        json.dumps({"event": "media", "streamSid": "MZother", "media": {"payload": "AAAA"}}),
        twilio.mark("turn-1"),
        twilio.dtmf("7"),
        twilio.stop(CALL, ACCOUNT),
    )
    line = TwilioLine(ws)  # type: ignore[arg-type]
    started, audio, played, key, ended = await events_of(line, 5)
    assert started == Started(
        CALL,
        STREAM,
        ACCOUNT,
        caller="+15550001111",
        called="+15550002222",
        parameters={"From": "+15550001111", "To": "+15550002222", "token": "t"},
    )
    assert audio == CallerAudio(ulaw_to_pcm16(ulaw))  # decoded once, here: the call gets PCM at 8 kHz
    assert (played, key, ended) == (Played("turn-1"), Keypress("7"), Ended("stop"))
    assert line.bad_messages == 3  # the junk, the second start, the other stream's media
    assert await line.receive() == Ended("stop")  # and again, without reading a socket that has ended


async def test_a_closed_socket_ends_the_line_for_good():
    line = TwilioLine(FakeWebSocket())  # type: ignore[arg-type]
    assert await line.receive() == Ended("closed")
    assert await line.receive() == Ended("closed")  # a second receive would raise in Starlette


async def test_actions_become_twilio_messages_for_this_stream():
    twilio = TwilioSender(STREAM)
    ws = FakeWebSocket(twilio.start(CALL, ACCOUNT, {}), disconnect=False)
    line = TwilioLine(ws)  # type: ignore[arg-type]
    await line.receive()
    pcm = b"\x00\x10" * 160
    await line.play(pcm)
    await line.mark("turn-1")
    await line.clear()
    media, mark, clear = ws.sent
    assert media["event"] == "media" and media["streamSid"] == STREAM
    assert media["media"]["payload"] == base64.b64encode(pcm16_to_ulaw(pcm)).decode()
    assert mark == {"event": "mark", "streamSid": STREAM, "mark": {"name": "turn-1"}}
    assert clear == {"event": "clear", "streamSid": STREAM}


@pytest.mark.parametrize(("refusal", "close"), [(None, (1000, "")), ("token reused", (1008, "token reused"))])
async def test_close_hangs_up_or_refuses_with_the_reason(refusal, close):
    ws = FakeWebSocket(disconnect=False)
    line = TwilioLine(ws)  # type: ignore[arg-type]
    await line.close(refusal)
    assert ws.closed == close
    await line.close()  # closing twice is harmless
    assert ws.closed == close


async def test_a_transfer_needs_rest_credentials():
    line = TwilioLine(FakeWebSocket())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="credentials"):
        await line.transfer("+15550009999")


# --- what a Live close means (the session's typed errors) ---


def closed(code: int, reason: str = "why") -> ConnectionClosed:
    return ConnectionClosed(Close(code, reason), None)


@pytest.mark.parametrize(
    ("code", "resuming", "expected"),
    [
        (1007, False, live_session.LiveConfigRejected),
        (1008, False, live_session.LiveConfigRejected),
        (1007, True, live_session.LiveConfigRejected),
        (1008, True, live_session.LiveHandleRejected),  # the handle is unknown or expired
        (1011, False, live_session.LiveUnreachable),
        (1011, True, live_session.LiveUnreachable),
    ],
)
def test_a_close_in_answer_to_a_setup(code, resuming, expected):
    error = live_session._setup_error(closed(code), resuming)
    assert type(error) is expected and error.code == code and error.reason == "why"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1007, live_session.LiveConfigRejected),  # mid-call: the configuration, or an expired key
        (1008, live_session.LiveConnectionLost),  # seen around tool calls: a new connection may carry on
        (1011, live_session.LiveConnectionLost),
        (1006, live_session.LiveConnectionLost),
    ],
)
def test_a_close_of_a_set_up_connection(code, expected):
    assert type(live_session._running_error(closed(code))) is expected
