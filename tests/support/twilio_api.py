"""A stand-in for Twilio's REST API on loopback: call updates and phone numbers, answered like Twilio."""

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

from gateway.server import serving


@dataclass
class FakeTwilioApi:
    account_sid: str
    auth_token: str
    updates: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)  # calls that answer 20404
    numbers: list[dict[str, str | None]] = field(default_factory=list)  # IncomingPhoneNumber resources
    number_updates: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def add_number(self, phone_number: str, voice_url: str = "") -> dict[str, str | None]:
        number = {
            "sid": f"PN{len(self.numbers):032d}",
            "account_sid": self.account_sid,
            "phone_number": phone_number,
            "friendly_name": phone_number,
            "voice_url": voice_url,
            "voice_method": "POST",
            "status_callback": "",
            "status_callback_method": "POST",
        }
        self.numbers.append(number)
        return number

    def _refused(self, request: Request) -> JSONResponse | None:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"code": 20003, "message": "Authenticate", "status": 401}, status_code=401)
        return None

    async def list_numbers(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        wanted = request.query_params.get("PhoneNumber")
        found = [n for n in self.numbers if wanted in (None, n["phone_number"])]
        return JSONResponse({"incoming_phone_numbers": found, "next_page_uri": None, "page": 0})

    async def update_number(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        number = next((n for n in self.numbers if n["sid"] == request.path_params["sid"]), None)
        if number is None:
            return JSONResponse({"code": 20404, "message": "not found", "status": 404}, status_code=404)
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.number_updates.append((number["sid"], form))  # type: ignore[arg-type]
        names = {"VoiceUrl", "VoiceMethod", "StatusCallback", "StatusCallbackMethod"}
        for name, value in form.items():
            if name in names:  # VoiceUrl -> voice_url
                number["".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")] = value
        return JSONResponse(number)

    async def update_call(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
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
        Route("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json", api.list_numbers, methods=["GET"]),
        Route("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{sid}.json", api.update_number,
              methods=["POST"]),
    ])  # fmt: skip
    async with serving(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")) as url:
        yield url, api
