"""Telnyx's dialect: TeXML webhooks signed with Ed25519, and a media stream of L16 at 16 kHz.

Telnyx holds the private key of the account's signing pair; the simulator signs with one you give it
(base64 of the 32-byte Ed25519 seed, `TELNYX_SIGNING_PRIVATE_KEY`), whose public key the gateway under test
has as TELNYX_PUBLIC_KEY (`python -m gateway.devtools.dialects.telnyx` makes a pair).
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audio import audioop, pcm16_to_ulaw, ulaw_to_pcm16
from gateway.devtools.dialects import (
    Answered,
    Cleared,
    DialectError,
    GatewayMessage,
    Heard,
    MarkSent,
    Unexpected,
    WebhookRequest,
)
from gateway.devtools.dialects.twilio import connect_stream
from gateway.telnyx import protocol as tp
from gateway.telnyx.auth import public_key_of, sign

WEBHOOK_USER_AGENT = "Telnyx TeXML/1.0"
STREAM_USER_AGENT = "Telnyx Media Streaming/1.0"


def private_key_from(secret: str) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret, validate=True))
    except ValueError:
        raise ValueError("the Telnyx signing key must be base64 of a 32-byte Ed25519 private key") from None


def new_key_pair() -> tuple[str, str]:
    """(private, public), base64: the simulator signs with the first, the gateway checks with the second."""
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode(), public_key_of(key)


class TelnyxStream:
    """A Telnyx media WebSocket, as Telnyx speaks it."""

    def __init__(self, call_sid: str, caller: str, called: str, encoding: str, rate: int) -> None:
        self.stream_sid = str(uuid.uuid4())
        self._call_sid, self._caller, self._called = call_sid, caller, called
        self._encoding, self._rate = encoding, rate
        self.sender = tp.TelnyxSender(self.stream_sid)

    def connected(self) -> str:
        return self.sender.connected()

    def start(self) -> str:
        return self.sender.start(self._call_sid, self._caller, self._called, self._encoding, self._rate)

    def _encode(self, pcm: bytes) -> bytes:
        if self._encoding == "L16":
            return tp.pcm16_to_l16(pcm)
        return audioop.lin2alaw(pcm, 2) if self._encoding == "PCMA" else pcm16_to_ulaw(pcm)

    def _decode(self, payload: bytes) -> bytes:
        if self._encoding == "L16":
            return tp.l16_to_pcm16(payload)
        return audioop.alaw2lin(payload, 2) if self._encoding == "PCMA" else ulaw_to_pcm16(payload)

    def media(self, pcm: bytes, timestamp_ms: int) -> str:
        return self.sender.media(self._encode(pcm), timestamp_ms)

    def dtmf(self, digit: str) -> str:
        return self.sender.dtmf(digit)

    def mark(self, name: str) -> str:
        return self.sender.mark(name)

    def stop(self) -> str:
        return self.sender.stop(self._call_sid)

    def parse(self, raw: str | bytes) -> GatewayMessage:
        try:
            event = tp.parse(raw)
        except tp.ProtocolError as exc:
            raise DialectError(str(exc)) from None
        if isinstance(event, tp.Media):
            return Heard(self._decode(event.payload), event.payload)
        if isinstance(event, tp.Mark):
            return MarkSent(event.name)
        if isinstance(event, tp.Clear):
            return Cleared()
        return Unexpected(type(event).__name__)


class TelnyxDialect:
    """Telnyx TeXML: the webhook signed with `signing_key` (base64 Ed25519 private key; None: unsigned)."""

    name = "telnyx"
    webhook_path = "/telnyx/voice"
    user_agent = STREAM_USER_AGENT

    def __init__(self, signing_key: str | None = None) -> None:
        self._key = private_key_from(signing_key) if signing_key else None
        self.rate = 16000  # what the answer asks for (read from it in `answered`)
        self.encoding = "L16"

    def new_call_sid(self) -> str:
        return "v3:" + base64.urlsafe_b64encode(secrets.token_bytes(39)).decode()

    def webhook(self, url: str, signed_url: str, params: dict[str, str]) -> WebhookRequest:
        fields = {**params, "AccountSid": str(uuid.uuid5(uuid.NAMESPACE_URL, params.get("AccountSid", "")))}
        fields.pop("ApiVersion", None)
        body = urlencode(fields).encode()
        headers = {"User-Agent": WEBHOOK_USER_AGENT, "Content-Type": "application/x-www-form-urlencoded"}
        if self._key is not None:
            headers.update(sign(self._key, body, int(time.time())))
        return WebhookRequest("POST", url, headers, content=body)

    def answered(self, document: str, base_url: str) -> Answered:
        answered = connect_stream(document, base_url, "TeXML")
        stream = ET.fromstring(document).find("./Connect/Stream")
        assert stream is not None  # connect_stream found it
        if stream.get("bidirectionalMode") != "rtp":
            raise DialectError("TeXML <Stream> is not bidirectionalMode=rtp: the caller would hear nothing")
        codec = (stream.get("bidirectionalCodec") or "PCMU").upper()
        if codec not in tp.ENCODINGS:
            raise DialectError(f"TeXML <Stream> asks for {codec}, which the simulator does not speak")
        self.encoding = codec
        self.rate = int(stream.get("bidirectionalSamplingRate") or 8000) if codec == "L16" else 8000
        return answered

    def upgrade_headers(self, stream_url: str) -> dict[str, str]:
        return {}  # Telnyx does not sign its media upgrade

    def stream(
        self, call_sid: str, account_sid: str, answered: Answered, params: dict[str, str]
    ) -> TelnyxStream:
        return TelnyxStream(call_sid, params.get("From", ""), params.get("To", ""), self.encoding, self.rate)


if __name__ == "__main__":
    private, public = new_key_pair()
    print(f"TELNYX_SIGNING_PRIVATE_KEY={private}  # the simulator's (gateway call --carrier telnyx)")
    print(f"TELNYX_PUBLIC_KEY={public}  # the gateway's")
