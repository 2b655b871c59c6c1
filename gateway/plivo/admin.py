"""`gateway plivo configure`: point a Plivo number at this service.

Through Plivo's API (https://www.plivo.com/docs/voice/api/application, .../api/account/phone-number): the
application named `--app-name` (made if the account has none) answers at `<url>/plivo/answer` (POST), and
the number is attached to it. A one-off command: httpx's synchronous client, each request bounded.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from gateway.config import read_environment
from gateway.logs import register_secret
from gateway.plivo.answer import ANSWER_PATH
from gateway.plivo.rest import API_BASE_URL

API_TIMEOUT_S = 15.0
DEFAULT_APP_NAME = "gateway"


class AdminError(RuntimeError):
    """Something the operator can fix: a missing setting, a number the account does not have (status 2)."""


class PlivoApiError(RuntimeError):
    """Plivo's API refused the request, or could not be reached: one line saying which (status 1)."""


def _checked(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code == 401:
        raise PlivoApiError(
            f"Plivo refused the credentials ({what}: HTTP 401): check PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN"
        )
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    if response.status_code >= 300:
        raise PlivoApiError(
            f"Plivo answered HTTP {response.status_code} to {what}: {body.get('error', body)}"
        )
    return body if isinstance(body, dict) else {}


def configure(
    http: httpx.Client, auth_id: str, number: str, service_url: str, app_name: str
) -> tuple[str, bool]:
    """Point the application `app_name` at the service (making it if needed) and attach `number` to it;
    (its app_id, whether it was made)."""
    account = f"/v1/Account/{auth_id}"
    base = service_url.rstrip("/")
    settings = {"answer_url": base + ANSWER_PATH, "answer_method": "POST"}
    apps = _checked(
        http.get(f"{account}/Application/", params={"app_name": app_name}), "listing applications"
    )
    existing = next((a for a in apps.get("objects", []) if a.get("app_name") == app_name), None)
    if existing is None:
        made = _checked(
            http.post(f"{account}/Application/", json={"app_name": app_name, **settings}),
            "making the application",
        )
        app_id, new = str(made["app_id"]), True
    else:
        app_id, new = str(existing["app_id"]), False
        _checked(http.post(f"{account}/Application/{app_id}/", json=settings), "updating the application")
    digits = number.lstrip("+")
    attached = http.post(f"{account}/Number/{digits}/", json={"app_id": app_id})
    if attached.status_code == 404:
        raise AdminError(f"{number} is not a number of this account")
    _checked(attached, f"attaching {number}")
    return app_id, new


def add_plivo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-base-url", metavar="URL", help="Plivo's API (default: PLIVO_API_BASE_URL, or Plivo's)"
    )
    sub = parser.add_subparsers(dest="plivo_command", required=True)
    configure_ = sub.add_parser("configure", help="point a number's answer URL here (through an application)")
    configure_.add_argument("--number", required=True, help="the number (14155550123 or +14155550123)")
    configure_.add_argument("--url", help="the service's public base URL (default: PUBLIC_URL)")
    configure_.add_argument(
        "--app-name", default=DEFAULT_APP_NAME, help="the Plivo application (default: gateway)"
    )


def run_plivo_command(args: argparse.Namespace) -> int:
    env = read_environment()
    auth_id, auth_token = (env.get("PLIVO_AUTH_ID") or "").strip(), env.get("PLIVO_AUTH_TOKEN") or ""
    if not auth_id or not auth_token:
        raise AdminError("set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN (the account's, from the Plivo console)")
    register_secret(auth_token)
    url = (args.url or env.get("PUBLIC_URL") or "").rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise AdminError("give --url https://your-host (or set PUBLIC_URL): where Plivo reaches this service")
    if url.startswith("http://"):
        print(
            f"gateway: warning: {url} is not https: Plivo needs wss:// for the audio stream", file=sys.stderr
        )
    base = args.api_base_url or env.get("PLIVO_API_BASE_URL") or API_BASE_URL
    with httpx.Client(base_url=base, auth=(auth_id, auth_token), timeout=API_TIMEOUT_S) as http:
        try:
            app_id, new = configure(http, auth_id, args.number, url, args.app_name)
        except httpx.HTTPError as exc:
            raise PlivoApiError(f"cannot reach Plivo's API at {base}: {type(exc).__name__}") from None
    print(
        f"application {args.app_name} ({app_id}{', made' if new else ''}): answer_url POST {url}{ANSWER_PATH}"
    )
    print(f"  number {args.number}: attached")
    return 0
