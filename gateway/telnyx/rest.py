"""Telnyx's TeXML REST API for calls in progress: hand one to other TeXML (a transfer), or hang it up.

A call answered with TeXML is updated the way TeXML says (https://developers.telnyx.com/api-reference/
texml-rest-commands/update-call): `POST /v2/texml/Accounts/{AccountSid}/Calls/{CallSid}`, form-encoded
CamelCase fields, `Authorization: Bearer <TELNYX_API_KEY>`. `Texml` replaces the call's document (its
media stream ends and the new TeXML runs: `<Dial>` for a transfer); `Status=completed` ends it. A call that
has already ended answers 404 (or 422), which is not a failure here.

httpx, not Telnyx's SDK: the SDK is a 45 MB generated client for the whole API, and these are two form
posts; httpx is already the project's HTTP client. `TELNYX_API_BASE_URL` points it at a stand-in in tests
(gateway.devtools.telnyx_api).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
import structlog

log = structlog.get_logger("gateway.telnyx.rest")

API_BASE_URL = "https://api.telnyx.com/v2"
ALREADY_ENDED = (404, 422)


class TelnyxError(RuntimeError):
    """Telnyx refused a request: its status and the first error's detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"Telnyx answered HTTP {status}: {detail}")
        self.status = status


def dial_texml(target: str) -> str:
    response = ET.Element("Response")
    ET.SubElement(response, "Dial").text = target
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode")


def error_detail(response: httpx.Response) -> str:
    """The first error of a Telnyx error body ({"errors": [{"code", "title", "detail"}]}), or the text."""
    try:
        errors = response.json().get("errors") or [{}]
        first = errors[0]
        return f"{first.get('code', '')} {first.get('title', '')}: {first.get('detail', '')}".strip()
    except (ValueError, AttributeError, IndexError):
        return response.text[:200]


class TelnyxControl:
    """Calls in progress through Telnyx's TeXML REST API."""

    def __init__(self, api_key: str, *, base_url: str | None = None, timeout_s: float = 10.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=(base_url or API_BASE_URL).rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )

    async def update(self, account_sid: str, call_sid: str, fields: dict[str, str]) -> bool:
        """Update the call; False if it had already ended. Raises TelnyxError if Telnyx refuses."""
        response = await self._http.post(f"/texml/Accounts/{account_sid}/Calls/{call_sid}", data=fields)
        if response.status_code in ALREADY_ENDED:
            log.info("call_already_ended", call_sid=call_sid, status=response.status_code)
            return False
        if response.status_code >= 400:
            raise TelnyxError(response.status_code, error_detail(response))
        return True

    async def transfer(self, account_sid: str, call_sid: str, target: str) -> bool:
        return await self.update(account_sid, call_sid, {"Texml": dial_texml(target)})

    async def hang_up(self, account_sid: str, call_sid: str) -> bool:
        return await self.update(account_sid, call_sid, {"Status": "completed"})

    async def close(self) -> None:
        await self._http.aclose()
