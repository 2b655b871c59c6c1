"""Plivo's dialect: a form answer webhook signed with V3, Plivo XML, and an audio stream of JSON events with
L16 at 16 kHz (gateway.plivo).

The simulator signs as Plivo does, with the account's auth token (PLIVO_AUTH_TOKEN, which the gateway under
test shares): the webhook's V3 signature over the URL, nonce and sorted parameters, and the upgrade's over
the stream URL.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, urljoin, urlsplit

from gateway.devtools.dialects import (
    Answered,
    Cleared,
    DialectError,
    GatewayMessage,
    Heard,
    MarkSent,
    WebhookRequest,
)
from gateway.devtools.dialects.twilio import http_to_ws
from gateway.plivo import protocol as pp
from gateway.plivo.answer import ANSWER_PATH
from gateway.plivo.signing import signed_headers

WEBHOOK_USER_AGENT = "PlivoHTTP/1.0"
STREAM_USER_AGENT = "Plivo-AudioStream/1.0"


class PlivoStream:
    """A Plivo audio stream, as Plivo speaks it."""

    def __init__(self, call_uuid: str, account_id: str) -> None:
        self.stream_sid = str(uuid.uuid4())
        self._call_uuid, self._account_id = call_uuid, account_id
        self.sender = pp.PlivoSender(self.stream_sid)
        self._ms = 0

    def connected(self) -> None:
        return None  # Plivo's first message is `start`

    def start(self) -> str:
        return self.sender.start(self._call_uuid, self._account_id)

    def media(self, pcm: bytes, timestamp_ms: int) -> str:
        self._ms = timestamp_ms
        return self.sender.media(pcm, timestamp_ms)

    def dtmf(self, digit: str) -> str:
        return self.sender.dtmf(digit, self._ms)

    def mark(self, name: str) -> str:
        return self.sender.played(name)

    def stop(self) -> None:
        return None  # the caller hanging up closes the socket

    def parse(self, raw: str | bytes) -> GatewayMessage:
        if isinstance(raw, bytes):
            raise DialectError("a binary frame (Plivo's messages are JSON text)")
        try:
            command = pp.parse_command(raw)
        except pp.ProtocolError as exc:
            raise DialectError(str(exc)) from None
        if command.event == "playAudio":
            if command.rate != pp.RATE:
                raise DialectError(f"playAudio at {command.rate} Hz on a {pp.RATE} Hz stream")
            return Heard(command.pcm, command.pcm)
        if command.event == "checkpoint":
            return MarkSent(command.name)
        return Cleared()


class PlivoDialect:
    """Plivo: the webhook and the upgrade signed with `auth_token` (None: unsigned)."""

    name = "plivo"
    rate = pp.RATE
    webhook_path = ANSWER_PATH
    user_agent = STREAM_USER_AGENT

    def __init__(self, auth_token: str | None = None) -> None:
        self._token = auth_token

    def new_call_sid(self) -> str:
        return str(uuid.uuid4())

    def webhook(self, url: str, signed_url: str, params: dict[str, str]) -> WebhookRequest:
        fields = {
            "CallUUID": params.get("CallSid", ""),
            "From": params.get("From", "").lstrip("+"),
            "To": params.get("To", "").lstrip("+"),
            "Direction": params.get("Direction", "inbound"),
            "CallStatus": "in-progress",
            "Event": "StartApp",
        }
        headers = {"User-Agent": WEBHOOK_USER_AGENT}
        if self._token:
            headers.update(signed_headers(self._token, "POST", signed_url, fields))
        return WebhookRequest("POST", url, headers, data=fields)

    def answered(self, document: str, base_url: str) -> Answered:
        try:
            stream = ET.fromstring(document).find("./Stream")
        except ET.ParseError as exc:
            raise DialectError(f"webhook answered invalid XML ({exc}): {document[:300]!r}") from None
        if stream is None or not (stream.text or "").strip():
            raise DialectError(f"the XML has no <Stream>: {document[:300]!r}")
        if stream.get("bidirectional") != "true":
            raise DialectError("<Stream> is not bidirectional: the caller would hear nothing")
        if stream.get("contentType") != pp.CONTENT_TYPE:
            raise DialectError(f"<Stream> asks for {stream.get('contentType')!r}, not {pp.CONTENT_TYPE}")
        url = http_to_ws(urljoin(base_url, (stream.text or "").strip()))
        return Answered(url, dict(parse_qsl(urlsplit(url).query)))

    def upgrade_headers(self, stream_url: str) -> dict[str, str]:
        return signed_headers(self._token, "GET", stream_url) if self._token else {}

    def stream(
        self, call_sid: str, account_sid: str, answered: Answered, params: dict[str, str]
    ) -> PlivoStream:
        return PlivoStream(call_sid, account_sid)
