"""The Vonage and Plivo lines in memory: the neutral events they make of each carrier's stream, the frames
and commands they send, marks released once whatever the carrier answers, and our side's hang-up through
the carrier's API (never after the caller left, a transfer or a refusal)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from starlette.websockets import WebSocketState

from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, Played, Started
from gateway.plivo import protocol as pp
from gateway.plivo.line import PlivoLine
from gateway.vonage import protocol as vp
from gateway.vonage.line import VonageLine


class FakeSocket:
    """A Starlette WebSocket as a line uses it: messages to receive (text, or bytes for binary frames), and
    what it was sent."""

    def __init__(self, incoming: list[str | bytes], query: dict[str, str] | None = None) -> None:
        self.incoming = incoming
        self.query_params = query or {}
        self.sent: list[str | bytes] = []
        self.application_state = WebSocketState.CONNECTED
        self.closed: tuple[int, str] | None = None

    async def receive(self) -> dict[str, Any]:
        if not self.incoming:
            return {"type": "websocket.disconnect"}
        message = self.incoming.pop(0)
        kind = "bytes" if isinstance(message, bytes) else "text"
        return {"type": "websocket.receive", kind: message}

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.application_state = WebSocketState.DISCONNECTED


class FakeControl:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def hang_up(self, call: str) -> bool:
        self.calls.append(("hang_up", call))
        return True

    async def transfer(self, call: str, *args: str) -> bool:
        self.calls.append(("transfer", call, *args))
        return True


CALLER = np.arange(320, dtype="<i2").tobytes()  # 20 ms at 16 kHz


async def test_the_vonage_line_reads_the_stream_and_plays_whole_frames_with_notify_marks():
    headers = {"uuid": "u-1", "from": "15550001111", "to": "447700900000", "token": "t.o.k"}
    ws = FakeSocket(
        [
            vp.connected_message(headers),
            CALLER,
            b"\x01\x02\x03",  # half a sample: skipped
            vp.dtmf_message("9"),
            vp.connected_message(headers),  # a second one: skipped
        ]
    )
    control = FakeControl()
    line = VonageLine(ws, control)  # type: ignore[arg-type]
    started = await line.receive()
    assert started == Started(
        "u-1", caller="+15550001111", called="+447700900000", parameters=headers, carrier="vonage"
    )
    assert line.audio == LineAudio(16000, 16000)  # no narrowband resampler either way
    assert await line.receive() == CallerAudio(CALLER)
    assert await line.receive() == Keypress("9")
    assert await line.receive() == Ended("closed") and line.bad_messages == 2

    agent = np.arange(800, dtype="<i2").tobytes()  # 50 ms: two frames and 10 ms over
    await line.play(agent)
    await line.mark("turn-1")  # the 10 ms remainder goes out first, padded
    frames, notify = ws.sent[:3], ws.sent[3]
    assert frames == [agent[:640], agent[640:1280], agent[1280:] + bytes(320)]
    assert json.loads(notify) == {"action": "notify", "payload": {"mark": "turn-1"}}

    await line.close()  # the caller already left: no hang-up through the API
    assert control.calls == [] and ws.closed == (1000, "")


async def test_vonage_marks_come_back_on_notify_and_at_once_on_a_clear():
    ws = FakeSocket([vp.connected_message({"uuid": "u-1"})])
    control = FakeControl()
    line = VonageLine(ws, control)  # type: ignore[arg-type]
    await line.receive()
    for name in ("a", "b", "c"):
        await line.mark(name)
    ws.incoming += [
        vp.notified_message({"mark": "b"}),
        vp.cleared_message(),
        vp.notified_message({"mark": "c"}),
    ]
    assert [await line.receive(), await line.receive()] == [Played("a"), Played("b")]
    await line.play(bytes(100))
    await line.clear()  # c was in the buffer: released by the clear, its late notify ignored
    assert json.loads(ws.sent[-1]) == {"action": "clear"}
    assert await line.receive() == Played("c")
    ws.incoming.append(vp.dtmf_message("1"))
    assert await line.receive() == Keypress("1")  # the cleared and late notify were skipped quietly
    await line.mark("d")
    assert ws.sent[-1] == vp.notify_message("d")  # the 100 bytes before the clear were dropped, not padded
    await line.close()  # our side ends the call: hung up through the Voice API
    assert control.calls == [("hang_up", "u-1")]


async def test_a_transferred_vonage_call_is_not_hung_up_after_the_transfer():
    ws = FakeSocket([vp.connected_message({"uuid": "u-1", "to": "447700900000"})])
    control = FakeControl()
    line = VonageLine(ws, control)  # type: ignore[arg-type]
    await line.receive()
    assert await line.transfer("+15550003333")
    await line.close()
    assert control.calls == [("transfer", "u-1", "+15550003333", "+447700900000")]


async def test_the_plivo_line_reads_the_stream_and_sends_play_checkpoint_and_clear():
    sender = pp.PlivoSender("s-1")
    query = {"call": "c-1", "token": "t.o.k", "from": "15550001111", "to": "14155550123"}
    ws = FakeSocket(
        [
            sender.start("c-1", "MA1"),
            sender.media(CALLER, 0),
            json.dumps({"event": "media", "streamId": "other", "media": {"payload": ""}}),
            sender.dtmf("#", 20),
            sender.played("m-2"),
        ],
        query,
    )
    control = FakeControl()
    line = PlivoLine(ws, control, "https://voice.example.com")  # type: ignore[arg-type]
    started = await line.receive()
    assert started == Started(
        "c-1",
        "s-1",
        "MA1",
        caller="+15550001111",
        called="+14155550123",
        parameters={"token": "t.o.k", "from": "15550001111", "to": "14155550123"},
        carrier="plivo",
    )
    assert await line.receive() == CallerAudio(CALLER)
    assert await line.receive() == Keypress("#")  # the other stream's media was skipped
    await line.play(CALLER)
    await line.mark("m-1")
    await line.mark("m-2")
    play, first, second = (json.loads(m) for m in ws.sent)
    assert base64.b64decode(play["media"]["payload"]) == CALLER and play["media"]["sampleRate"] == 16000
    assert (first, second["name"]) == ({"event": "checkpoint", "streamId": "s-1", "name": "m-1"}, "m-2")
    assert [await line.receive(), await line.receive()] == [Played("m-1"), Played("m-2")]
    assert await line.receive() == Ended("closed") and line.bad_messages == 1
    assert await line.transfer("+15550003333")
    await line.close()  # transferred: not hung up
    assert control.calls == [
        ("transfer", "c-1", "https://voice.example.com/plivo/transfer?to=%2B15550003333")
    ]


async def test_a_plivo_stream_that_is_not_l16_at_16k_is_not_taken_and_a_refusal_is_not_hung_up():
    narrow = json.loads(pp.PlivoSender("s-1").start("c-1", "MA1", rate=8000))
    ws = FakeSocket([json.dumps(narrow)], {"call": "c-1"})
    control = FakeControl()
    line = PlivoLine(ws, control)  # type: ignore[arg-type]
    assert await line.receive() == Ended("closed") and line.bad_messages == 1
    await line.close("no stream token")
    assert control.calls == [] and ws.closed == (1008, "no stream token")
