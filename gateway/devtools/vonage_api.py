"""A stand-in for Vonage's APIs on loopback, speaking their wire format and checking what they check.

- Voice API, `PUT /v1/calls/{uuid}` (hang-up, transfer): the `Authorization: Bearer` application JWT must
  verify with the application's public key (RS256) and name the application, as Vonage's API requires.
- Applications API v2, `GET` and `PUT /v2/applications/{id}` (HTTP basic auth with the API key and secret):
  the application's voice webhooks, which `gateway vonage configure` points at the service.
- Numbers (`GET /account/numbers`, `POST /number/update`, the API key and secret as parameters): which
  application a number is linked to.

The tests and `gateway vonage configure` against a local run use it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.server import serving
from gateway.vonage.signing import SignatureError, verify_application_jwt


def public_key_of(private_key_pem: str) -> str:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public.decode()


def _error(status: int, title: str) -> JSONResponse:
    return JSONResponse(
        {"type": "https://developer.nexmo.com/api-errors", "title": title}, status_code=status
    )


@dataclass
class FakeVonageApi:
    application_id: str
    public_key: str  # PEM: the application's, as Vonage keeps it
    api_key: str = "abcd1234"
    api_secret: str = "api-secret-of-the-account"
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (call uuid, body) accepted
    refused: list[str] = field(default_factory=list)  # why requests were refused (401s)
    ended: set[str] = field(default_factory=set)  # calls that answer 404
    numbers: list[dict[str, Any]] = field(default_factory=list)
    application: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.application = self.application or {
            "id": self.application_id,
            "name": "gateway",
            "keys": {"public_key": self.public_key},
            "capabilities": {
                "voice": {
                    "webhooks": {
                        "answer_url": {"address": "https://example.com/answer", "http_method": "GET"},
                        "event_url": {"address": "https://example.com/event", "http_method": "POST"},
                    }
                }
            },
        }

    def add_number(self, msisdn: str, country: str = "GB") -> None:
        self.numbers.append(
            {"country": country, "msisdn": msisdn, "type": "mobile-lvn", "features": ["VOICE"]}
        )

    # --- Voice API ---

    async def update_call(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise SignatureError("no bearer token")
            verify_application_jwt(token, self.public_key, self.application_id, time.time())
        except SignatureError as exc:
            self.refused.append(str(exc))
            return _error(401, "Invalid Token")
        uuid = request.path_params["uuid"]
        body = await request.json()
        if body.get("action") not in ("hangup", "transfer", "mute", "unmute", "earmuff", "unearmuff"):
            return _error(400, "Invalid action")
        if body["action"] == "transfer" and body.get("destination", {}).get("type") != "ncco":
            return _error(400, "Invalid destination")
        if uuid in self.ended:
            return _error(404, "Not Found")
        self.updates.append((uuid, body))
        if body["action"] in ("hangup", "transfer"):
            self.ended.add(uuid)  # this leg is over for the gateway either way
        return Response(status_code=204)

    # --- Applications API v2 (basic auth) ---

    def _basic_refused(self, request: Request) -> JSONResponse | None:
        expected = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            self.refused.append("bad API key or secret")
            return _error(401, "Unauthorized")
        return None

    async def get_application(self, request: Request) -> JSONResponse:
        if refused := self._basic_refused(request):
            return refused
        if request.path_params["id"] != self.application_id:
            return _error(404, "Not Found")
        return JSONResponse(self.application)

    async def put_application(self, request: Request) -> JSONResponse:
        if refused := self._basic_refused(request):
            return refused
        if request.path_params["id"] != self.application_id:
            return _error(404, "Not Found")
        body = await request.json()
        voice = body.get("capabilities", {}).get("voice", {})
        if not voice.get("webhooks", {}).get("answer_url", {}).get("address"):
            return _error(400, "answer_url is required")
        self.application = copy.deepcopy(body)
        return JSONResponse(self.application)

    # --- Numbers (the API key and secret as parameters) ---

    def _params_refused(self, params: dict[str, str]) -> JSONResponse | None:
        if params.get("api_key") != self.api_key or params.get("api_secret") != self.api_secret:
            self.refused.append("bad API key or secret")
            return JSONResponse({"error-code": "401", "error-code-label": "authentication failed"}, 401)
        return None

    async def list_numbers(self, request: Request) -> JSONResponse:
        params = dict(request.query_params)
        if refused := self._params_refused(params):
            return refused
        pattern = params.get("pattern", "")
        found = [n for n in self.numbers if pattern in n["msisdn"]]
        return JSONResponse({"count": len(found), "numbers": found})

    async def update_number(self, request: Request) -> JSONResponse:
        params = {k: str(v) for k, v in (await request.form()).items()}
        if refused := self._params_refused(params):
            return refused
        number = next(
            (
                n
                for n in self.numbers
                if (n["msisdn"], n["country"]) == (params.get("msisdn"), params.get("country"))
            ),
            None,
        )
        if number is None:
            return JSONResponse({"error-code": "420", "error-code-label": "Invalid msisdn or country"}, 200)
        number["app_id"] = params.get("app_id", "")
        number["voiceCallbackType"] = params.get("voiceCallbackType", "app")
        return JSONResponse({"error-code": "200", "error-code-label": "success"})


@contextlib.asynccontextmanager
async def fake_vonage_api(
    application_id: str, private_key_pem: str
) -> AsyncIterator[tuple[str, FakeVonageApi]]:
    """Serve the stand-in on a free loopback port: (its base URL, its state)."""
    api = FakeVonageApi(application_id, public_key_of(private_key_pem))
    app = Starlette(
        routes=[
            Route("/v1/calls/{uuid}", api.update_call, methods=["PUT"]),
            Route("/v2/applications/{id}", api.get_application, methods=["GET"]),
            Route("/v2/applications/{id}", api.put_application, methods=["PUT"]),
            Route("/account/numbers", api.list_numbers, methods=["GET"]),
            Route("/number/update", api.update_number, methods=["POST"]),
        ]
    )
    async with serving(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")) as url:
        yield url, api
