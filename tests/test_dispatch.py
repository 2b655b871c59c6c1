"""The supervisor's front door (WEB_CONCURRENCY > 1): which process a connection goes to, and the hand-off.

`choose` is pure; the `FrontDoor` tests use real sockets and real socket pairs in this process (no workers),
receiving the handed sockets as a worker does; `tests/test_processes.py` runs it with `gateway serve`.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway import dispatch
from gateway.dispatch import FrontDoor, choose, routed

STREAM = b"GET /twilio/media/process-1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
WEBHOOK = b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_routed_path_goes_to_its_process_while_it_is_open_and_anything_else_to_the_fewest_calls():
    assert routed("wss://h/twilio/media", 1) == "wss://h/twilio/media/process-1"
    assert choose(STREAM, [0, 9, 0], [0, 1, 2], turn=0) == 1  # named: taken even with the most calls
    assert choose(STREAM, [0, 9, 0], [0, 2], turn=2) == 2  # its process is gone: by load
    assert choose(WEBHOOK, [3, 1, 2], [0, 1, 2], turn=0) == 1
    # Equals in turn, so a burst of webhooks before any call has started is spread.
    assert [choose(WEBHOOK, [0, 0, 0], [0, 1, 2], turn=t) for t in (0, 1, 2, 3)] == [0, 1, 2, 0]
    assert choose(b"", [0, 0], [0, 1], turn=1) == 1  # nothing read yet: by load
    assert choose(WEBHOOK, [0, 0], [], turn=0) is None
    # Only a whole last path segment names a process; a query or a longer name does not confuse it.
    assert choose(b"GET /twilio/media/process-1?x=1 HTTP/1.1\r\n", [5, 0], [0, 1], turn=0) == 1
    assert choose(b"GET /twilio/media/process-12 HTTP/1.1\r\n", [0, 5], [0, 1], turn=1) == 0
    assert choose(b"GET /x/process-1x HTTP/1.1\r\n", [0, 5], [0, 1], turn=1) == 0
    assert choose(b"GET /x?next=/process-1 HTTP/1.1\r\n", [0, 5], [0, 1], turn=1) == 0  # in a query


def closed(client: socket.socket) -> bool:
    """The server closed `client`'s connection (a reset: the request it sent was never read)."""
    client.settimeout(2)
    try:
        return client.recv(64) == b""
    except ConnectionResetError:
        return True


class Door:
    """A front door on a loopback port with `slots` channels, and their workers' ends."""

    def __init__(self, slots: int, calls: list[int] | None = None) -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        self.address = listener.getsockname()
        self.calls = calls or [0] * slots
        self.door = FrontDoor(listener, lambda: self.calls)
        self.ends = {slot: self.door.open_channel(slot) for slot in range(slots)}
        for end in self.ends.values():
            end.settimeout(2)

    def connect(self, first: bytes = b"") -> socket.socket:
        client = socket.create_connection(self.address)
        if first:
            client.sendall(first)
        return client

    def serve(self, seconds: float = 0.1) -> None:
        self.door.serve(seconds)

    def received(self, slot: int) -> list[socket.socket]:
        """The sockets handed to `slot` so far, as its worker receives them."""
        end, out = self.ends[slot], list[socket.socket]()
        end.setblocking(False)
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(end, 16, 8)
            except BlockingIOError:
                return out
            out += [socket.socket(fileno=fd) for fd in fds]


def test_the_handed_socket_is_the_clients_with_its_request_unread(tmp_path):
    door = Door(2)
    client = door.connect(STREAM)
    door.serve()
    assert door.received(0) == []
    (handed,) = door.received(1)
    handed.settimeout(2)
    assert handed.recv(4096) == STREAM  # peeked, not taken: the worker's parser reads it whole
    handed.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    assert client.recv(4096).startswith(b"HTTP/1.1 101")
    assert handed.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    for s in (client, handed):
        s.close()
    door.door.close()


def test_webhooks_spread_by_calls_and_a_silent_client_is_handed_on_after_the_peek_deadline(monkeypatch):
    monkeypatch.setattr(dispatch, "PEEK_S", 0.5)
    door = Door(2, calls=[4, 1])
    clients = [door.connect(WEBHOOK) for _ in range(3)]
    silent = door.connect()
    door.serve(0.1)
    assert (len(door.received(0)), len(door.received(1))) == (0, 3)  # the fewest calls
    # Those three count as load until their calls do: with no calls anywhere, process 0 takes the next
    # three, then they are equal and take turns.
    door.calls[:] = [0, 0]
    more = [door.connect(WEBHOOK) for _ in range(4)]
    door.serve(0.1)
    assert len(door.received(0)) + len(door.received(1)) == 4
    assert door.door.handed == {0: 3, 1: 4}
    door.serve(0.6)
    assert [len(door.received(s)) for s in (0, 1)].count(1) == 1  # the silent one, after 0.5 s
    for s in (*clients, *more, silent):
        s.close()
    door.door.close()


def test_only_ready_processes_are_handed_connections_once_one_is():
    door = Door(2)
    door.ends[1].send(dispatch.READY)
    clients = [door.connect(WEBHOOK) for _ in range(3)]
    clients.append(door.connect(STREAM))  # names process 1
    door.serve()
    assert door.door.ready == {1} and door.door.handed == {1: 4}  # process 0 is still starting
    door.ends[0].send(dispatch.READY)
    clients.append(door.connect(WEBHOOK))
    door.serve()
    assert door.door.ready == {0, 1} and door.door.handed == {1: 4, 0: 1}
    for s in clients:
        s.close()
    door.door.close()


def test_a_closed_channel_is_skipped_a_client_gone_is_dropped_and_with_no_process_the_client_is_closed():
    door = Door(2)
    door.ends[1].close()  # process 1 died before the supervisor knew
    client = door.connect(STREAM)
    door.serve()
    assert len(door.received(0)) == 1 and door.door.handed == {0: 1}
    gone = door.connect()
    gone.close()
    door.serve()
    assert door.received(0) == [] and door.door.handed == {0: 1}
    door.door.close_channel(0)
    door.door.close_channel(1)
    orphan = door.connect(WEBHOOK)
    door.serve()
    assert closed(orphan)  # the client (Twilio) retries
    for s in (client, orphan):
        s.close()
    door.door.close()


async def test_a_worker_serves_what_it_is_handed_and_stops_taking_on_shutdown():
    loop = asyncio.get_running_loop()
    door = Door(1)
    served: list[bytes] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            served.append(data)
            self.transport.write(b"ok:" + data[:4])  # type: ignore[attr-defined]

    stop = dispatch.adopt(loop, door.ends[0], Echo, orphaned=lambda: None)
    client = door.connect(WEBHOOK)
    await asyncio.to_thread(door.serve, 0.1)
    client.settimeout(2)
    assert await asyncio.to_thread(client.recv, 64) == b"ok:POST"
    assert served == [WEBHOOK]
    stop()
    late = door.connect(WEBHOOK)
    await asyncio.to_thread(door.serve, 0.1)
    assert await asyncio.to_thread(closed, late)  # no process takes it: closed, not left hanging
    for s in (client, late):
        s.close()
    door.door.close()


@pytest.mark.parametrize("head", [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01 not http", b"G"])
def test_anything_a_client_sends_first_is_handed_on(head):
    door = Door(1)
    client = door.connect(head)
    door.serve()
    (handed,) = door.received(0)
    handed.settimeout(2)
    assert handed.recv(64) == head
    for s in (client, handed):
        s.close()
    door.door.close()


async def test_a_worker_whose_supervisor_is_gone_is_told_so_once():
    loop = asyncio.get_running_loop()
    door = Door(1)
    orphaned: list[bool] = []
    dispatch.adopt(loop, door.ends[0], asyncio.Protocol, orphaned=lambda: orphaned.append(True))
    door.door.close()  # the supervisor killed: its end of the channel closes with it
    async with asyncio.timeout(2):
        while not orphaned:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert orphaned == [True]


class _OutOfDescriptors(socket.socket):
    """A listener whose first `failures` accepts fail as they do when the process has no descriptor left."""

    failures = 1
    calls = 0

    def accept(self):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        if type(self).calls <= self.failures:
            raise OSError(24, "Too many open files")
        return super().accept()


def test_out_of_descriptors_accepting_pauses_instead_of_spinning_then_resumes():
    listener = _OutOfDescriptors()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    door = FrontDoor(listener, lambda: [0])
    end = door.open_channel(0)
    client = socket.create_connection(listener.getsockname())
    client.sendall(WEBHOOK)
    door.serve(dispatch.ACCEPT_PAUSE_S / 2)
    assert _OutOfDescriptors.calls == 1  # the port stayed readable, and was not tried again at once
    door.serve(dispatch.ACCEPT_PAUSE_S * 2)
    assert door.handed == {0: 1}
    _, fds, _, _ = socket.recv_fds(end, 16, 8)
    for fd in fds:
        socket.socket(fileno=fd).close()
    for s in (client, end):
        s.close()
    door.close()
