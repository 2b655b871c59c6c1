"""SignalWire's dialect: Twilio's, with its own signature header, UUID ids and a bearer on the upgrade."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from gateway.devtools.dialects import Answered, WebhookRequest
from gateway.devtools.dialects.twilio import TwilioDialect, TwilioStream

WEBHOOK_USER_AGENT = "SignalWire-Compatibility/1.0"
STREAM_USER_AGENT = "SignalWire-Stream/1.0"


class SignalWireStream(TwilioStream):
    def __init__(self, call_sid: str, account_sid: str, parameters: dict[str, str]) -> None:
        super().__init__(call_sid, account_sid, parameters)
        self.stream_sid = str(uuid.uuid4())
        self.sender.stream_sid = self.stream_sid


class SignalWireDialect(TwilioDialect):
    """SignalWire's Compatibility API: webhooks signed with the space's signing key (None: unsigned)."""

    name = "signalwire"
    webhook_path = "/signalwire/voice"
    user_agent = STREAM_USER_AGENT

    def __init__(self, signing_key: str | None = None) -> None:
        super().__init__(signing_key)
        self._bearer = ""

    def new_call_sid(self) -> str:
        return str(uuid.uuid4())

    def webhook(self, url: str, signed_url: str, params: dict[str, str]) -> WebhookRequest:
        fields = {**params, "AccountSid": str(uuid.uuid5(uuid.NAMESPACE_URL, params.get("AccountSid", "")))}
        request = super().webhook(url, signed_url, fields)
        headers = {"User-Agent": WEBHOOK_USER_AGENT}
        if signature := request.headers.get("X-Twilio-Signature"):  # SignalWire sends it under both names
            headers.update({"X-SignalWire-Signature": signature, "X-Twilio-Signature": signature})
        return WebhookRequest("POST", url, headers, data=fields)

    def answered(self, document: str, base_url: str) -> Answered:
        answered = super().answered(document, base_url)
        stream = ET.fromstring(document).find("./Connect/Stream")
        self._bearer = (stream.get("authBearerToken") or "") if stream is not None else ""
        return answered

    def upgrade_headers(self, stream_url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._bearer}"} if self._bearer else {}

    def stream(
        self, call_sid: str, account_sid: str, answered: Answered, params: dict[str, str]
    ) -> SignalWireStream:
        return SignalWireStream(call_sid, account_sid, answered.parameters)
