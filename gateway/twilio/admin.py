"""`gateway twilio ...`: point a Twilio number at this service, and see where the account's numbers point.

twilio's REST client (IncomingPhoneNumbers), synchronous: these are one-off commands, not the call path.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from gateway.config import load_twilio_admin_settings
from gateway.drain import VOICE_PATH
from gateway.logs import register_secret

STATUS_PATH = "/twilio/status"
FIELDS = ("voice_url", "voice_method", "status_callback", "status_callback_method")
API_TIMEOUT_S = 15.0  # one request to Twilio's REST API; a one-off command should not hang for ever
DEFAULT_API_BASE_URL = "https://api.twilio.com"

T = TypeVar("T")


class AdminError(RuntimeError):
    """Something the operator can fix: missing credentials, an unknown number."""


class TwilioApiError(RuntimeError):
    """Twilio's REST API refused the request, or could not be reached: one line that says which."""


@dataclass(frozen=True)
class NumberConfig:
    """A phone number of the account and where its voice webhook and status callback point."""

    sid: str
    phone_number: str
    friendly_name: str
    voice_url: str
    voice_method: str
    status_callback: str
    status_callback_method: str

    @classmethod
    def of(cls, number: object) -> NumberConfig:
        return cls(**{name: getattr(number, name) or "" for name in cls.__dataclass_fields__})


def admin_client(account_sid: str | None, auth_token: str | None, base_url: str | None = None) -> Client:
    if not account_sid or not auth_token:
        raise AdminError(
            "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (the account's, from the Twilio Console)"
        )
    register_secret(auth_token)
    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=API_TIMEOUT_S))
    if base_url:  # a regional edge, or a local stand-in in tests
        client.api.base_url = base_url.rstrip("/")
    return client


def _reason(exc: requests.RequestException) -> str:
    """The cause of a failed request in a few words (requests wraps urllib3's in a 300-character message)."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {API_TIMEOUT_S:g} s"
    cause: object = exc.args[0] if exc.args else exc
    cause = getattr(cause, "reason", cause)  # urllib3's MaxRetryError holds the real error
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(exc).__name__
    return re.sub(r"^(<[^>]*>|\w+\([^)]*\)): ", "", text)  # "<HTTPSConnection object at 0x..>: " etc.


def api_error(exc: Exception, base_url: str) -> TwilioApiError:
    """What went wrong with a REST request, for a person: the HTTP status and Twilio's error, or why the API
    could not be reached. Never the auth token (it is in neither)."""
    if isinstance(exc, requests.RequestException):
        return TwilioApiError(
            f"cannot reach Twilio's REST API at {base_url}: {_reason(exc)} "
            "(check the network, or TWILIO_API_BASE_URL / --api-base-url)"
        )
    status: object = None
    code: object = None
    message = str(exc)
    if isinstance(exc, TwilioRestException):
        status, code, message = exc.status, exc.code, exc.msg
    elif isinstance(exc, TwilioException) and len(exc.args) > 1 and hasattr(exc.args[1], "status_code"):
        response = exc.args[1]  # a list's page: TwilioException("Unable to fetch page", response)
        status, message = response.status_code, str(getattr(response, "text", ""))[:300]
        try:
            body = json.loads(message)
            code, message = body.get("code"), body.get("message", message)
        except (ValueError, AttributeError):
            pass
    error = f", error {code}" if code else ""
    if status == 401:
        return TwilioApiError(
            f"Twilio refused the credentials (HTTP 401{error}: {message}): check TWILIO_ACCOUNT_SID and "
            "TWILIO_AUTH_TOKEN against the account's in the Twilio Console"
        )
    return TwilioApiError(f"Twilio's REST API answered HTTP {status}{error}: {message}")


def _api_call(client: Client, call: Callable[[], T]) -> T:
    try:
        return call()
    except (TwilioException, requests.RequestException) as exc:
        raise api_error(exc, client.api.base_url) from None


def list_numbers(client: Client) -> list[NumberConfig]:
    return [NumberConfig.of(n) for n in client.incoming_phone_numbers.list()]


def configure_number(
    client: Client,
    phone_number: str,
    service_url: str,
    *,
    voice_path: str = VOICE_PATH,
    status_path: str | None = STATUS_PATH,
    command: str = "gateway twilio numbers",
) -> tuple[NumberConfig, NumberConfig]:
    """Point the number's voice webhook (and call status callback, unless `status_path` is None) at the
    service; (before, after). SignalWire's Compatibility API takes the same request at its own paths."""
    found = client.incoming_phone_numbers.list(phone_number=phone_number)
    if not found:
        raise AdminError(f"{phone_number} is not a number of this account (see `{command}`)")
    before = NumberConfig.of(found[0])
    base = service_url.rstrip("/")
    fields = {"voice_url": base + voice_path, "voice_method": "POST"}
    if status_path is not None:
        fields |= {"status_callback": base + status_path, "status_callback_method": "POST"}
    after = client.incoming_phone_numbers(before.sid).update(**fields)
    return before, NumberConfig.of(after)


def describe_changes(before: NumberConfig, after: NumberConfig) -> str:
    lines = [f"{after.phone_number} ({after.sid}):"]
    for name in FIELDS:
        old, new = getattr(before, name), getattr(after, name)
        lines.append(
            f"  {name}: {old or '(none)'} -> {new}" if old != new else f"  {name}: {new} (unchanged)"
        )
    return "\n".join(lines)


def format_numbers(numbers: list[NumberConfig]) -> str:
    if not numbers:
        return "no phone numbers in this account"
    lines = [f"{'number':<16} {'voice webhook':<50} status callback"]
    for n in numbers:
        voice = f"{n.voice_method} {n.voice_url}" if n.voice_url else "(none)"
        lines.append(f"{n.phone_number:<16} {voice:<50} {n.status_callback or '(none)'}")
    return "\n".join(lines)


def add_twilio_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-base-url",
        metavar="URL",
        help="Twilio REST API base URL (default: TWILIO_API_BASE_URL, or Twilio's)",
    )
    sub = parser.add_subparsers(dest="twilio_command", required=True)
    configure = sub.add_parser("configure", help="point a number's voice webhook and status callback here")
    configure.add_argument("--number", required=True, help="the number, E.164 (+15551234567)")
    configure.add_argument("--url", help="the service's public base URL (default: PUBLIC_URL)")
    sub.add_parser("numbers", help="list the account's numbers and where they point")


def run_twilio_command(args: argparse.Namespace) -> int:
    settings = load_twilio_admin_settings()  # only what it uses: a bad PORT or model is not its business
    client = admin_client(
        settings.account_sid,
        settings.auth_token,
        args.api_base_url or settings.api_base_url or DEFAULT_API_BASE_URL,
    )
    if args.twilio_command == "numbers":
        print(format_numbers(_api_call(client, lambda: list_numbers(client))))
        return 0
    url = args.url or settings.public_url
    if not url or not url.startswith(("https://", "http://")):
        raise AdminError(
            "give --url https://your-host (or set PUBLIC_URL): where Twilio reaches this service"
        )
    if url.startswith("http://"):
        # Not refused (a tunnel or a test stand-in may be plain HTTP), but no production set-up should be.
        print(
            f"gateway: warning: {url} is not https: Twilio would send the webhook, its signature and the "
            "caller's number in clear, and Media Streams need wss://, which the service derives from "
            "PUBLIC_URL; give an https:// URL in production (`ngrok http 8080` gives one for development)",
            file=sys.stderr,
        )
    before, after = _api_call(client, lambda: configure_number(client, args.number, url))
    print(describe_changes(before, after))
    return 0
