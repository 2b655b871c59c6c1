"""A custom-tool service on loopback: records what the gateway POSTs and answers as a test scripts it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.server import serving


@dataclass
class ToolService:
    reply: Any = field(default_factory=lambda: {"status": "shipped"})
    status: int = 200
    delay_s: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event | None = None  # set: answer only once the test sets it (a tool slow on cue)

    async def handle(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), await request.body()))
        self.received.set()
        if self.release is not None:
            await self.release.wait()
        await asyncio.sleep(self.delay_s)
        if isinstance(self.reply, bytes):
            return Response(self.reply, status_code=self.status, media_type="text/plain")
        return JSONResponse(self.reply, status_code=self.status)


@contextlib.asynccontextmanager
async def tool_service(service: ToolService) -> AsyncIterator[str]:
    """Serve `service` at http://127.0.0.1:PORT/tool until the block ends; yields that URL."""
    app = Starlette(routes=[Route("/tool", service.handle, methods=["POST"])])
    async with serving(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")) as url:
        yield url + "/tool"
