"""Vonage's Voice API for a call in progress: hang it up, transfer it
(https://developer.vonage.com/en/api/voice#updateCall: `PUT /v1/calls/{uuid}`, an application JWT).

httpx's async client, so a round trip never blocks the event loop that carries every call's audio (the
`vonage` SDK's client is synchronous). The JWT is minted with Vonage's `vonage-jwt`
(`signing.ApplicationJwt`).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from vonage_voice.models import Connect, PhoneEndpoint

from gateway.vonage.signing import ApplicationJwt

API_BASE_URL = "https://api.nexmo.com"
TIMEOUT_S = 10.0


class VonageApiError(RuntimeError):
    """The Voice API refused a request (the status and Vonage's title say why)."""


def transfer_ncco(number: str, from_number: str) -> list[dict[str, Any]]:
    """The NCCO a transfer puts the call on: connect it to `number`, presenting the number the caller called
    (one of the application's) as caller ID, or any of the application's when that is not a number."""
    digits, caller_id = number.lstrip("+"), from_number.lstrip("+")
    endpoint = PhoneEndpoint(number=digits)
    try:
        connect = Connect(endpoint=[endpoint], from_=caller_id)
    except ValueError:  # not a number (a SIP or app call)
        connect = Connect(endpoint=[endpoint], randomFromNumber=True)
    return [connect.model_dump(mode="json", by_alias=True, exclude_none=True)]


class VonageControl:
    """A call in progress through the Voice API."""

    def __init__(self, jwt: ApplicationJwt, base_url: str | None = None) -> None:
        self._jwt = jwt
        self._http = httpx.AsyncClient(base_url=(base_url or API_BASE_URL).rstrip("/"), timeout=TIMEOUT_S)

    async def _update(self, uuid: str, body: dict[str, Any]) -> bool:
        """PUT the call; False if it had already ended (Vonage answers 404, or 400 for a completed call)."""
        headers = {"Authorization": f"Bearer {self._jwt.mint(time.time())}"}
        response = await self._http.put(f"/v1/calls/{uuid}", json=body, headers=headers)
        if response.status_code in (200, 204):
            return True
        if response.status_code in (400, 404):
            return False
        raise VonageApiError(f"Voice API answered {response.status_code}: {_title(response)}")

    async def hang_up(self, uuid: str) -> bool:
        return await self._update(uuid, {"action": "hangup"})

    async def transfer(self, uuid: str, number: str, from_number: str) -> bool:
        ncco = transfer_ncco(number, from_number)
        return await self._update(uuid, {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}})

    async def close(self) -> None:
        await self._http.aclose()


def _title(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:100]
    return str(body.get("title") or body.get("error_title") or body)[:100] if isinstance(body, dict) else ""
