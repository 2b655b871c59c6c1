"""`gateway.media_socket`: the line's direct way in and out of uvicorn's Sans-I/O WebSocket protocol, driven
byte by byte from a websockets client core, with a recording transport (no sockets)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import uvicorn
from starlette.websockets import WebSocket
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from gateway import media_socket
from gateway.audio import pcm16_to_ulaw
from gateway.call.line import CallerAudio, Ended, LineClosed, Started
from gateway.media_socket import EXTENSION, MediaSocket
from gateway.twilio.line import TwilioLine
from gateway.twilio.protocol import TwilioSender


class RecordingTransport(asyncio.Transport):
    """What the protocol writes, and whether it reads."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.reading = True
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Peer:
    """A carrier's end of one media socket: a websockets client core and the server protocol under test,
    joined by the recording transport. `app` is the ASGI app the handshake reaches."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, ws=MediaSocket, log_config=None)
        config.load()
        self.server = MediaSocket(config, ServerState(), {}, _loop=asyncio.get_running_loop())
        self.transport = RecordingTransport()
        self.server.connection_made(self.transport)
        self.client = ClientProtocol(parse_uri("ws://127.0.0.1:8080/media"))
        self.client.send_request(self.client.connect())
        self.deliver()
        self._heard: list[str] = []

    async def accepted(self) -> None:
        """Once the app has accepted: the client has the handshake's answer."""
        while not self.transport.written:
            await asyncio.sleep(0)
        self.from_server()

    def from_server(self) -> None:
        self.client.receive_data(bytes(self.transport.written))
        self.transport.written.clear()
        for event in self.client.events_received():
            if isinstance(event, Frame) and event.opcode == Opcode.TEXT:
                self._heard.append(bytes(event.data).decode())

    def deliver(self) -> None:
        for data in self.client.data_to_send():
            if data:
                self.server.data_received(data)

    def says(self, *texts: str) -> None:
        for text in texts:
            self.client.send_text(text.encode())
        self.deliver()

    def closes(self) -> None:
        self.client.send_close(1000, "bye")
        self.deliver()

    def close_code(self) -> int | None:
        """The code of the close the server sent, once the client has read it (None: no close yet)."""
        self.from_server()
        return None if self.client.close_rcvd is None else self.client.close_rcvd.code

    def heard(self) -> list[str]:
        """Text messages the server wrote since the last look."""
        self.from_server()
        heard, self._heard = self._heard, []
        return heard


def line_app(before: int = 0) -> tuple[Any, asyncio.Future[MediaSocket]]:
    """An ASGI app that accepts, reads `before` messages through ASGI, and hands the socket to the test."""
    handed: asyncio.Future[MediaSocket] = asyncio.get_running_loop().create_future()
    app, websocket = starlette_app(before)

    async def hand_on() -> None:
        handed.set_result((await websocket).scope["extensions"][EXTENSION])

    asyncio.get_running_loop().create_task(hand_on())
    return app, handed


async def taken() -> tuple[Peer, MediaSocket]:
    """A peer connected through `line_app`, its socket taken by the line."""
    app, handed = line_app()
    peer = Peer(app)
    await peer.accepted()
    socket = await handed
    socket.take()
    return peer, socket


def starlette_app(before: int = 0) -> tuple[Any, asyncio.Future[WebSocket]]:
    """The same, handing the test Starlette's WebSocket, as a media route hands it to a line."""
    handed: asyncio.Future[WebSocket] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        websocket = WebSocket(scope, receive, send)
        await websocket.accept()
        for _ in range(before):
            await websocket.receive()
        handed.set_result(websocket)
        await asyncio.Event().wait()  # the line runs elsewhere; the app's task lives as long as the call

    return app, handed


async def test_messages_queued_for_asgi_before_the_line_takes_the_socket_come_along_in_order() -> None:
    app, handed = line_app(before=1)
    peer = Peer(app)
    await peer.accepted()
    peer.says("read by the app")
    socket = await handed
    peer.says("one", "two")  # queued for ASGI: the line has not taken the socket yet
    assert not peer.transport.reading  # uvicorn stops reading until ASGI's queue is read
    socket.take()
    assert peer.transport.reading
    peer.says("three")
    assert [await socket.receive_message() for _ in range(3)] == ["one", "two", "three"]


async def test_a_line_falling_behind_pauses_reading_and_catching_up_resumes_it() -> None:
    peer, socket = await taken()
    peer.says(*(f"frame {i}" for i in range(media_socket.BACKLOG - 1)))
    assert peer.transport.reading  # one read per message is not needed: a backlog is allowed
    peer.says("the last one the backlog takes")
    assert not peer.transport.reading
    for _ in range(media_socket.BACKLOG // 2 + 1):
        await socket.receive_message()
    assert peer.transport.reading


async def test_a_cancelled_wait_leaves_the_next_one_working() -> None:
    peer, socket = await taken()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await socket.receive_message()
    later = asyncio.create_task(socket.receive_message())
    await asyncio.sleep(0)
    peer.says("after the timeout")
    assert await later == "after the timeout"


async def test_the_peer_s_close_ends_the_messages_after_the_last_one_and_refuses_sends() -> None:
    peer, socket = await taken()
    waiting = asyncio.create_task(socket.receive_message())
    await asyncio.sleep(0)
    peer.says("last words")
    peer.closes()
    assert await waiting == "last words"
    assert await socket.receive_message() is None
    with pytest.raises(ConnectionError):
        socket.send_now("too late")


async def test_sends_are_written_at_once_and_wait_while_the_transport_is_full() -> None:
    app, handed = line_app()
    peer = Peer(app)
    await peer.accepted()
    socket = await handed
    assert socket.send_now('{"event": "media"}')
    assert peer.heard() == ['{"event": "media"}']
    socket.pause_writing()  # the transport's buffer is full
    assert not socket.send_now("held")
    socket.resume_writing()
    assert socket.send_now("held")
    assert peer.heard() == ["held"]


async def test_a_backlog_of_large_messages_pauses_reading_by_its_bytes() -> None:
    peer, socket = await taken()
    big = "x" * (media_socket.BACKLOG_BYTES // 2)
    peer.says(big)
    assert peer.transport.reading
    peer.says(big)
    assert not peer.transport.reading  # two messages, but a quarter of a megabyte held
    await socket.receive_message()
    await socket.receive_message()
    assert peer.transport.reading


async def test_our_close_while_reading_is_paused_reads_the_peer_s_answer() -> None:
    peer, socket = await taken()
    peer.says(*(f"frame {i}" for i in range(media_socket.BACKLOG)))
    assert not peer.transport.reading  # the line stopped reading (the call is ending)
    await socket.send({"type": "websocket.close", "code": 1000})  # what Starlette's close sends
    assert peer.transport.reading  # else the peer's close reply waits for uvicorn's 10 s close timeout


async def test_a_send_waiting_for_room_learns_at_once_that_the_socket_is_gone() -> None:
    peer, socket = await taken()
    socket.pause_writing()  # our buffer is full, and stays so: the transport flushes it before it is lost
    waiting = asyncio.create_task(socket.writable.wait())
    peer.closes()
    await asyncio.wait_for(waiting, 1.0)
    with pytest.raises(ConnectionError):
        socket.send_now("after the end")


async def test_invalid_utf8_ends_the_messages_with_close_1007() -> None:
    peer, socket = await taken()
    peer.says("good")
    peer.client.send_text(b"\xff\xfe")
    peer.deliver()
    assert await socket.receive_message() == "good"
    assert await socket.receive_message() is None
    assert peer.close_code() == 1007


async def test_binary_messages_come_through_as_bytes() -> None:
    peer, socket = await taken()
    peer.client.send_binary(b"\x00\x01 raw audio")
    peer.deliver()
    assert await socket.receive_message() == b"\x00\x01 raw audio"


async def test_a_twilio_line_over_the_media_socket_reads_plays_and_ends() -> None:
    """The seam's events and actions through MediaSocket (not ASGI), as `gateway serve` runs a call."""
    app, handed = starlette_app()
    peer = Peer(app)
    await peer.accepted()
    line = TwilioLine(await handed)
    sender = TwilioSender("MZ" + "1" * 32)
    frame = pcm16_to_ulaw(b"\x10\x00" * 160)
    peer.says(sender.connected(), sender.start("CA" + "2" * 32, "AC" + "3" * 32, {}), sender.media(frame, 0))
    assert isinstance(await line.receive(), Started)
    audio = await line.receive()
    assert isinstance(audio, CallerAudio) and len(audio.pcm) == 320
    await line.play(b"\x00\x00" * 160)
    await line.mark("turn-1")
    heard = [json.loads(text) for text in peer.heard()]
    assert [m["event"] for m in heard] == ["media", "mark"]
    assert heard[0]["streamSid"] == sender.stream_sid
    peer.closes()
    assert isinstance(await line.receive(), Ended)
    with pytest.raises(LineClosed):
        await line.play(b"\x00\x00" * 160)


async def test_a_uvicorn_without_what_the_media_socket_builds_on_is_refused_clearly(monkeypatch) -> None:
    """Should uvicorn rename the protocol state this builds on, a connection fails with a message saying so,
    instead of a line waiting for messages that never come."""
    monkeypatch.setattr(media_socket, "_STATE", (*media_socket._STATE, "renamed_in_a_later_uvicorn"))
    app, _ = line_app()
    with pytest.raises(RuntimeError, match=r"gateway\.media_socket needs updating"):
        Peer(app)


# --- frames split by the socket itself (gateway.ws_frames), against websockets reading every byte ---------


def mixed_stream(client: ClientProtocol) -> None:
    """What a peer may send: short, 16-bit and 64-bit lengths, binary, a ping between frames, a message in
    fragments with a ping inside it, an empty message."""
    client.send_text(b'{"event": "media"}')
    client.send_text(("x" * 300).encode())
    client.send_ping(b"keepalive")
    client.send_binary(bytes(range(256)) * 300)  # 76,800 bytes: a 64-bit length
    client.send_text(b"frag", fin=False)
    client.send_ping(b"inside")
    client.send_continuation(b"mented", fin=False)
    client.send_continuation(b" message", fin=True)
    client.send_text(b"")
    client.send_text("caf\u00e9".encode())


async def read_all(chunk: int, splits: bool) -> tuple[list[str | bytes], bytes]:
    """The messages the line reads, and what the server wrote back, when the peer's bytes come `chunk` at a
    time; `splits=False`: websockets reads every byte, as before the socket split frames."""
    peer, socket = await taken()
    if not splits:
        socket._splits = False
    mixed_stream(peer.client)
    data = b"".join(peer.client.data_to_send())
    for at in range(0, len(data), chunk):
        peer.server.data_received(data[at : at + chunk])
    peer.closes()
    messages = []
    while (message := await socket.receive_message()) is not None:
        messages.append(message)
    return messages, bytes(peer.transport.written)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1000, 1 << 20])
async def test_frames_split_by_the_socket_read_as_websockets_reads_them_in_any_chunking(chunk: int) -> None:
    assert await read_all(chunk, splits=True) == await read_all(chunk, splits=False)
    messages, written = await read_all(chunk, splits=True)
    assert messages[2] == bytes(range(256)) * 300 and messages[3] == "fragmented message"
    assert messages[-2:] == ["", "caf\u00e9"]
    assert written.count(b"keepalive") == 1 and written.count(b"inside") == 1  # both pings answered


async def test_the_audio_path_s_frames_do_not_go_through_websockets_parser(monkeypatch) -> None:
    peer, socket = await taken()
    fed: list[bytes] = []
    real = socket.conn.receive_data
    monkeypatch.setattr(socket.conn, "receive_data", lambda data: (fed.append(data), real(data)))
    peer.says("one", "two")
    peer.client.send_ping(b"p")
    peer.deliver()
    assert [await socket.receive_message() for _ in range(2)] == ["one", "two"]
    assert len(fed) == 1 and fed[0][0] == 0x89 and len(fed[0]) == 7  # the ping alone, whole


async def test_a_frame_larger_than_the_limit_is_refused_from_its_header_with_1009() -> None:
    peer, socket = await taken()
    peer.says("fine")
    limit = socket.conn.max_message_size
    assert limit is not None
    header = bytes((0x81, 0x80 | 127)) + (limit + 1).to_bytes(8, "big") + b"mask"
    peer.server.data_received(header + b"only the start of it")
    assert await socket.receive_message() == "fine"
    assert await socket.receive_message() is None
    assert peer.close_code() == 1009


async def test_an_unmasked_frame_from_the_peer_is_a_protocol_error_1002() -> None:
    peer, socket = await taken()
    peer.server.data_received(bytes((0x81, 5)) + b"plain")
    assert await socket.receive_message() is None
    assert peer.close_code() == 1002


async def test_a_request_in_pieces_leaves_every_byte_to_websockets() -> None:
    app, handed = line_app()
    config = uvicorn.Config(app, ws=MediaSocket, log_config=None)
    config.load()
    server = MediaSocket(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    server.connection_made(RecordingTransport())
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8080/media"))
    client.send_request(client.connect())
    request = b"".join(client.data_to_send())
    server.data_received(request[:10])
    server.data_received(request[10:])
    assert server._splits is False
    socket = await handed
    socket.take()
    client.receive_data(bytes(server.transport.written))  # type: ignore[attr-defined]
    client.send_text(b"still read")
    for data in client.data_to_send():
        server.data_received(data)
    assert await socket.receive_message() == "still read"


async def test_after_our_close_a_frame_cut_across_reads_leaves_the_peer_s_close_answer_read() -> None:
    """The carrier sends audio until it sees our close: a frame cut in two, then its close answer, must
    still end the socket (else it lingers until uvicorn's close timeout)."""
    peer, socket = await taken()
    await socket.send({"type": "websocket.close", "code": 1000})
    peer.client.send_text(b'{"event": "media", "media": {"payload": "AAAA"}}')
    media = b"".join(peer.client.data_to_send())
    peer.server.data_received(media[:20])
    peer.from_server()  # the peer reads our close; its answer is queued
    peer.server.data_received(media[20:] + b"".join(peer.client.data_to_send()))
    assert peer.server.conn.close_rcvd is not None and peer.transport.closing


async def test_a_refused_frame_with_more_after_it_in_the_read_is_reported_once() -> None:
    app, handed = line_app()
    peer = Peer(app)
    await peer.accepted()
    socket = await handed  # not taken: ASGI's queue
    failures: list[int] = []
    report = socket.handle_parser_exception
    socket.handle_parser_exception = lambda: (failures.append(1), report())  # type: ignore[method-assign]
    peer.client.send_text(b"after it")
    socket.data_received(bytes((0x81, 5)) + b"plain" + b"".join(peer.client.data_to_send()))
    disconnects = []
    while not socket.queue.empty():
        if (message := socket.queue.get_nowait())["type"] == "websocket.disconnect":
            disconnects.append(message)
    assert len(failures) == 1 and len(disconnects) == 1


async def test_a_large_frame_coming_in_many_reads_arrives_whole() -> None:
    peer, socket = await taken()
    big = bytes(range(256)) * 200
    peer.client.send_binary(big)
    data = b"".join(peer.client.data_to_send())
    for at in range(0, len(data), 1000):
        peer.server.data_received(data[at : at + 1000])
    assert await socket.receive_message() == big
    assert not socket._unread  # nothing held once it is whole
