"""A stand-in for Telnyx's REST API on loopback, in Telnyx's wire format: the TeXML call updates the gateway
makes (hang-up, transfer), and the TeXML applications and phone numbers `gateway telnyx configure` edits.

Routes and bodies as Telnyx documents them (https://developers.telnyx.com/api-reference): `POST
/v2/texml/Accounts/{account}/Calls/{sid}` (form fields `Texml`, `Status`, ...), `GET/POST
/v2/texml_applications`, `PATCH /v2/texml_applications/{id}`, `GET /v2/phone_numbers`, `PATCH
/v2/phone_numbers/{id}`; JSON bodies wrapped in `{"data": ...}`, errors as `{"errors": [{code, title,
detail}]}`, every request authenticated with `Authorization: Bearer <API key>`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.server import serving


def _error(status: int, code: str, title: str, detail: str = "") -> JSONResponse:
    return JSONResponse({"errors": [{"code": code, "title": title, "detail": detail}]}, status_code=status)


@dataclass
class FakeTelnyxApi:
    api_key: str
    updates: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (account, call, form)
    ended: set[str] = field(default_factory=set)  # calls that answer 404
    applications: list[dict[str, Any]] = field(default_factory=list)
    numbers: list[dict[str, Any]] = field(default_factory=list)

    def add_number(self, phone_number: str, connection_id: str = "") -> dict[str, Any]:
        number = {
            "id": str(1_500_000_000_000_000_000 + len(self.numbers)),
            "record_type": "phone_number",
            "phone_number": phone_number,
            "connection_id": connection_id,
            "connection_name": "",
            "status": "active",
        }
        self.numbers.append(number)
        return number

    def _refused(self, request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "10009", "Authentication failed", "The API key is not valid")
        return None

    async def update_call(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        account, sid = request.path_params["account"], request.path_params["sid"]
        if sid in self.ended:
            return _error(404, "20404", "Call not found", "The call has ended")
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.updates.append((account, sid, form))
        status = "completed" if form.get("Status") == "completed" else "in-progress"
        return JSONResponse({"account_sid": account, "sid": sid, "status": status})

    async def list_applications(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        name = request.query_params.get("filter[friendly_name]")
        found = [a for a in self.applications if name is None or name in a["friendly_name"]]
        return JSONResponse({"data": found, "meta": {"total_results": len(found)}})

    async def create_application(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        body = await request.json()
        if not body.get("friendly_name") or not body.get("voice_url"):
            return _error(422, "10015", "Invalid parameter", "friendly_name and voice_url are required")
        application = {"id": str(2_000_000_000 + len(self.applications)), "record_type": "texml_application"}
        application.update(body)
        self.applications.append(application)
        return JSONResponse({"data": application}, status_code=201)

    async def update_application(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        application = next((a for a in self.applications if a["id"] == request.path_params["id"]), None)
        if application is None:
            return _error(404, "10005", "Resource not found")
        application.update(await request.json())
        return JSONResponse({"data": application})

    async def list_numbers(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        wanted = request.query_params.get("filter[phone_number]")
        found = [n for n in self.numbers if wanted is None or n["phone_number"] == wanted]
        return JSONResponse({"data": found, "meta": {"total_results": len(found)}})

    async def update_number(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        number = next((n for n in self.numbers if n["id"] == request.path_params["id"]), None)
        if number is None:
            return _error(404, "10005", "Resource not found")
        number.update(await request.json())
        return JSONResponse({"data": number})


@contextlib.asynccontextmanager
async def fake_telnyx_api(api_key: str) -> AsyncIterator[tuple[str, FakeTelnyxApi]]:
    """Serve the stand-in; yields its base URL (what TELNYX_API_BASE_URL takes: it ends in /v2) and itself."""
    api = FakeTelnyxApi(api_key)
    app = Starlette(routes=[
        Route("/v2/texml/Accounts/{account}/Calls/{sid}", api.update_call, methods=["POST"]),
        Route("/v2/texml_applications", api.list_applications, methods=["GET"]),
        Route("/v2/texml_applications", api.create_application, methods=["POST"]),
        Route("/v2/texml_applications/{id}", api.update_application, methods=["PATCH"]),
        Route("/v2/phone_numbers", api.list_numbers, methods=["GET"]),
        Route("/v2/phone_numbers/{id}", api.update_number, methods=["PATCH"]),
    ])  # fmt: skip
    async with serving(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")) as url:
        yield url + "/v2", api
