"""SignalWire's request signatures and its media upgrade's bearer token.

Webhooks: SignalWire signs each request as Twilio does (HMAC-SHA1 over the URL and the sorted form
fields, base64) keyed with the space's Signing Key, in `X-SignalWire-Signature` (and `X-Twilio-Signature`,
for Twilio's libraries): https://developer.signalwire.com/compatibility-api/guides/general/
validating-requests/ ; SignalWire's own Python package validates them with Twilio's `RequestValidator`
(`signalwire.request_validator`, which also accepts a hex HMAC over a JSON body). We use Twilio's
validator directly: `signalwire` 2.x pins twilio 6, which the gateway cannot run on.

Media: SignalWire does not sign the WebSocket upgrade; cXML's `<Stream authBearerToken="...">` makes it
send `Authorization: Bearer <token>` with the upgrade instead
(https://developer.signalwire.com/compatibility-api/cxml/voice/stream). The token is a secret derived from
the stream tokens' key (`StreamTokens.bearer`), the same on every instance, given only in answers to
signed webhooks; an upgrade without it is refused before it is accepted. The per-call stream token
(a `<Parameter>`) is then redeemed on `start`, as on Twilio.
"""

from __future__ import annotations

import hmac

from twilio.request_validator import RequestValidator

SIGNATURE_HEADERS = ("x-signalwire-signature", "x-twilio-signature")
BEARER_PURPOSE = "signalwire media"


def signature_of(headers: dict[str, str] | object) -> str | None:
    """The request's signature header (SignalWire's name first)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name in SIGNATURE_HEADERS:
        if value := get(name):
            return str(value)
    return None


def webhook_ok(signing_key: str, url: str, params: dict[str, str], signature: str | None) -> bool:
    return bool(signature) and RequestValidator(signing_key).validate(url, params, signature or "")


def bearer_ok(expected: str, authorization: str | None) -> bool:
    """The upgrade's `Authorization` header carries our bearer token, compared in constant time."""
    given = (authorization or "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), expected.encode())
