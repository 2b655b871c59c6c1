"""Telnyx's webhook signatures: Ed25519 over `"{timestamp}|{body}"`, checked against the account's public key.

Telnyx sends `telnyx-signature-ed25519` (base64 of the 64-byte signature) and `telnyx-timestamp` (Unix
seconds) with every webhook, TeXML's included; the public key is the account's, shown in Mission Control
(https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks#webhook-signing). A request
is refused unless the signature matches the exact body and the timestamp is within `TOLERANCE_S` of our
clock (the replay window Telnyx's own SDKs use: `telnyx.lib.webhook_verification`). Within that window a
replay of the same webhook gets the same answer (one CallSid, one stream token: gateway.stream_tokens).

Telnyx does not sign its media WebSocket: the stream is authenticated by the stream token alone, which the
signed webhook's answer put in the stream URL (see gateway.telnyx.answer), and checked before the upgrade
is accepted. Pure: the clock is passed in.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TOLERANCE_S = 300


class WebhookVerifier:
    """Checks Telnyx's signature on a webhook with the account's Ed25519 public key (base64)."""

    def __init__(self, public_key: str) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))

    def refusal(self, body: bytes, signature: str | None, timestamp: str | None, now: float) -> str | None:
        """Why this webhook is refused, or None: it is Telnyx's, and fresh."""
        if not signature or not timestamp:
            return f"no {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers"
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            return "the timestamp is not Unix seconds"
        if abs(now - int(timestamp)) > TOLERANCE_S:
            return f"the timestamp is more than {TOLERANCE_S} s from now (a replay, or a clock far off)"
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return "the signature is not base64"
        try:
            self._key.verify(raw, timestamp.encode() + b"|" + body)
        except InvalidSignature:
            return "the signature does not match"
        return None


def sign(private_key: Ed25519PrivateKey, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers Telnyx would send with `body` (the caller simulator and the tests sign with these)."""
    signature = private_key.sign(str(timestamp).encode() + b"|" + body)
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: str(timestamp)}


def public_key_of(private_key: Ed25519PrivateKey) -> str:
    """The base64 public key Telnyx would show for `private_key` (TELNYX_PUBLIC_KEY)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
