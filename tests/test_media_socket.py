"""`gateway.media_socket`: the line's direct way in and out of uvicorn's Sans-I/O WebSocket protocol, driven
byte by byte from a websockets client core, with a recording transport (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from gateway import media_socket
from gateway.media_socket import EXTENSION, MediaSocket


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
        self._deliver()
        self._heard: list[str] = []

    async def accepted(self) -> None:
        """Once the app has accepted: the client has the handshake's answer."""
        while not self.transport.written:
            await asyncio.sleep(0)
        self._from_server()

    def _from_server(self) -> None:
        self.client.receive_data(bytes(self.transport.written))
        self.transport.written.clear()
        for event in self.client.events_received():
            if isinstance(event, Frame) and event.opcode == Opcode.TEXT:
                self._heard.append(bytes(event.data).decode())

    def _deliver(self) -> None:
        for data in self.client.data_to_send():
            if data:
                self.server.data_received(data)

    def says(self, *texts: str) -> None:
        for text in texts:
            self.client.send_text(text.encode())
        self._deliver()

    def closes(self) -> None:
        self.client.send_close(1000, "bye")
        self._deliver()

    def heard(self) -> list[str]:
        """Text messages the server wrote since the last look."""
        self._from_server()
        heard, self._heard = self._heard, []
        return heard


def line_app(before: int = 0) -> tuple[Any, asyncio.Future[MediaSocket]]:
    """An ASGI app that accepts, reads `before` messages through ASGI, and hands the socket to the test."""
    handed: asyncio.Future[MediaSocket] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        for _ in range(before):
            await receive()
        handed.set_result(scope["extensions"][EXTENSION])
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
    app, handed = line_app()
    peer = Peer(app)
    await peer.accepted()
    socket = await handed
    socket.take()
    peer.says(*(f"frame {i}" for i in range(media_socket.BACKLOG - 1)))
    assert peer.transport.reading  # one read per message is not needed: a backlog is allowed
    peer.says("the last one the backlog takes")
    assert not peer.transport.reading
    for _ in range(media_socket.BACKLOG // 2 + 1):
        await socket.receive_message()
    assert peer.transport.reading


async def test_a_cancelled_wait_leaves_the_next_one_working() -> None:
    app, handed = line_app()
    peer = Peer(app)
    await peer.accepted()
    socket = await handed
    socket.take()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await socket.receive_message()
    later = asyncio.create_task(socket.receive_message())
    await asyncio.sleep(0)
    peer.says("after the timeout")
    assert await later == "after the timeout"


async def test_the_peer_s_close_ends_the_messages_after_the_last_one_and_refuses_sends() -> None:
    app, handed = line_app()
    peer = Peer(app)
    await peer.accepted()
    socket = await handed
    socket.take()
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
