"""A stand-in for Twilio's REST API on loopback: records call updates, answers like Twilio."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class FakeTwilioApi:
    account_sid: str
    auth_token: str
    updates: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)  # calls that answer 20404

    async def update_call(self, request: Request) -> JSONResponse:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"code": 20003, "message": "Authenticate", "status": 401}, status_code=401)
        sid = request.path_params["sid"]
        if sid in self.ended:
            return JSONResponse({"code": 20404, "message": "not found", "status": 404}, status_code=404)
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.updates.append((sid, form))
        return JSONResponse({"sid": sid, "account_sid": self.account_sid, "status": "in-progress"})


@contextlib.asynccontextmanager
async def fake_twilio_api(account_sid: str, auth_token: str) -> AsyncIterator[tuple[str, FakeTwilioApi]]:
    api = FakeTwilioApi(account_sid, auth_token)
    app = Starlette(routes=[
        Route("/2010-04-01/Accounts/{account}/Calls/{sid}.json", api.update_call, methods=["POST"]),
    ])  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    import asyncio

    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", api
    finally:
        server.should_exit = True
        await task
