"""The answer to Vonage's answer webhook: an NCCO that connects the call to our media WebSocket. Pure.

Built with Vonage's own models (`vonage-voice`): one `connect` action to a `websocket` endpoint
(https://developer.vonage.com/en/voice/voice-api/ncco-reference#connect) at `PUBLIC_URL`'s `/vonage/media`,
asking for L16 at 16 kHz (wideband, and Live's own input rate), with the call's values as the endpoint's
`headers` (Vonage repeats them in `websocket:connected`) and `"authorization": {"type": "vonage"}`, so the
upgrade carries Vonage's signed JWT. When our side closes the socket the NCCO has nothing left: the call ends.
"""

from __future__ import annotations

import re
from typing import Any

from vonage_voice.models import Connect, WebsocketEndpoint
from vonage_voice.models.common import WebsocketAuthorization

from gateway.vonage.protocol import CONTENT_TYPE

ANSWER_PATH, MEDIA_PATH, EVENT_PATH = "/vonage/answer", "/vonage/media", "/vonage/event"
_MSISDN = re.compile(r"[1-9]\d{6,14}")  # how Vonage writes numbers: E.164 digits without the +


def e164(number: str) -> str:
    """A Vonage number (digits) as E.164, as agents and records write it; anything else as it is."""
    return f"+{number}" if _MSISDN.fullmatch(number) else number


def connect_ncco(stream_url: str, headers: dict[str, str], called: str, signed: bool) -> list[dict[str, Any]]:
    """The NCCO: connect the call to `stream_url`, our `headers` on the socket; `signed` asks Vonage for its
    JWT on the upgrade (with VONAGE_SIGNATURE_SECRET set)."""
    endpoint = WebsocketEndpoint(
        uri=stream_url,
        contentType=CONTENT_TYPE,
        headers=headers,
        authorization=WebsocketAuthorization(type="vonage") if signed else None,
    )
    # `from` is the number the websocket leg presents: the one called, when it is a number.
    digits = called.lstrip("+")
    connect = (
        Connect(endpoint=[endpoint], from_=digits)
        if _MSISDN.fullmatch(digits)
        else Connect(endpoint=[endpoint], randomFromNumber=True)
    )
    return [connect.model_dump(mode="json", by_alias=True, exclude_none=True)]
