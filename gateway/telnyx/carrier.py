"""Telnyx on the call path: its routes, line, upgrade check and REST client (see gateway.carriers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from gateway.carriers import Carrier, UpgradeRefusal
from gateway.config import Settings
from gateway.stream_tokens import PARAMETER as TOKEN_PARAMETER
from gateway.telnyx.answer import CALL_QUERY, MEDIA_PATH, VOICE_PATH, voice
from gateway.telnyx.line import TelnyxLine
from gateway.telnyx.rest import TelnyxControl

if TYPE_CHECKING:
    from gateway.app import Gateway


def upgrade_refusal(gw: Gateway, ws: WebSocket) -> UpgradeRefusal | None:
    """Telnyx does not sign its media upgrade: the stream URL our signed webhook answered carries the CallSid
    and its stream token, checked here (not used up: the `start` redeems it) so that a socket without one is
    refused with HTTP 403 before it is accepted."""
    refusal = gw.tokens.check(ws.query_params.get(CALL_QUERY, ""), ws.query_params.get(TOKEN_PARAMETER))
    if refusal is None:
        return None
    return UpgradeRefusal("token", "stream_token_rejected", {"detail": refusal})


def line(ws: WebSocket, gw: Gateway) -> TelnyxLine:
    control = gw.controls.get("telnyx")
    return TelnyxLine(ws, control if isinstance(control, TelnyxControl) else None)


def control(settings: Settings) -> TelnyxControl | None:
    if not settings.telnyx_api_key:
        return None
    return TelnyxControl(settings.telnyx_api_key, base_url=settings.telnyx_api_base_url)


TELNYX = Carrier(
    name="telnyx",
    answer_path=VOICE_PATH,
    answer=voice,
    media_path=MEDIA_PATH,
    line=line,
    upgrade_refusal=upgrade_refusal,
    control=control,
)
