"""A scripted Live peer for end-to-end tests: a real WebSocket server speaking the Live wire protocol.

It records what the gateway sends (setup, audio sample counts, client turns) and answers with whatever a
test scripts: audio turns, transcripts, `interrupted`, a close code.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

Script = Callable[["PeerSession"], Awaitable[None]]


@dataclass
class PeerSession:
    ws: ServerConnection
    setup: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    audio_bytes: int = 0
    audio_mime: set[str] = field(default_factory=set)
    client_turns: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    got_turn: asyncio.Event = field(default_factory=asyncio.Event)
    sent_at: dict[str, float] = field(default_factory=dict)

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(msg).encode())  # binary frames, as Gemini sends them

    async def send_audio(self, pcm: bytes, chunk_s: float = 0.04, rate: int = 24000) -> None:
        step = int(chunk_s * rate) * 2
        for i in range(0, len(pcm), step):
            data = base64.b64encode(pcm[i : i + step]).decode()
            await self.send(
                {
                    "serverContent": {
                        "modelTurn": {
                            "parts": [{"inlineData": {"mimeType": f"audio/pcm;rate={rate}", "data": data}}]
                        }
                    }
                }
            )

    async def wait_audio(self, nbytes: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.audio_bytes < nbytes:
                await asyncio.sleep(0.005)


class LivePeer:
    """`async with LivePeer(script) as peer:` then point GEMINI_LIVE_URL at `peer.url`."""

    def __init__(
        self, script: Script | None = None, *, reject: tuple[int, str] | None = None, reject_from: int = 0
    ) -> None:
        self.script = script
        self.reject = reject  # close code and reason for every session from number `reject_from` on
        self.reject_from = reject_from
        self.sessions: list[PeerSession] = []
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent"

    async def __aenter__(self) -> LivePeer:
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=2**24)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def session(self, index: int = 0, timeout: float = 10.0) -> PeerSession:
        async with asyncio.timeout(timeout):
            while len(self.sessions) <= index:
                await asyncio.sleep(0.005)
        return self.sessions[index]

    async def _handle(self, ws: ServerConnection) -> None:
        session = PeerSession(ws, path=ws.request.path, headers=dict(ws.request.headers))
        session.setup = json.loads(await ws.recv())["setup"]
        self.sessions.append(session)
        if self.reject and len(self.sessions) > self.reject_from:
            await ws.close(*self.reject)
            return
        await session.send({"setupComplete": {}})
        reader = asyncio.create_task(self._read(session))
        try:
            if self.script:
                await self.script(session)
            await reader
        finally:
            reader.cancel()
            session.close_code = ws.close_code
            session.closed.set()

    async def _read(self, session: PeerSession) -> None:
        async for raw in session.ws:
            msg = json.loads(raw)
            if "realtimeInput" in msg:
                rt = msg["realtimeInput"]
                if "audio" in rt:
                    session.audio_bytes += len(base64.b64decode(rt["audio"]["data"]))
                    session.audio_mime.add(rt["audio"]["mimeType"])
                elif "text" in rt:
                    session.texts.append(rt["text"])
                else:
                    session.other.append(msg)
            elif "clientContent" in msg:
                turns = msg["clientContent"]["turns"]
                session.client_turns.append(turns[0]["parts"][0]["text"])
                session.got_turn.set()
            else:
                session.other.append(msg)
        session.closed.set()
