"""Doubles of a carrier line's surroundings, for tests that drive a line in memory: the Starlette WebSocket it
reads and writes (text messages, and binary frames), the carrier's REST client; and helpers for tests
that refuse media upgrades over real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from starlette.websockets import WebSocketState
from websockets.asyncio.client import ClientConnection, connect


class FakeSocket:
    """A Starlette WebSocket as a line uses it: messages to receive (text, or bytes for binary frames), and
    what it was sent."""

    def __init__(self, incoming: list[str | bytes], query: dict[str, str] | None = None) -> None:
        self.incoming = incoming
        self.query_params = query or {}
        self.sent: list[str | bytes] = []
        self.application_state = WebSocketState.CONNECTED
        self.scope: dict[str, Any] = {}  # served by no MediaSocket: plain ASGI
        self.closed: tuple[int, str] | None = None
        self.hold = False  # once `incoming` runs out: disconnect (False) or wait for ever (True)

    async def receive(self) -> dict[str, Any]:
        if not self.incoming and self.hold:  # a peer that says nothing more and stays connected
            await asyncio.Event().wait()
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


async def refused_upgrade(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status a WebSocket upgrade to `url` is refused with (it must be refused)."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url, additional_headers=headers or {}):
            pass
    return refused.value.response.status_code


async def closed(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the gateway closes the socket; its close code."""
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return ws.close_code
