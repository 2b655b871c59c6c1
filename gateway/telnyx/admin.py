"""`gateway telnyx configure`: point a Telnyx number at this service.

A Telnyx number takes its calls from a TeXML application (https://developers.telnyx.com/docs/voice/
programmable-voice/texml-fundamentals): the command creates one named `gemini-gateway` whose voice URL is
`PUBLIC_URL/telnyx/voice` (or updates it, if it exists), and assigns the number to it (the number's
`connection_id`). Telnyx's REST API v2 (`POST/PATCH /v2/texml_applications`, `GET/PATCH /v2/phone_numbers`),
JSON, `Authorization: Bearer <TELNYX_API_KEY>`; synchronous httpx: a one-off command, not the call path.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from gateway.carriers import service_url
from gateway.config import load_carrier_admin_settings
from gateway.logs import register_secret
from gateway.telnyx.answer import VOICE_PATH
from gateway.telnyx.rest import API_BASE_URL, error_detail

APPLICATION_NAME = "gemini-gateway"
API_TIMEOUT_S = 15.0


class TelnyxAdminError(RuntimeError):
    """Something the operator can fix: missing credentials, an unknown number."""


class TelnyxApiError(RuntimeError):
    """Telnyx's API refused the request, or could not be reached: one line that says which."""


class TelnyxAdmin:
    """The few requests `gateway telnyx` makes."""

    def __init__(self, api_key: str, base_url: str | None = None) -> None:
        self.base_url = (base_url or API_BASE_URL).rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=API_TIMEOUT_S
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise TelnyxApiError(
                f"cannot reach Telnyx's API at {self.base_url}: {type(exc).__name__} (check the network, or "
                "TELNYX_API_BASE_URL)"
            ) from None
        if response.status_code == 401:
            raise TelnyxApiError(f"Telnyx refused TELNYX_API_KEY (HTTP 401: {error_detail(response)})")
        if response.status_code >= 400:
            raise TelnyxApiError(f"Telnyx answered HTTP {response.status_code}: {error_detail(response)}")
        return response.json().get("data")

    def application(self, voice_url: str) -> tuple[dict[str, Any], bool]:
        """The gateway's TeXML application, pointed at `voice_url`; and whether it was created."""
        body = {"friendly_name": APPLICATION_NAME, "voice_url": voice_url, "voice_method": "post"}
        found = self._request(
            "GET", "/texml_applications", params={"filter[friendly_name]": APPLICATION_NAME}
        )
        for application in found or []:
            if application.get("friendly_name") == APPLICATION_NAME:
                return self._request("PATCH", f"/texml_applications/{application['id']}", json=body), False
        return self._request("POST", "/texml_applications", json=body), True

    def number(self, phone_number: str) -> dict[str, Any]:
        found = self._request("GET", "/phone_numbers", params={"filter[phone_number]": phone_number})
        if not found:
            raise TelnyxAdminError(f"{phone_number} is not a number of this Telnyx account")
        return dict(found[0])

    def assign(self, number: dict[str, Any], connection_id: str) -> dict[str, Any]:
        return dict(
            self._request("PATCH", f"/phone_numbers/{number['id']}", json={"connection_id": connection_id})
        )

    def close(self) -> None:
        self._http.close()


def configure(admin: TelnyxAdmin, phone_number: str, url: str) -> str:
    """Point `phone_number` at the service at `url`; what changed, for a person."""
    number = admin.number(phone_number)  # first: an unknown number changes nothing
    voice_url = url.rstrip("/") + VOICE_PATH
    application, created = admin.application(voice_url)
    after = admin.assign(number, str(application["id"]))
    verb = "created" if created else "updated"
    before_id, after_id = number.get("connection_id") or "(none)", after.get("connection_id")
    return "\n".join(
        [
            f"TeXML application {APPLICATION_NAME} ({application['id']}) {verb}: voice_url POST {voice_url}",
            f"{after.get('phone_number', phone_number)}: connection {before_id} -> {after_id}",
        ]
    )


def add_telnyx_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-base-url", metavar="URL", help="Telnyx API base URL (default: TELNYX_API_BASE_URL)"
    )
    sub = parser.add_subparsers(dest="telnyx_command", required=True)
    configure_parser = sub.add_parser(
        "configure", help="point a number at this service (a TeXML application)"
    )
    configure_parser.add_argument("--number", required=True, help="the number, E.164 (+15551234567)")
    configure_parser.add_argument("--url", help="the service's public base URL (default: PUBLIC_URL)")


def run_telnyx_command(args: argparse.Namespace) -> int:
    settings = load_carrier_admin_settings()
    api_key = settings.carriers["telnyx_api_key"]
    if not api_key:
        raise TelnyxAdminError("set TELNYX_API_KEY (Mission Control > Keys & Credentials > API Keys)")
    register_secret(api_key)
    url = service_url(args.url, settings.public_url, "Telnyx")
    admin = TelnyxAdmin(api_key, args.api_base_url or settings.carriers["telnyx_api_base_url"])
    try:
        print(configure(admin, args.number, url))
    finally:
        admin.close()
    if not settings.carriers["telnyx_public_key"]:
        print(
            "gateway: note: set TELNYX_PUBLIC_KEY (the account's public key) on the service: it refuses "
            "unsigned Telnyx webhooks only once it can check them",
            file=sys.stderr,
        )
    return 0
