"""What the supervisor's front door costs per connection (WEB_CONCURRENCY > 1, `gateway.dispatch`).

The front door (accept, peek at the request line, pass the socket with SCM_RIGHTS) runs in a process of its
own, as in `gateway serve`; this process opens the connections (each sends a request line, half of them a
stream URL naming a process) and plays the two workers (receives the sockets and closes them). The front
door's CPU comes from /proc, over the connections it handed on.

    python benchmarks/bench_dispatch.py [--connections 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import socket
import threading
import time

from gateway import dispatch
from gateway.devtools.load import sample_process
from gateway.dispatch import FrontDoor

STREAM = b"GET /twilio/media/process-1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
WEBHOOK = b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


def _door(door: FrontDoor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        door.serve(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=5000)
    args = parser.parse_args()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    front = FrontDoor(listener, lambda: [0, 0])  # made before the fork, as serve_processes does
    ends = [front.open_channel(slot) for slot in (0, 1)]
    for end in ends:
        end.send(dispatch.READY)
    ctx = multiprocessing.get_context("fork")
    door = ctx.Process(target=_door, args=(front, 600.0), daemon=True)
    door.start()
    assert door.pid is not None
    received = [0, 0]

    def worker(slot: int) -> None:
        end = ends[slot]
        while True:
            _, fds, _, _ = socket.recv_fds(end, 16, 8)
            for fd in fds:
                os.close(fd)
            received[slot] += len(fds)

    for slot in (0, 1):
        threading.Thread(target=worker, args=(slot,), daemon=True).start()
    time.sleep(0.5)
    before, began = sample_process(door.pid, children=False).cpu, time.monotonic()
    for n in range(args.connections):
        with socket.create_connection(listener.getsockname()) as client:
            client.sendall(STREAM if n % 2 else WEBHOOK)
            with contextlib.suppress(ConnectionResetError):
                client.recv(1)  # the worker closed it (unread: a reset): handed on
    elapsed = time.monotonic() - began
    used = sample_process(door.pid, children=False).cpu - before
    door.kill()
    print(f"{args.connections} connections in {elapsed:.1f} s; handed to process 0 / 1: {received}")
    print(f"front door CPU: {used * 1e6 / args.connections:.0f} us per connection ({used:.2f} s in all)")


if __name__ == "__main__":
    main()
