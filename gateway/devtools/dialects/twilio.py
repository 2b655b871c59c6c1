"""Twilio's dialect: form webhooks signed with X-Twilio-Signature, TwiML, Media Streams (mu-law 8 kHz)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urljoin, urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

from gateway.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.devtools.dialects import (
    Answered,
    Cleared,
    DialectError,
    GatewayMessage,
    Heard,
    MarkSent,
    Unexpected,
    WebhookRequest,
    new_id,
)
from gateway.twilio import protocol as tp

# What Twilio's HTTP client and its media-stream client call themselves.
WEBHOOK_USER_AGENT = "TwilioProxy/1.1"
STREAM_USER_AGENT = "Twilio.TmeWs/1.0"


def http_to_ws(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, *parts[1:]))


def connect_stream(twiml: str, base_url: str, what: str = "TwiML") -> Answered:
    """The <Connect><Stream> URL (relative ones resolved against base_url) and its <Parameter>s: TwiML, and
    the carriers' dialects of it (TeXML, cXML)."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise DialectError(f"webhook answered invalid {what} ({exc}): {twiml[:300]!r}") from None
    stream = root.find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        raise DialectError(f"{what} has no <Connect><Stream url=...>: {twiml[:300]!r}")
    url = http_to_ws(urljoin(base_url, stream.get("url", "")))
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return Answered(url, params)


class TwilioStream:
    """A Media Streams WebSocket, as Twilio speaks it."""

    def __init__(self, call_sid: str, account_sid: str, parameters: dict[str, str]) -> None:
        self.stream_sid = new_id("MZ")
        self._call_sid, self._account_sid, self._parameters = call_sid, account_sid, parameters
        self.sender = tp.TwilioSender(self.stream_sid)

    def connected(self) -> str:
        return self.sender.connected()

    def start(self) -> str:
        return self.sender.start(self._call_sid, self._account_sid, self._parameters)

    def media(self, pcm: bytes, timestamp_ms: int) -> str:
        return self.sender.media(pcm16_to_ulaw(pcm), timestamp_ms=timestamp_ms)

    def dtmf(self, digit: str) -> str:
        return self.sender.dtmf(digit)

    def mark(self, name: str) -> str:
        return self.sender.mark(name)

    def stop(self) -> str:
        return self.sender.stop(self._call_sid, self._account_sid)

    def parse(self, raw: str | bytes) -> GatewayMessage:
        try:
            event = tp.parse(raw)
        except tp.ProtocolError as exc:
            raise DialectError(str(exc)) from None
        if isinstance(event, tp.Media | tp.Mark | tp.Clear) and event.stream_sid != self.stream_sid:
            raise DialectError(f"wrong streamSid {event.stream_sid!r}")
        if isinstance(event, tp.Media):
            return Heard(ulaw_to_pcm16(event.payload), event.payload)
        if isinstance(event, tp.Mark):
            return MarkSent(event.name)
        if isinstance(event, tp.Clear):
            return Cleared()
        return Unexpected(type(event).__name__)  # Twilio-to-app messages have no business coming from the app


class TwilioDialect:
    """Twilio: the webhook and the stream upgrade signed with the auth token (None: unsigned)."""

    name = "twilio"
    rate = 8000
    webhook_path = "/twilio/voice"
    user_agent = STREAM_USER_AGENT

    def __init__(self, auth_token: str | None = None) -> None:
        self._validator = RequestValidator(auth_token) if auth_token else None

    def new_call_sid(self) -> str:
        return new_id("CA")

    def webhook(self, url: str, signed_url: str, params: dict[str, str]) -> WebhookRequest:
        headers = {"User-Agent": WEBHOOK_USER_AGENT}
        if self._validator is not None:
            headers["X-Twilio-Signature"] = self._validator.compute_signature(signed_url, params)
        return WebhookRequest("POST", url, headers, data=params)

    def answered(self, document: str, base_url: str) -> Answered:
        return connect_stream(document, base_url)

    def upgrade_headers(self, stream_url: str) -> dict[str, str]:
        if self._validator is None:
            return {}
        # Twilio signs the stream URL exactly as the TwiML wrote it, with no params.
        return {"X-Twilio-Signature": self._validator.compute_signature(stream_url, {})}

    def stream(
        self, call_sid: str, account_sid: str, answered: Answered, params: dict[str, str]
    ) -> TwilioStream:
        return TwilioStream(call_sid, account_sid, answered.parameters)
