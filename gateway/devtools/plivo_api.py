"""A stand-in for Plivo's API on loopback, speaking its wire format and checking what it checks.

Every request must carry HTTP basic auth with the account's auth id and token, on a path under
`/v1/Account/{auth_id}/`, as Plivo requires.

- Calls: `DELETE .../Call/{uuid}/` hangs up (204; 404 for a call that is over), `POST .../Call/{uuid}/`
  with `legs=aleg` and `aleg_url` transfers (202), and then, as Plivo does, fetches `aleg_url` with a
  signed (V3) POST and keeps the XML it answered.
- Applications (`GET`, `POST .../Application/`, `POST .../Application/{app_id}/`) and numbers
  (`GET .../Number/`, `POST .../Number/{number}/` with `app_id`): what `gateway plivo configure` uses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.plivo.signing import signed_headers
from gateway.server import serving


@dataclass
class Transfer:
    call_uuid: str
    aleg_url: str
    status: int = 0  # what our transfer URL answered Plivo's signed fetch
    xml: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FakePlivoApi:
    auth_id: str
    auth_token: str
    hangups: list[str] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)  # calls that answer 404
    applications: dict[str, dict[str, Any]] = field(default_factory=dict)  # app_id -> application
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)  # number -> number
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def add_number(self, number: str) -> None:
        self.numbers[number] = {"number": number, "app_id": None, "voice_enabled": True}

    def _refused(self, request: Request) -> JSONResponse | None:
        expected = base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            self.refused.append("bad auth id or token")
            return JSONResponse({"error": "authentication failed"}, status_code=401)
        if request.path_params.get("auth_id") != self.auth_id:
            self.refused.append("another account's path")
            return JSONResponse({"error": "not found"}, status_code=404)
        return None

    # --- calls ---

    async def hang_up(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        uuid = request.path_params["uuid"]
        if uuid in self.ended:
            return JSONResponse({"error": "not found"}, status_code=404)
        self.hangups.append(uuid)
        self.ended.add(uuid)
        return Response(status_code=204)

    async def transfer(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        uuid = request.path_params["uuid"]
        body = await request.json()
        if body.get("legs") != "aleg" or not body.get("aleg_url"):
            return JSONResponse({"error": "legs=aleg and aleg_url are required"}, status_code=400)
        if uuid in self.ended:
            return JSONResponse({"error": "not found"}, status_code=404)
        transfer = Transfer(uuid, str(body["aleg_url"]))
        self.transfers.append(transfer)
        self.ended.add(uuid)
        task = asyncio.create_task(self._fetch(transfer, str(body.get("aleg_method", "POST"))))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return JSONResponse({"message": "call transferred", "api_id": secrets.token_hex(8)}, status_code=202)

    async def _fetch(self, transfer: Transfer, method: str) -> None:
        """Plivo asks the aleg_url what to do with the caller, signed as every request of Plivo's is."""
        params = {"CallUUID": transfer.call_uuid, "Event": "Transfer", "CallStatus": "in-progress"}
        headers = signed_headers(
            self.auth_token, method, transfer.aleg_url, params if method == "POST" else {}
        )
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
                if method == "POST":
                    response = await http.post(transfer.aleg_url, data=params, headers=headers)
                else:
                    response = await http.get(transfer.aleg_url, headers=headers)
            transfer.status, transfer.xml = response.status_code, response.text
        finally:
            transfer.done.set()

    # --- applications and numbers ---

    async def list_applications(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        return JSONResponse(
            {"meta": {"total_count": len(self.applications)}, "objects": list(self.applications.values())}
        )

    async def create_application(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        body = await request.json()
        if not body.get("app_name") or not body.get("answer_url"):
            return JSONResponse({"error": "app_name and answer_url are required"}, status_code=400)
        app_id = str(secrets.randbelow(10**17)).zfill(17)
        self.applications[app_id] = {"app_id": app_id, **body}
        return JSONResponse({"message": "created", "app_id": app_id, "api_id": secrets.token_hex(8)}, 201)

    async def update_application(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        app = self.applications.get(request.path_params["app_id"])
        if app is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        app.update(await request.json())
        return JSONResponse({"message": "changed", "api_id": secrets.token_hex(8)}, 202)

    async def list_numbers(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        return JSONResponse(
            {"meta": {"total_count": len(self.numbers)}, "objects": list(self.numbers.values())}
        )

    async def update_number(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        number = self.numbers.get(request.path_params["number"])
        if number is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        app_id = (await request.json()).get("app_id")
        if app_id not in self.applications:
            return JSONResponse({"error": "app_id not found"}, status_code=400)
        number["app_id"] = app_id
        return JSONResponse({"message": "changed", "api_id": secrets.token_hex(8)}, 202)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def fake_plivo_api(auth_id: str, auth_token: str) -> AsyncIterator[tuple[str, FakePlivoApi]]:
    """Serve the stand-in on a free loopback port: (its base URL, its state)."""
    api = FakePlivoApi(auth_id, auth_token)
    account = "/v1/Account/{auth_id}"
    app = Starlette(
        routes=[
            Route(account + "/Call/{uuid}/", api.hang_up, methods=["DELETE"]),
            Route(account + "/Call/{uuid}/", api.transfer, methods=["POST"]),
            Route(account + "/Application/", api.list_applications, methods=["GET"]),
            Route(account + "/Application/", api.create_application, methods=["POST"]),
            Route(account + "/Application/{app_id}/", api.update_application, methods=["POST"]),
            Route(account + "/Number/", api.list_numbers, methods=["GET"]),
            Route(account + "/Number/{number}/", api.update_number, methods=["POST"]),
        ]
    )
    async with serving(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")) as url:
        try:
            yield url, api
        finally:
            await api.close()
