"""Per-call stream tokens: a media stream must prove it belongs to a call our webhook answered.

The webhook hands Twilio a short-lived token bound to the CallSid as a `<Parameter>`; Twilio returns it in the
stream's `start.customParameters`. A stream without a valid, unexpired, unused token for its CallSid is closed
before any Live session is opened, so a socket that got past (or around) the signature check still costs
nothing. The key is derived from the Twilio auth token, so every instance behind a load balancer accepts the
tokens of every other; without an auth token (development) it is random per process.

Tokens are single-use per process: the first stream to redeem one wins, a second stream with the same token
is refused. No I/O here: the clock is passed in, and the state is a small dict of redeemed tokens that
forgets each one when it would have expired anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

PARAMETER = "token"  # the <Parameter> name the token travels under
DEFAULT_TTL_S = 60.0  # Twilio opens the stream within a second or two of reading the TwiML
# How long an answered call holds a place in the call limit while its stream is on the way. Short: behind a
# load balancer the stream may arrive at another instance, and this one never hears of it.
DEFAULT_PENDING_S = 15.0
_KEY_LABEL = b"gateway stream token v1"


def key_from_auth_token(auth_token: str | None) -> bytes:
    """A key every instance sharing the Twilio auth token derives alike; random when there is none."""
    if not auth_token:
        return secrets.token_bytes(32)
    return hmac.new(auth_token.encode(), _KEY_LABEL, hashlib.sha256).digest()


class StreamTokens:
    """Issues the webhook's stream tokens and redeems them on `start`; also counts the calls answered whose
    stream has not arrived yet, so they hold a place in the call limit."""

    def __init__(
        self,
        key: bytes,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
        pending_s: float = DEFAULT_PENDING_S,
    ) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.pending_s = min(pending_s, ttl_s)
        self._clock = clock  # wall clock: another instance may check what this one issued
        self._redeemed: dict[str, float] = {}  # nonce -> expiry, forgotten once expired
        self._outstanding: dict[str, float] = {}  # call_sid -> until: answered, stream not yet here

    def _mac(self, call_sid: str, expires: int, nonce: str) -> str:
        digest = hmac.new(self._key, f"{call_sid}|{expires}|{nonce}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def issue(self, call_sid: str) -> str:
        expires = int(self._clock() + self.ttl_s) + 1
        nonce = secrets.token_urlsafe(12)
        self._outstanding[call_sid] = self._clock() + self.pending_s
        return f"{expires}.{nonce}.{self._mac(call_sid, expires, nonce)}"

    def redeem(self, call_sid: str, token: str | None) -> str | None:
        """Use the token for this call's stream. Returns why it is refused, or None if it is good."""
        now = self._clock()
        self._forget_expired(now)
        if not token:
            return "no stream token"
        parts = token.split(".")
        if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit() and len(parts[0]) <= 12):
            return "malformed stream token"
        expires, nonce, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac, self._mac(call_sid, expires, nonce)):
            return "stream token does not match this call"
        if expires < now:
            return "stream token expired"
        if nonce in self._redeemed:
            return "stream token already used"
        self._redeemed[nonce] = expires
        self._outstanding.pop(call_sid, None)
        return None

    def outstanding(self) -> int:
        """Calls answered whose stream has not arrived yet (and still may): they hold a place in the limit."""
        self._forget_expired(self._clock())
        return len(self._outstanding)

    def _forget_expired(self, now: float) -> None:
        for table in (self._redeemed, self._outstanding):
            if table and min(table.values()) < now:
                for k in [k for k, exp in table.items() if exp < now]:
                    del table[k]
