"""`gateway vonage configure`: point a Vonage number, and the application it is linked to, at this service.

Through the Applications API v2 (`PUT /v2/applications/{id}`, https://developer.vonage.com/en/api/
application.v2) the application's answer URL becomes `<url>/vonage/answer` and its event URL
`<url>/vonage/event` (both POST, JSON; the fallback answer URL the same as the answer URL), with signed
callbacks on; then the Numbers API (`POST /number/update`, https://developer.vonage.com/en/api/numbers)
links the number to the application.
A one-off command: httpx's synchronous client, each request bounded.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from gateway.config import read_environment
from gateway.logs import register_secret
from gateway.vonage.answer import ANSWER_PATH, EVENT_PATH

API_BASE_URL = "https://api.nexmo.com"
REST_BASE_URL = "https://rest.nexmo.com"  # the Numbers API's host
API_TIMEOUT_S = 15.0


class AdminError(RuntimeError):
    """Something the operator can fix: a missing setting, a number the account does not have (status 2)."""


class VonageApiError(RuntimeError):
    """Vonage's API refused the request, or could not be reached: one line saying which (status 1)."""


def _checked(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code == 401:
        raise VonageApiError(
            f"Vonage refused the credentials ({what}: HTTP 401): check VONAGE_API_KEY and VONAGE_API_SECRET"
        )
    try:
        body = response.json()
    except ValueError:
        body = {"title": response.text[:200]}
    if response.status_code >= 300:
        raise VonageApiError(
            f"Vonage answered HTTP {response.status_code} to {what}: {body.get('title', body)}"
        )
    return body if isinstance(body, dict) else {}


def configure_application(
    http: httpx.Client, application_id: str, service_url: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Point the application's voice webhooks at the service, signed; (webhooks before, after)."""
    path = f"/v2/applications/{application_id}"
    application = _checked(http.get(path), "reading the application")
    voice = application.setdefault("capabilities", {}).setdefault("voice", {})
    before = dict(voice.get("webhooks", {}))
    base = service_url.rstrip("/")
    voice["webhooks"] = {
        **before,
        "answer_url": {"address": base + ANSWER_PATH, "http_method": "POST"},
        # Asked when the answer URL fails, or answers 503 while an instance drains: through the load balancer
        # the same address reaches another instance.
        "fallback_answer_url": {"address": base + ANSWER_PATH, "http_method": "POST"},
        "event_url": {"address": base + EVENT_PATH, "http_method": "POST"},
    }
    voice["signed_callbacks"] = (
        True  # Vonage signs the webhooks and the media upgrade (VONAGE_SIGNATURE_SECRET)
    )
    updated = _checked(http.put(path, json=application), "updating the application")
    return before, updated.get("capabilities", {}).get("voice", {}).get("webhooks", {})


def link_number(http: httpx.Client, api_key: str, api_secret: str, msisdn: str, application_id: str) -> None:
    """Link the number (digits, or E.164) to the application: its calls then ask our answer URL."""
    digits = msisdn.lstrip("+")
    auth = {"api_key": api_key, "api_secret": api_secret}
    found = _checked(http.get("/account/numbers", params={**auth, "pattern": digits}), "listing numbers")
    number = next((n for n in found.get("numbers", []) if n.get("msisdn") == digits), None)
    if number is None:
        raise AdminError(f"{msisdn} is not a number of this account")
    form = {**auth, "country": number["country"], "msisdn": digits, "app_id": application_id}
    result = _checked(http.post("/number/update", data=form), "linking the number")
    if str(result.get("error-code", "200")) != "200":
        raise VonageApiError(f"Vonage did not link {msisdn}: {result.get('error-code-label', result)}")


def add_vonage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-base-url", metavar="URL", help="Vonage's API (default: VONAGE_API_BASE_URL, or Vonage's)"
    )
    sub = parser.add_subparsers(dest="vonage_command", required=True)
    configure = sub.add_parser("configure", help="point a number and its application here")
    configure.add_argument("--url", help="the service's public base URL (default: PUBLIC_URL)")
    configure.add_argument("--number", required=True, help="the number to link to it (447700900000)")


def run_vonage_command(args: argparse.Namespace) -> int:
    env = read_environment()
    application_id = (env.get("VONAGE_APPLICATION_ID") or "").strip()
    api_key, api_secret = (env.get("VONAGE_API_KEY") or "").strip(), env.get("VONAGE_API_SECRET") or ""
    needed = {
        "VONAGE_APPLICATION_ID": application_id,
        "VONAGE_API_KEY": api_key,
        "VONAGE_API_SECRET": api_secret,
    }
    missing = [name for name, value in needed.items() if not value]
    if missing:
        raise AdminError(f"set {', '.join(missing)} (the application's id; the account's API key and secret)")
    register_secret(api_secret)
    url = (args.url or env.get("PUBLIC_URL") or "").rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise AdminError(
            "give --url https://your-host (or set PUBLIC_URL): where Vonage reaches this service"
        )
    if url.startswith("http://"):
        print(
            f"gateway: warning: {url} is not https: Vonage needs wss:// for the media socket", file=sys.stderr
        )
    base = args.api_base_url or env.get("VONAGE_API_BASE_URL") or None
    with (
        httpx.Client(base_url=base or API_BASE_URL, auth=(api_key, api_secret), timeout=API_TIMEOUT_S) as api,
        httpx.Client(base_url=base or REST_BASE_URL, timeout=API_TIMEOUT_S) as rest,
    ):
        try:
            before, after = configure_application(api, application_id, url)
            link_number(rest, api_key, api_secret, args.number, application_id)
        except httpx.HTTPError as exc:
            raise AdminError(
                f"cannot reach Vonage's API at {base or API_BASE_URL}: {type(exc).__name__}"
            ) from None
    print(f"application {application_id}:")
    for name in ("answer_url", "event_url"):
        old, new = before.get(name, {}), after.get(name, {})
        shown = f"{new.get('http_method', '')} {new.get('address', '')}"
        was = f"{old.get('http_method', '')} {old.get('address', '')}" if old else "(none)"
        print(f"  {name}: {was} -> {shown}" if old != new else f"  {name}: {shown} (unchanged)")
    print(f"  number {args.number}: linked")
    return 0
