"""Per-call stream tokens: a media stream must prove it belongs to a call our webhook answered.

The webhook hands Twilio a short-lived token bound to the CallSid as a `<Parameter>`; Twilio returns it in the
stream's `start.customParameters`. A stream without a valid, unexpired, unused token for its CallSid is closed
before any Live session is opened, so a socket that got past (or around) the signature check still costs
nothing. The key is derived from the Twilio auth token, so every instance behind a load balancer accepts the
tokens of every other; without an auth token (development) it is random per machine.

Tokens are single-use per machine: the first stream to redeem one wins, a second stream with the same token
is refused, on any of the machine's gateway processes (`WEB_CONCURRENCY`, `gateway.machine`).
One CallSid gets one token: Twilio's signature on a webhook has no timestamp, so a captured
webhook can be replayed at will, and every replay must not be a new token (and a new pre-warmed Live
session). The answer given to each CallSid is remembered (`REMEMBER_S`, at most `MAX_REMEMBERED` of them):
asked again, the webhook gives the same answer while the token is still waiting for its stream, and refuses
once it has been used or has expired (`previous`). No I/O here: the clock is passed in, and the state is
small dicts that forget each entry once it can no longer matter. The answers are remembered per process:
a replayed webhook that lands on another process of the machine gets a fresh token, as it would on another
instance; its stream still needs the stream URL's signature, and a CallSid's stream is one call at a time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

PARAMETER = "token"  # the <Parameter> name the token travels under
DEFAULT_TTL_S = 60.0  # Twilio opens the stream within a second or two of reading the TwiML
# How long an answered call holds a place in the call limit while its stream is on the way. Short: behind a
# load balancer the stream may arrive at another instance, and this one never hears of it.
DEFAULT_PENDING_S = 15.0
# How long the answer given to a CallSid is remembered, so that a replay of its webhook cannot get a new token
# (a call lasts at most MAX_CALL_DURATION_S; a replay after this gets a new token, whose stream then needs the
# stream URL's signature too). At most MAX_REMEMBERED CallSids (the oldest forgotten first): under 20 MB.
REMEMBER_S = 3600.0
MAX_REMEMBERED = 50_000
_KEY_LABEL = b"gateway stream token v1"

AnswerState = Literal["waiting", "used", "expired", "busy"]


@dataclass(slots=True)
class _Answer:
    token: str  # "" when the webhook answered busy
    expires: float  # the token's expiry
    forget_at: float
    used: bool = False
    moved: bool = False  # the answer to a call a drain moved here


@dataclass(frozen=True, slots=True)
class Previous:
    """What a CallSid was answered before: its token still `waiting` for its stream (the same answer is
    given again), `used` by a stream or `expired` (a replay: refused), or `busy` (the same refusal); and
    whether that answer was to a call a drain moved here."""

    state: AnswerState
    token: str = ""
    moved: bool = False


def key_from_auth_token(auth_token: str | None) -> bytes:
    """A key every instance sharing the Twilio auth token derives alike; random when there is none."""
    if not auth_token:
        return secrets.token_bytes(32)
    return hmac.new(auth_token.encode(), _KEY_LABEL, hashlib.sha256).digest()


class Redeemed(Protocol):
    """Tokens redeemed by every process of the machine (`gateway.machine.Machine`)."""

    def redeem(self, nonce: str, expires: float, now: float) -> str | None: ...


class StreamTokens:
    """Issues the webhook's stream tokens and redeems them on `start`; also counts the calls answered whose
    stream has not arrived yet, so they hold a place in the call limit."""

    def __init__(
        self,
        key: bytes,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
        pending_s: float = DEFAULT_PENDING_S,
        shared: Redeemed | None = None,
    ) -> None:
        self._key = key
        self._shared = shared  # the machine's redeemed tokens, when several processes serve one port
        self.ttl_s = ttl_s
        self.pending_s = min(pending_s, ttl_s)
        self._clock = clock  # wall clock: another instance may check what this one issued
        self._redeemed: dict[str, float] = {}  # nonce -> expiry, forgotten once expired
        self._outstanding: dict[str, float] = {}  # call_sid -> until: answered, stream not yet here
        self._answers: dict[str, _Answer] = {}  # call_sid -> what its webhook was answered, oldest first

    def now(self) -> float:
        """The tokens' clock (wall time: another instance may check what this one issued)."""
        return self._clock()

    def _mac(self, call_sid: str, expires: int, nonce: str) -> str:
        digest = hmac.new(self._key, f"{call_sid}|{expires}|{nonce}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def issue(self, call_sid: str, moved: bool = False) -> str:
        """The stream token of this call: a new one, or the one already issued while it waits for its stream
        (one CallSid, one token). The call holds a place in the limit until its stream arrives. `moved`: the
        call comes back after a drain moved it (see `previous`)."""
        now = self._clock()
        self._forget_answers(now)
        answer = self._answers.get(call_sid)
        if answer is not None and answer.token and not answer.used and answer.expires >= now:
            return answer.token
        expires = int(now + self.ttl_s) + 1
        nonce = secrets.token_urlsafe(12)
        token = f"{expires}.{nonce}.{self._mac(call_sid, expires, nonce)}"
        self._outstanding[call_sid] = now + self.pending_s
        self._remember(call_sid, _Answer(token, expires, now + REMEMBER_S, moved=moved))
        return token

    def answered_busy(self, call_sid: str) -> None:
        """The webhook refused this call (the limit): asked again, it refuses again."""
        now = self._clock()
        self._forget_answers(now)
        self._remember(call_sid, _Answer("", now, now + REMEMBER_S))

    def previous(self, call_sid: str) -> Previous | None:
        """What this CallSid's webhook was answered before, if it was (within REMEMBER_S)."""
        now = self._clock()
        self._forget_answers(now)
        answer = self._answers.get(call_sid)
        if answer is None:
            return None
        if not answer.token:
            return Previous("busy")
        if answer.used:
            return Previous("used", moved=answer.moved)
        if answer.expires < now:
            return Previous("expired", moved=answer.moved)
        return Previous("waiting", answer.token, answer.moved)

    def _remember(self, call_sid: str, answer: _Answer) -> None:
        self._answers.pop(call_sid, None)  # to the end: the order is the order of forgetting
        self._answers[call_sid] = answer
        while len(self._answers) > MAX_REMEMBERED:
            del self._answers[next(iter(self._answers))]

    def _forget_answers(self, now: float) -> None:
        answers = self._answers
        while answers:
            oldest = next(iter(answers))
            if answers[oldest].forget_at >= now:
                break
            del answers[oldest]

    def bearer(self, purpose: str) -> str:
        """A secret for `purpose`, derived from the tokens' key (alike on every instance): for carriers that
        present a fixed bearer token on their media upgrade (SignalWire's `authBearerToken`)."""
        digest = hmac.new(self._key, f"bearer|{purpose}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def check(self, call_sid: str, token: str | None) -> str | None:
        """Why this token could not be redeemed for this call, or None; nothing is used up. For carriers
        whose media upgrade carries the token (in the stream URL) but no signature: checked before the
        upgrade is accepted, then redeemed on the stream's start."""
        now = self._clock()
        self._forget_expired(now)
        refusal, nonce = self._verify(call_sid, token, now)
        if refusal is None and nonce in self._redeemed:
            return "stream token already used"
        return refusal

    def _verify(self, call_sid: str, token: str | None, now: float) -> tuple[str | None, str]:
        """(why the token is not this call's and unexpired, or None; its nonce)."""
        if not token:
            return "no stream token", ""
        parts = token.split(".")
        if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit() and len(parts[0]) <= 12):
            return "malformed stream token", ""
        expires, nonce, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac, self._mac(call_sid, expires, nonce)):
            return "stream token does not match this call", nonce
        if expires < now:
            return "stream token expired", nonce
        return None, nonce

    def redeem(self, call_sid: str, token: str | None) -> str | None:
        """Use the token for this call's stream. Returns why it is refused, or None if it is good."""
        now = self._clock()
        self._forget_expired(now)
        refusal, nonce = self._verify(call_sid, token, now)
        if refusal is not None:
            return refusal
        expires = int((token or "").split(".")[0])
        if nonce in self._redeemed:
            return "stream token already used"
        if self._shared is not None and (refusal := self._shared.redeem(nonce, expires, now)) is not None:
            return refusal
        self._redeemed[nonce] = expires
        self._outstanding.pop(call_sid, None)
        if (answer := self._answers.get(call_sid)) is not None and answer.token == token:
            answer.used = True
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
