"""WEB_CONCURRENCY's front door: the supervisor accepts every connection and hands it to a gateway process.

Why not let the processes accept on the shared socket, as uvicorn's workers do: the kernel then gives each
connection to whichever process happens to be waiting. A call's webhook and its media stream are two
connections, so with two processes the stream landed on another process than the webhook half the time, and
the Live session that webhook had pre-warmed was closed unused (BENCHMARKS.md, issue 21: 55% of them). And
a connection went to the process idle at that instant, not to the one with the fewest calls.

So the supervisor accepts, reads the request line without taking it off the socket (`MSG_PEEK`), and passes
the socket itself to a process (`SCM_RIGHTS` over a Unix socket pair per process), which serves it as if it
had accepted it: after the hand-off nothing goes through the supervisor. The process is

* the one the path names: the webhook of process 1 answers with the stream URL `.../twilio/media/process-1`
  (`routed`), so the stream finds the Live session pre-warmed for it (and an outbound call's webhook and
  callbacks find its plan); if that process is gone or not ready, by load;
* otherwise the ready one with the least load: its calls in progress plus the connections handed to it in
  the last `RECENT_S` (a burst of webhooks comes before their streams count as calls), ties in turn.

A process says it is ready on its channel once its app has started; until one is, connections wait in the
channels. A process that closes its channel (shutting down) is handed nothing more. Requests are routed by
connection, so in this mode every HTTP response says `Connection: close` (`closing`): a proxy that pools
connections to the instance would otherwise send a routed request down a connection another process holds.

A connection that sends nothing within `PEEK_S` is handed on by load, and its process's header deadline
applies (gateway.http_guard); past `MAX_WAITING` such connections, new ones are handed on at once. The
supervisor is single-threaded: one `selectors` loop over the port, the connections not yet read and the
workers' sentinels, so forking a replacement worker never copies a lock held by another thread.

`choose` is the rule, pure and tested without sockets; `FrontDoor` is the loop around it; `adopt` is a
process's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from starlette.routing import BaseRoute, Route, WebSocketRoute

log = structlog.get_logger("gateway.dispatch")

_SEGMENT = "process-"  # the last segment of a path routed to one process: process-N
ROUTE = "/" + _SEGMENT + "{slot:int}"  # the same, as a Starlette route suffix
_ROUTED = re.compile(rb"^[A-Z]{3,7} [^ ?#]*/" + _SEGMENT.encode() + rb"(\d{1,3})(?:[/?# \r]|$)")
PEEK_BYTES = 1024  # the request line of every route the gateway has fits
PEEK_S = 1.0  # a client that has sent nothing by then is handed on by load
MAX_WAITING = 256  # connections held unread at once; beyond that, handed on unread
ACCEPTS_PER_WAKE = 64  # a burst of connections does not starve the ones already accepted
ACCEPT_PAUSE_S = 0.1  # out of file descriptors: accepting pauses (the port stays readable: no busy loop)
RECENT_S = 2.0  # a connection handed to a process counts as load this long (its call is not counted yet)
READY = b"ready"  # what a process sends on its channel once it serves


def routed(path: str, slot: int) -> str:
    """`path` routed to process `slot`: the stream URL the webhook of that process hands out."""
    return f"{path.rstrip('/')}/{_SEGMENT}{slot}"


def routed_route(route: BaseRoute) -> BaseRoute:
    """`route` at its path routed to one of several processes: for the URLs a process hands out for what it
    holds (a call's pre-warmed Live session, an outbound call's plan, the console's view of its calls)."""
    if isinstance(route, WebSocketRoute):
        return WebSocketRoute(route.path + ROUTE, route.endpoint)
    assert isinstance(route, Route)
    return Route(route.path + ROUTE, route.endpoint, methods=sorted(route.methods or ()))


def choose(head: bytes, load: Sequence[int], open_slots: Sequence[int], turn: int) -> int | None:
    """The process for a connection whose first bytes are `head` (b"" if it sent none yet): the slot its
    path names if that slot is open, else the open slot with the least load, the first at or after `turn`
    among equals. None when no slot is open. Pure."""
    if not open_slots:
        return None
    if (match := _ROUTED.match(head)) is not None and int(match[1]) in open_slots:
        return int(match[1])
    least = min(load[s] for s in open_slots)
    candidates = sorted(s for s in open_slots if load[s] == least)
    return next((s for s in candidates if s >= turn), candidates[0])


def closing(app: Any) -> Any:
    """An ASGI app whose HTTP responses close their connection (see the module's docstring)."""

    async def one_request(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def closing_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await app(scope, receive, closing_send)

    return one_request


class FrontDoor:
    """The supervisor's side: accepts on `listener`, hands each connection to a process's channel.

    `calls()` gives the calls in progress per slot (the machine's shared table, read without its lock: a
    figure a moment old is good enough, and the front door must never wait on a lock a worker holds)."""

    def __init__(self, listener: socket.socket, calls: Callable[[], Sequence[int]]) -> None:
        listener.setblocking(False)
        self._listener = listener
        self._calls = calls
        self._channels: dict[int, socket.socket] = {}
        self.ready: set[int] = set()  # slots whose process has said it serves
        self._recent: deque[tuple[float, int]] = deque()  # (when, slot) of the last RECENT_S's hand-offs
        self._recent_by_slot: dict[int, int] = {}
        self._waiting: dict[socket.socket, float] = {}  # accepted, not yet read: hand-off deadline
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        self._turn = 0
        self._resume_at: float | None = None  # accepting paused until then
        self.handed: dict[int, int] = {}  # connections handed to each slot, for the log and tests
        self.dropped = 0  # connections no process could take (closed; logged at 1, 2, 4, 8, ...)

    def local_url(self) -> str:
        """Where a process of this machine reaches the front door: the port on the loopback address of its
        family (the port may be bound to every address, which cannot be connected to)."""
        host, port = self._listener.getsockname()[:2]
        if self._listener.family == socket.AF_INET6:
            return f"http://[{'::1' if host == '::' else host}]:{port}"
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"

    def open_channel(self, slot: int) -> socket.socket:
        """A channel to the process about to be started in `slot`: returns its end (close it here once
        the process has it). Connections handed before the process reads them wait in the channel."""
        self.close_channel(slot)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self._channels[slot] = ours
        self._selector.register(ours, selectors.EVENT_READ, slot)  # READY, or the process closing it
        return theirs

    def close_channel(self, slot: int) -> None:
        """The process in `slot` is gone (or going): nothing more is handed to it."""
        self.ready.discard(slot)
        if (channel := self._channels.pop(slot, None)) is not None:
            self._selector.unregister(channel)
            channel.close()

    def forget(self) -> None:
        """In a worker just forked: close the supervisor's sockets this process inherited."""
        for sock in (self._listener, *self._channels.values(), *self._waiting):
            sock.close()
        self._selector.close()

    def close(self) -> None:
        """The supervisor stops: every connection not handed on yet is closed, and the port with them."""
        for slot in list(self._channels):
            self.close_channel(slot)
        for conn in self._waiting:
            conn.close()
        self._waiting.clear()
        self._selector.close()
        self._listener.close()

    def serve(self, timeout: float, also: Sequence[int] = ()) -> list[int]:
        """Accept and hand on for up to `timeout` seconds, or until one of the file descriptors `also` (the
        workers' sentinels) is ready; returns those that are."""
        extra = {fd: self._selector.register(fd, selectors.EVENT_READ) for fd in also}
        try:
            end = time.monotonic() + timeout
            ready: list[int] = []
            while not ready:
                now = time.monotonic()
                if now >= end:
                    break
                if self._resume_at is not None and now >= self._resume_at:
                    self._resume_at = None
                    self._selector.register(self._listener, selectors.EVENT_READ)
                wait = min([end, *self._waiting.values(), *filter(None, [self._resume_at])]) - now
                for key, _ in self._selector.select(max(0.0, wait)):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif isinstance(key.fileobj, int):
                        ready.append(key.fileobj)
                    elif key.data is not None:
                        self._heard(key.data)
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                self._expire(time.monotonic())
            return ready
        finally:
            for fd in extra:
                self._selector.unregister(fd)

    # --- the loop's steps -----------------------------------------------------------------------------

    def _heard(self, slot: int) -> None:
        """The process in `slot` wrote on its channel: it is ready, or it closed it (shutting down)."""
        try:
            message = self._channels[slot].recv(16)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        if message == READY:
            self.ready.add(slot)
        elif not message:
            self.close_channel(slot)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                conn, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the connection stays in the backlog for now
                log.error("accept_paused", error=str(exc), pause_s=ACCEPT_PAUSE_S)
                self._selector.unregister(self._listener)
                self._resume_at = time.monotonic() + ACCEPT_PAUSE_S
                return
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvicorn's own accept does
            if len(self._waiting) >= MAX_WAITING:
                self._hand(conn, b"")
                continue
            conn.setblocking(False)
            self._waiting[conn] = time.monotonic() + PEEK_S
            self._selector.register(conn, selectors.EVENT_READ)

    def _unwait(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        del self._waiting[conn]

    def _read(self, conn: socket.socket) -> None:
        """The client has sent its first bytes (or closed): hand it on by what they say."""
        self._unwait(conn)
        try:
            head = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        except OSError:
            conn.close()
            return
        if not head:  # gone before it said anything
            conn.close()
            return
        self._hand(conn, head)

    def _expire(self, now: float) -> None:
        for conn in [c for c, deadline in self._waiting.items() if deadline <= now]:
            self._unwait(conn)
            self._hand(conn, b"")

    def _hand(self, conn: socket.socket, head: bytes) -> None:
        """Pass `conn` to a process; a channel that cannot take it (its process died, its queue is full) is
        skipped for the next best. With none left the connection is closed: the client retries."""
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - RECENT_S:
            self._recent_by_slot[self._recent.popleft()[1]] -= 1
        calls = self._calls()
        load = [n + self._recent_by_slot.get(slot, 0) for slot, n in enumerate(calls)]
        slots = sorted(self.ready or self._channels)  # before any process is ready, the channels hold them
        with conn:
            while (slot := choose(head, load, slots, self._turn)) is not None:
                try:
                    socket.send_fds(self._channels[slot], [b"c"], [conn.fileno()])
                except OSError:
                    slots.remove(slot)
                    continue
                self._turn = (slot + 1) % (max(self._channels) + 1)
                self.handed[slot] = self.handed.get(slot, 0) + 1
                self._recent.append((now, slot))
                self._recent_by_slot[slot] = self._recent_by_slot.get(slot, 0) + 1
                return
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # a bounded log while every process shuts down
                log.error("connections_not_handed_on", dropped=self.dropped, processes=len(self._channels))


def adopt(
    loop: asyncio.AbstractEventLoop,
    channel: socket.socket,
    protocol: Callable[[], asyncio.Protocol],
    orphaned: Callable[[], None],
) -> Callable[[], None]:
    """A process's side: serve each connection the supervisor hands over on `channel` with `protocol`, as if
    this process had accepted it. Returns the function that stops taking them (a worker shutting down).
    `orphaned` is called if the supervisor is gone (killed: no connection will come again, and no SIGTERM):
    the worker then drains and exits rather than linger. Tells the supervisor this process is ready."""
    channel.setblocking(False)
    tasks: set[asyncio.Task[object]] = set()
    with contextlib.suppress(OSError):
        channel.send(READY)

    def take() -> None:
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(channel, 16, 8)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the supervisor is gone
                log.error("supervisor_gone", note="no more connections will come: draining, then exiting")
                stop()
                orphaned()
                return
            for fd in fds:
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                task = loop.create_task(_serve(loop, sock, protocol))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    def stop() -> None:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(channel.fileno())
        channel.close()

    loop.add_reader(channel.fileno(), take)
    return stop


async def _serve(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: Callable[[], asyncio.Protocol]
) -> None:
    try:
        await loop.connect_accepted_socket(protocol, sock)
    except OSError as exc:  # the client left while it was handed on
        log.info("handed_connection_lost", error=str(exc))
        sock.close()
