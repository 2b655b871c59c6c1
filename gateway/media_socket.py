"""The carriers' media WebSockets, served with one layer less per frame than ASGI's.

Every 20 ms frame of every call crosses the WebSocket twice. Through ASGI, uvicorn wraps each message in a
dict, puts it on an `asyncio.Queue`, stops reading the socket until the app has taken it and starts again
after (two `epoll_ctl` calls a frame), and Starlette unwraps it; each send goes the same way back. A
carrier's line (`gateway.socket_line`) needs none of that: it reads messages one by one and writes them.

`MediaSocket` is uvicorn's own Sans-I/O WebSocket protocol (`websockets-sansio`) with a direct way for the
line, offered in the ASGI scope as the extension `gateway.media`. The handshake, the app's routing and
authentication, keepalive pings and closing stay uvicorn's and Starlette's; once the line `take`s the
socket, each message goes from the parser into a deque the line reads, and a send is written at once
(waiting only while the transport's buffer is full). Reading pauses only when the line falls
`BACKLOG` messages behind. Anything that is not a line (the console, a test's client) keeps plain ASGI.

Once the handshake's request is in, the socket also splits what it reads into frames itself
(`gateway.ws_frames`): a whole, unfragmented data frame (every frame of audio) is unmasked and delivered
here; any other frame (a ping, a close, a fragment, anything websockets must judge) goes to websockets'
parser whole, so that the parser always stands between two frames and keeps the connection's state.

Measured in BENCHMARKS.md (issue 21, "The media socket without ASGI's layers").
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import State

from gateway.ws_frames import MASKED, WHOLE_BINARY, WHOLE_TEXT, frame_bounds, unmasked

EXTENSION = "gateway.media"
# Messages received and not yet read before the socket stops reading (about a second of 20 ms frames), or
# their bytes (a peer sending large messages): the carrier's own send buffer then fills, as it would behind
# a slow reader, and what a connection holds stays bounded.
BACKLOG = 50
BACKLOG_BYTES = 256 * 1024


# What this builds on in uvicorn's protocol (uvicorn >= 0.54): should a release rename any of it, the gateway
# refuses to start, or the connection to open, instead of hanging a line that waits for messages.
_HOOKS = ("handle_connect", "send_receive_event_to_app", "handle_close", "handle_parser_exception")
_STATE = (
    "frames",
    "curr_msg_data_type",
    "queue",
    "read_paused",
    "writable",
    "close_sent",
    "disconnected",
    "conn",
)
_UPDATE = "uvicorn's websockets-sansio protocol has changed: gateway.media_socket needs updating"
if missing := [
    name for name in (*_HOOKS, "shutdown", "data_received") if not hasattr(WebSocketsSansIOProtocol, name)
]:
    raise ImportError(f"{_UPDATE} (no {', '.join(missing)})")


class MediaSocket(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol, with `take`, `receive_message` and `send_now` for a line."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if missing := [name for name in _STATE if not hasattr(self, name)]:
            raise RuntimeError(f"{_UPDATE} (no {', '.join(missing)})")
        self._inbox: deque[str | bytes] | None = None  # None until a line takes the socket
        self._inbox_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._backlog_paused = False
        # Frames are split here once the request is in (None: not yet; False: never, websockets reads all).
        self._splits: bool | None = None
        self._unread = bytearray()  # the start of a frame not yet whole
        self._owed = 0  # bytes of a frame handed to websockets before all of it had come
        self._failed = False  # a frame was refused: the socket is closing

    # --- uvicorn's side ------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._splits and self._closing():
            # Our close went out since the last read (the peer's answer is on its way): websockets reads
            # everything from here on, starting with what was held of a frame.
            data = bytes(self._unread) + data
            self._unread = bytearray()
        if not self._splits:
            super().data_received(data)
            if self._splits is None:
                # uvicorn hands over the upgrade request alone, so websockets' parser now waits for the
                # first frame's first byte; anything else (a request in pieces) leaves websockets every byte.
                self._splits = data.endswith(b"\r\n\r\n") and not self.conn.reader.buffer
            return
        if self._owed:  # the rest of a frame websockets has begun to read
            part = data[: self._owed]
            self._owed -= len(part)
            super().data_received(part)
            data = data[len(part) :]
            if self._closing():
                self._to_websockets(data)
                return
            if not data:
                return
        unread = self._unread
        if unread:
            unread += data  # grown in place: a large frame coming in many reads is not copied each time
            buf: bytes | bytearray = unread
        else:
            buf = data
        pos, size = 0, len(buf)
        conn = self.conn
        while (bounds := frame_bounds(buf, pos)) is not None:
            start, end = bounds
            first = buf[pos]
            direct = (
                (first == WHOLE_TEXT or first == WHOLE_BINARY)
                and buf[pos + 1] & MASKED
                and conn.state is State.OPEN
                and conn.current_size is None  # not inside a fragmented message
                and (conn.max_message_size is None or end - start <= conn.max_message_size)
            )
            if end > size:  # not all here yet
                if direct:
                    break  # kept until it is whole
                # websockets judges it from its header (a control frame too long, a message too large)
                self._owed = end - size
                self._unread = bytearray()
                super().data_received(bytes(buf[pos:]))
                return
            if direct:
                self.curr_msg_data_type = "text" if first == WHOLE_TEXT else "bytes"
                self.frames = [unmasked(buf, start, end)]
                self.send_receive_event_to_app()
            else:
                super().data_received(bytes(buf[pos:end]))
                if self._closing():
                    self._unread = bytearray()
                    self._to_websockets(buf[end:])
                    return
            pos = end
        if buf is not unread or pos:
            self._unread = bytearray(buf[pos:])

    def _to_websockets(self, data: bytes | bytearray) -> None:
        """What follows once the socket is closing: websockets' to read, unless its parser has failed
        (it discards everything after; uvicorn would report the failure a second time)."""
        if data and self.conn.parser_exc is None:
            super().data_received(bytes(data))

    def _closing(self) -> bool:
        """Past the open state: from here on, websockets takes every byte as it comes, as it would have."""
        if self.conn.state is State.OPEN or self.conn.state is State.CONNECTING:
            return False
        self._splits, self._owed = False, 0
        return True

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None: the handshake was refused before the app was asked
            scope["extensions"][EXTENSION] = self

    def send_receive_event_to_app(self) -> None:
        inbox = self._inbox
        if inbox is None:
            super().send_receive_event_to_app()
            return
        frames = self.frames
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self.frames = []
        if self.close_sent:
            return  # past our close: only the peer's close reply is still read
        message: str | bytes
        if self.curr_msg_data_type == "text":
            try:
                message = data.decode()
            except UnicodeDecodeError:
                self.logger.warning("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        else:
            message = bytes(data)
        inbox.append(message)
        self._inbox_bytes += len(message)  # characters of a text: the same measure when it is read
        if not self._backlog_paused and (len(inbox) >= BACKLOG or self._inbox_bytes >= BACKLOG_BYTES):
            self._backlog_paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._end()

    def handle_close(self, event: Frame) -> None:
        super().handle_close(event)
        self._end()

    def handle_parser_exception(self) -> None:
        if self._failed:  # reported once: the socket is closed (a read may hold more than one bad frame)
            return
        self._failed = True
        super().handle_parser_exception()
        self._end()

    def shutdown(self) -> None:
        super().shutdown()
        self._end()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.close_sent and self._backlog_paused:
            # Our close is out: the peer's answer must be read (uvicorn resumes only a pause of its own), or
            # the connection would linger until uvicorn's close timeout.
            self._backlog_paused = False
            self.transport.resume_reading()

    def _end(self) -> None:
        self._ended = True
        self.writable.set()  # a send waiting for room learns at once that there is no socket left
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the line's side -----------------------------------------------------------------------------------

    def take(self) -> None:
        """From now on, messages go to `receive_message`, not to ASGI's `receive` (which has had the
        handshake). Messages already queued for ASGI come along, in order."""
        if self._inbox is not None:
            return
        inbox: deque[str | bytes] = deque()
        while not self.queue.empty():
            message = self.queue.get_nowait()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                data = text if text is not None else message.get("bytes") or b""
                inbox.append(data)
                self._inbox_bytes += len(data)
            elif message["type"] == "websocket.disconnect":
                self._ended = True
        self._inbox = inbox
        if self.read_paused:  # uvicorn stopped reading for the message it queued: the deque takes over
            self.read_paused = False
            self.transport.resume_reading()

    async def receive_message(self) -> str | bytes | None:
        """The peer's next message; None once the socket has closed (and every message before was read)."""
        inbox = self._inbox
        assert inbox is not None, "take() the socket first"
        while not inbox:
            if self._ended:
                return None
            # A fresh future per wait: a wait that was cancelled (a timeout) cancelled its future with it.
            self._waiter = waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        message = inbox.popleft()
        self._inbox_bytes -= len(message)
        if self._backlog_paused and len(inbox) < BACKLOG // 2 and self._inbox_bytes < BACKLOG_BYTES // 2:
            self._backlog_paused = False
            self.transport.resume_reading()
        return message

    def send_now(self, message: str | bytes) -> bool:
        """Write a message if the transport takes it now; False while its buffer is full (then wait for
        `writable` and try again). Raises ConnectionError once the socket is closed or closing."""
        if self._ended or self.disconnected or self.close_sent:
            raise ConnectionError("the media socket is closed")
        if not self.writable.is_set():
            return False
        conn = self.conn
        try:
            if isinstance(message, str):
                conn.send_text(message.encode())
            else:
                conn.send_binary(message)
        except InvalidState:  # closing: the peer's close came in this very read
            raise ConnectionError("the media socket is closing") from None
        self.transport.write(b"".join(conn.data_to_send()))
        return True
