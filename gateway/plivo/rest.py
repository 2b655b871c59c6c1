"""Plivo's Voice API for a call in progress: hang it up (`DELETE /v1/Account/{auth_id}/Call/{call_uuid}/`,
https://www.plivo.com/docs/voice/api/call/hang-up-a-call) and transfer it (`POST .../Call/{call_uuid}/` with
`legs=aleg` and an `aleg_url` whose XML dials the target, https://www.plivo.com/docs/voice/api/call/
transfer-a-call). HTTP basic auth with the auth id and token.

httpx's async client, so a round trip never blocks the event loop that carries every call's audio (the
`plivo` SDK's client is synchronous).
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

API_BASE_URL = "https://api.plivo.com"
TIMEOUT_S = 10.0
TRANSFER_PATH = "/plivo/transfer"  # our route whose XML dials the target (`aleg_url`)


class PlivoApiError(RuntimeError):
    """The API refused a request (the status and Plivo's error say why)."""


def transfer_url(public_url: str, number: str) -> str:
    return f"{public_url.rstrip('/')}{TRANSFER_PATH}?to={quote(number, safe='')}"


class PlivoControl:
    """A call in progress through Plivo's API."""

    def __init__(self, auth_id: str, auth_token: str, base_url: str | None = None) -> None:
        self.auth_id = auth_id
        self._http = httpx.AsyncClient(
            base_url=(base_url or API_BASE_URL).rstrip("/"), auth=(auth_id, auth_token), timeout=TIMEOUT_S
        )

    def _call(self, call_uuid: str) -> str:
        return f"/v1/Account/{self.auth_id}/Call/{call_uuid}/"

    @staticmethod
    def _done(response: httpx.Response) -> bool:
        """True on success; False if the call had already ended (404); PlivoApiError otherwise."""
        if response.status_code in (200, 202, 204):
            return True
        if response.status_code == 404:
            return False
        try:
            error = str(response.json().get("error", ""))[:100]
        except (ValueError, AttributeError):
            error = response.text[:100]
        raise PlivoApiError(f"Plivo answered {response.status_code}: {error}")

    async def hang_up(self, call_uuid: str) -> bool:
        return self._done(await self._http.delete(self._call(call_uuid)))

    async def transfer(self, call_uuid: str, aleg_url: str) -> bool:
        """Send the caller to the XML at `aleg_url` (our `transfer_url`, which dials the target)."""
        body = {"legs": "aleg", "aleg_url": aleg_url, "aleg_method": "POST"}
        return self._done(await self._http.post(self._call(call_uuid), json=body))

    async def close(self) -> None:
        await self._http.aclose()
