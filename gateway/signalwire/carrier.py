"""SignalWire on the call path: its routes, line, upgrade check and REST client (see gateway.carriers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from gateway.carriers import Carrier, UpgradeRefusal
from gateway.config import Settings
from gateway.signalwire.answer import MEDIA_PATH, VOICE_PATH, voice
from gateway.signalwire.auth import BEARER_PURPOSE, bearer_ok
from gateway.signalwire.line import SignalWireLine
from gateway.signalwire.rest import signalwire_control
from gateway.twilio.rest import CallControl

if TYPE_CHECKING:
    from gateway.app import Gateway


def upgrade_refusal(gw: Gateway, ws: WebSocket) -> UpgradeRefusal | None:
    """The upgrade must carry the bearer token our cXML gave SignalWire (`authBearerToken`)."""
    if bearer_ok(gw.tokens.bearer(BEARER_PURPOSE), ws.headers.get("authorization")):
        return None
    return UpgradeRefusal("signature", "stream_bearer_rejected", {"path": MEDIA_PATH})


def line(ws: WebSocket, gw: Gateway) -> SignalWireLine:
    control = gw.controls.get("signalwire")
    return SignalWireLine(ws, control if isinstance(control, CallControl) else None)


def control(settings: Settings) -> CallControl | None:
    if not (
        settings.signalwire_project_id and settings.signalwire_api_token and settings.signalwire_space_url
    ):
        return None
    return signalwire_control(
        settings.signalwire_project_id, settings.signalwire_api_token, settings.signalwire_space_url
    )


SIGNALWIRE = Carrier(
    name="signalwire",
    answer_path=VOICE_PATH,
    answer=voice,
    media_path=MEDIA_PATH,
    line=line,
    upgrade_refusal=upgrade_refusal,
    control=control,
)
