"""The calls API as its commands use it (`gateway dial`, `gateway campaign run`): place a call, read its
record. A running gateway places the calls (it carries them, so it must know their agents); these commands
are its clients, authenticated with `CALLS_API_TOKEN`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.config import read_environment

FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
STATUS_GRACE_S = 60.0  # a call whose stream has ended is over this long after, final callback or not


class ApiError(RuntimeError):
    """The gateway refused, or could not be reached; the message says so in one line."""

    def __init__(self, message: str, status: int | None = None, *, not_sent: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.not_sent = not_sent  # the request never reached the gateway (nothing can have been dialled)


@dataclass(frozen=True)
class CallsApi:
    """Where the gateway's calls API is, and its bearer token."""

    url: str
    token: str

    @classmethod
    def from_environment(cls, url: str | None = None, token: str | None = None) -> CallsApi:
        """`--url` (default PUBLIC_URL, else the local `gateway serve` on $PORT) and CALLS_API_TOKEN."""
        env = read_environment()
        port = env.get("PORT") or "8080"
        base = url or env.get("PUBLIC_URL") or f"http://127.0.0.1:{port}"
        token = token or env.get("CALLS_API_TOKEN") or ""
        if not token:
            raise ApiError("set CALLS_API_TOKEN (the gateway's) to place calls through its API")
        return cls(base.rstrip("/"), token)

    def client(self, timeout_s: float = 15.0) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout_s, trust_env=False)

    async def place(self, http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /calls`: the gateway's answer (call_sid, ...), or ApiError with its reason and status."""
        try:
            response = await http.post("/calls", json=body)
        except httpx.ConnectError as exc:
            raise ApiError(f"the gateway at {self.url} cannot be reached: {exc!r}", not_sent=True) from None
        except httpx.HTTPError as exc:
            raise ApiError(f"no answer from the gateway at {self.url}: {exc!r}") from None
        if response.status_code != 201:
            raise ApiError(_reason(response), response.status_code)
        answer: dict[str, Any] = response.json()
        return answer

    async def record(self, http: httpx.AsyncClient, call_sid: str) -> dict[str, Any] | None:
        """`GET /calls/{sid}`: the call's record, None while there is none."""
        try:
            response = await http.get(f"/calls/{call_sid}")
        except httpx.HTTPError as exc:
            raise ApiError(f"the gateway at {self.url} cannot be reached: {exc!r}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ApiError(_reason(response), response.status_code)
        record: dict[str, Any] = response.json()
        return record

    async def wait_until_over(
        self, http: httpx.AsyncClient, call_sid: str, timeout_s: float, poll_s: float = 1.0
    ) -> dict[str, Any]:
        """The call's record once Twilio has reported its end (and, for a call that connected, the gateway
        has recorded what happened on it)."""
        async with asyncio.timeout(timeout_s):
            while True:
                record = await self.record(http, call_sid)
                if record is not None and is_over(record):
                    return record
                await asyncio.sleep(poll_s)


def final_status(record: dict[str, Any], now: datetime | None = None) -> str | None:
    """The call's final status once it is over, else None: Twilio reported its end (and a call that
    connected has its outcome recorded too), or its stream ended `STATUS_GRACE_S` ago and Twilio's final
    callback never came (it went to an instance that was down, say): then it was `completed`."""
    status = record.get("call_status", "")
    ended = record.get("ended_at")
    if status in FINAL_STATUSES:
        return status if status != "completed" or ended else None
    if ended and (now or datetime.now(UTC)) - datetime.fromisoformat(ended) > timedelta(
        seconds=STATUS_GRACE_S
    ):
        return "completed"
    return None


def is_over(record: dict[str, Any]) -> bool:
    return final_status(record) is not None


def _reason(response: httpx.Response) -> str:
    try:
        return f"HTTP {response.status_code}: {response.json()['error']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def parse_vars(pairs: list[str]) -> dict[str, str]:
    """`--var name=Ada --var date=Friday` as a dict; ValueError naming a pair without `=`."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--var {pair!r} must look like name=value")
        out[name.strip()] = value
    return out


# --- gateway dial ---


def add_dial_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, metavar="+1...", help="the E.164 number to call")
    parser.add_argument(
        "--agent", metavar="NAME", help="an agent of AGENTS_FILE (default: the default agent)"
    )
    parser.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="a variable of the agent (repeat)"
    )
    parser.add_argument("--machine", choices=["hang_up", "leave_message"], help="on an answering machine")
    parser.add_argument(
        "--from", dest="from_", metavar="+1...", help="caller ID (default TWILIO_FROM_NUMBER)"
    )
    parser.add_argument("--url", help="the gateway (default PUBLIC_URL, else http://127.0.0.1:$PORT)")
    parser.add_argument("--wait", action="store_true", help="wait for the call to end and print its record")
    parser.add_argument(
        "--simulate",
        choices=["person", "voicemail", "busy", "no_answer"],
        nargs="?",
        const="person",
        help="everything on this machine, no keys: a gateway, a Twilio stand-in and a simulated callee "
        "(default: a person)",
    )
    parser.add_argument(
        "--out", default="dial-call.wav", metavar="WAV", help="--simulate: the call's recording"
    )


def dial_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"to": args.to}
    if args.agent:
        body["agent"] = args.agent
    if args.var:
        body["variables"] = parse_vars(args.var)
    if args.machine:
        body["machine"] = args.machine
    if args.from_:
        body["from"] = args.from_
    return body


async def run_dial(args: argparse.Namespace) -> int:
    try:
        body = dial_body(args)
        api = CallsApi.from_environment(args.url)
        async with api.client() as http:
            answer = await api.place(http, body)
            print(f"placed {answer['call_sid']}: {answer['to']} from {answer['from']}, "
                  f"agent {answer['agent']}, machine {answer['machine']}")  # fmt: skip
            if args.wait:
                record = await api.wait_until_over(http, answer["call_sid"], timeout_s=3600)
                print(json.dumps(record, indent=2))
    except (ApiError, ValueError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    return 0
