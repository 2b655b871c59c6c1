"""A stand-in for Twilio's REST API on loopback: calls placed and updated, and phone numbers, answered like
Twilio.

A call created through it (`POST .../Calls.json`) is carried out as Twilio would: signed status callbacks
(initiated, ringing, then in-progress and completed, or busy, no-answer, failed), and for a callee who
picks up, the signed voice webhook and a Media Stream with the caller simulator as the callee (see
`gateway.devtools.callee`), and the asynchronous answering-machine detection callback at the moment
Twilio's detector would send it. The tests and `gateway dial --simulate` use it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from gateway.devtools.callee import NOT_ANSWERED, Callee, Pickup, pickup
from gateway.devtools.simulator import CallObserver, CallResult, SimulatorError, place_call
from gateway.server import serving

log = structlog.get_logger("gateway.devtools.twilio_api")


@dataclass
class PlacedCall:
    """A call created through the stand-in, and what came of it."""

    sid: str
    form: dict[str, str]  # the create request's parameters (To, From, Url, StatusCallback, ...)
    callee: Callee
    statuses: list[str] = field(default_factory=list)  # status callbacks sent, in order
    pickup: Pickup | None = None
    result: CallResult | None = None  # the media stream, as the callee heard it
    stream_t0: float | None = None  # time.monotonic() at the stream's start
    amd_sent: str = ""  # the AnsweredBy sent, once sent
    error: str = ""  # why the simulated call could not be carried (a refused webhook, say)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _StreamStart(CallObserver):
    def __init__(self, on_start: object) -> None:
        self.on_start = on_start

    def stream_started(self, t0: float) -> None:
        self.on_start(t0)  # type: ignore[operator]


@dataclass
class FakeTwilioApi:
    account_sid: str
    auth_token: str
    updates: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)  # calls that answer 20404
    numbers: list[dict[str, str | None]] = field(default_factory=list)  # IncomingPhoneNumber resources
    number_updates: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # Outbound calls: who picks up at each number (a list: one callee per attempt, the last one repeated),
    # and everyone else.
    callees: dict[str, list[Callee]] = field(default_factory=dict)
    default_callee: Callee = field(default_factory=Callee)
    calls: dict[str, PlacedCall] = field(default_factory=dict)
    refuse_create: tuple[int, int, str] | None = None  # (HTTP status, Twilio code, message) for every create
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _attempts: dict[str, int] = field(default_factory=dict)

    def callee_for(self, number: str) -> Callee:
        attempt = self._attempts.get(number, 0)
        self._attempts[number] = attempt + 1
        line = self.callees.get(number)
        return line[min(attempt, len(line) - 1)] if line else self.default_callee

    async def create_call(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        raw = await request.form()
        form = {k: str(v) for k, v in raw.items()}
        form["StatusCallbackEvent"] = " ".join(str(v) for v in raw.getlist("StatusCallbackEvent"))
        if self.refuse_create is not None:
            status, code, message = self.refuse_create
            return JSONResponse({"code": code, "message": message, "status": status}, status_code=status)
        missing = [name for name in ("To", "From", "Url") if not form.get(name)]
        if missing:
            message = f"Missing required parameter {missing[0]}"
            return JSONResponse({"code": 21201, "message": message, "status": 400}, status_code=400)
        sid = "CA" + secrets.token_hex(16)
        call = PlacedCall(sid, form, self.callee_for(form["To"]))
        self.calls[sid] = call
        task = asyncio.create_task(self._carry(call), name=f"simulated-call-{sid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return JSONResponse(
            {"sid": sid, "account_sid": self.account_sid, "to": form["To"], "from": form["From"],
             "status": "queued", "direction": "outbound-api"},
            status_code=201,
        )  # fmt: skip

    async def _carry(self, call: PlacedCall) -> None:
        """The call's life as Twilio would carry it out: it always ends with a final status callback."""
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            final = "failed"
            try:
                await self._status(http, call, "initiated")
                await self._status(http, call, "ringing")
                await asyncio.sleep(call.callee.ring_s)
                if not call.callee.answers:
                    final = NOT_ANSWERED[call.callee.kind]
                    return
                await self._status(http, call, "in-progress")
                final = "completed"
                await self._pick_up(http, call)
            except Exception as exc:  # a stand-in: say what went wrong, do not raise into the void
                call.error = repr(exc)
                log.warning("simulated_call_failed", call_sid=call.sid, error=repr(exc))
            finally:
                try:
                    await self._status(http, call, final)
                except Exception as exc:
                    call.error = call.error or repr(exc)
                    log.warning("simulated_status_not_sent", call_sid=call.sid, error=repr(exc))
                call.done.set()

    async def _pick_up(self, http: httpx.AsyncClient, call: PlacedCall) -> None:
        line = call.pickup = pickup(call.callee)
        amd: list[asyncio.Task[None]] = []

        def started(t0: float) -> None:
            call.stream_t0 = t0
            amd.append(asyncio.create_task(self._amd(http, call, line, t0 + line.amd_at_s)))

        url = urlsplit(call.form["Url"])
        try:
            call.result = await place_call(
                f"{url.scheme}://{url.netloc}",
                line.script,
                auth_token=self.auth_token,
                from_=call.form["From"],
                to=call.form["To"],
                call_sid=call.sid,
                account_sid=self.account_sid,
                observer=_StreamStart(started),
                http=http,
                webhook_path=url.path + (f"?{url.query}" if url.query else ""),
                direction="outbound-api",
            )
        except SimulatorError as exc:
            call.error = str(exc)
        finally:
            for task in amd:  # the detector stops with the call
                if not task.done():
                    task.cancel()
            await asyncio.gather(*amd, return_exceptions=True)

    async def _amd(self, http: httpx.AsyncClient, call: PlacedCall, line: Pickup, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        url = call.form.get("AsyncAmdStatusCallback")
        if call.form.get("AsyncAmd") != "true" or not url:
            return
        duration_ms = round(line.amd_at_s * 1000)
        params = {"CallSid": call.sid, "AccountSid": self.account_sid, "AnsweredBy": line.answered_by,
                  "MachineDetectionDuration": str(duration_ms)}  # fmt: skip
        call.amd_sent = line.answered_by
        await self._post(http, url, params)

    async def _status(self, http: httpx.AsyncClient, call: PlacedCall, status: str, **extra: str) -> None:
        call.statuses.append(status)
        url = call.form.get("StatusCallback")
        events = call.form.get("StatusCallbackEvent", "")
        final = status not in ("initiated", "ringing", "in-progress")
        wanted = {"in-progress": "answered"}.get(status, status)
        if not url or not (final or wanted in events.split()):
            return
        params = {"CallSid": call.sid, "AccountSid": self.account_sid, "CallStatus": status,
                  "Direction": "outbound-api", "From": call.form["From"], "To": call.form["To"],
                  "SequenceNumber": str(len(call.statuses) - 1), **extra}  # fmt: skip
        await self._post(http, url, params)

    async def _post(self, http: httpx.AsyncClient, url: str, params: dict[str, str]) -> None:
        """A signed callback; a connection that fails (a kept-alive one the server closed meanwhile) is
        tried again, as Twilio's HTTP client does."""
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        for attempt in range(3):
            try:
                response = await http.post(url, data=params, headers={"X-Twilio-Signature": signature})
                break
            except httpx.TransportError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.1)
        if response.status_code >= 300:
            log.warning("simulated_callback_refused", url=url, status=response.status_code)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def add_number(self, phone_number: str, voice_url: str = "") -> dict[str, str | None]:
        number: dict[str, str | None] = {
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
async def fake_twilio_api(
    account_sid: str, auth_token: str, prefix: str = ""
) -> AsyncIterator[tuple[str, FakeTwilioApi]]:
    """Serve the stand-in; yields its base URL and itself. `prefix`: where the API lives under the host
    (SignalWire's Compatibility API is Twilio's under /api/laml: gateway.devtools.signalwire_api)."""
    api = FakeTwilioApi(account_sid, auth_token)
    app = Starlette(routes=[
        Route(prefix + "/2010-04-01/Accounts/{account}/Calls.json", api.create_call, methods=["POST"]),
        Route(prefix + "/2010-04-01/Accounts/{account}/Calls/{sid}.json", api.update_call, methods=["POST"]),
        Route(prefix + "/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json", api.list_numbers,
              methods=["GET"]),
        Route(prefix + "/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{sid}.json", api.update_number,
              methods=["POST"]),
    ])  # fmt: skip
    async with serving(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")) as url:
        try:
            yield url, api
        finally:
            await api.close()
