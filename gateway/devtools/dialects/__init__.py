"""How the caller simulator speaks each carrier: its dialect (`gateway call --carrier NAME`).

A dialect knows one carrier's side of a call: how it signs and posts the answer webhook, how to read the
answer document for the stream's URL and parameters, how it signs the media upgrade (if it does), and how
its media stream speaks (a `DialectStream`: start, media, marks, keys, stop; and what the gateway's
messages mean). The simulator's clock, playout model and measurements are the same for every carrier
(gateway.devtools.simulator); only the words differ.

Twilio's dialect is the default. Each carrier's lives in its own module here, registered in `DIALECTS`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class DialectError(ValueError):
    """A message from the gateway the dialect cannot read: counted and shown as a bad message."""


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """The answer webhook as the carrier sends it."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] | None = None  # form fields
    content: bytes | None = None  # a raw body (JSON, or a form body signed as bytes)
    params: dict[str, str] | None = None  # the query (GET webhooks)


@dataclass(frozen=True, slots=True)
class Answered:
    """What the answer document says: where to open the stream, and the per-call values it carries."""

    stream_url: str
    parameters: dict[str, str]


# What a gateway message means to the caller's side.
@dataclass(slots=True)
class Heard:
    """Agent audio: PCM16LE at the dialect's rate, and the payload as it came (mu-law on Twilio)."""

    pcm: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class MarkSent:
    name: str


@dataclass(frozen=True, slots=True)
class Cleared:
    pass


@dataclass(frozen=True, slots=True)
class Unexpected:
    """A well-formed message the gateway has no business sending (a carrier-to-app event, say)."""

    kind: str


GatewayMessage = Heard | MarkSent | Cleared | Unexpected


class DialectStream(Protocol):
    """One call's media stream in the carrier's words."""

    stream_sid: str

    def connected(self) -> str | bytes | None:
        """What the carrier sends first as the stream opens (None: nothing)."""
        ...

    def start(self) -> str | bytes | None:
        """The stream's start, which opens its timeline (None: the carrier sends none)."""
        ...

    def media(self, pcm: bytes, timestamp_ms: int) -> str | bytes:
        """One 20 ms frame of the caller's audio (PCM16LE at the dialect's rate)."""
        ...

    def dtmf(self, digit: str) -> str | bytes | None:
        """A key the caller pressed (None: the carrier does not send keys on the stream)."""
        ...

    def mark(self, name: str) -> str | bytes | None:
        """The echo of the gateway's mark once the audio before it has played (None: no marks)."""
        ...

    def stop(self) -> str | bytes | None:
        """What the carrier sends when the caller hangs up, before closing the socket (None: nothing)."""
        ...

    def parse(self, raw: str | bytes) -> GatewayMessage:
        """A message from the gateway; raises DialectError if it cannot be read."""
        ...


class Dialect(Protocol):
    """One carrier, as the simulator speaks it."""

    name: str
    rate: int  # the stream's PCM rate both ways
    webhook_path: str  # where the carrier posts the answer webhook
    user_agent: str  # what the carrier's media client calls itself

    def new_call_sid(self) -> str: ...

    def webhook(self, url: str, signed_url: str, params: dict[str, str]) -> WebhookRequest:
        """The signed answer webhook (`params`: CallSid, AccountSid, From, To, Direction, as Twilio names
        them; the dialect renames them as its carrier does)."""
        ...

    def answered(self, document: str, base_url: str) -> Answered:
        """Read the answer document; raises DialectError if it does not stream the call."""
        ...

    def upgrade_headers(self, stream_url: str) -> dict[str, str]:
        """The headers that sign the media upgrade (empty: the carrier does not sign it)."""
        ...

    def stream(
        self, call_sid: str, account_sid: str, answered: Answered, params: dict[str, str]
    ) -> DialectStream: ...


def new_id(prefix: str, size: int = 16) -> str:
    return prefix + secrets.token_hex(size)


DialectFactory = Callable[[str | None], Dialect]  # the carrier's signing secret (None: unsigned) -> dialect


def dialects() -> dict[str, DialectFactory]:
    """Every carrier the simulator speaks, by name (imported when asked for)."""
    from gateway.devtools.dialects.plivo import PlivoDialect
    from gateway.devtools.dialects.signalwire import SignalWireDialect
    from gateway.devtools.dialects.telnyx import TelnyxDialect
    from gateway.devtools.dialects.twilio import TwilioDialect
    from gateway.devtools.dialects.vonage import VonageDialect

    return {
        "twilio": TwilioDialect,
        "telnyx": TelnyxDialect,
        "signalwire": SignalWireDialect,
        "vonage": VonageDialect,
        "plivo": PlivoDialect,
    }


# The environment variable each dialect's signing secret comes from in `gateway call` (the gateway's own
# variable where the secret is shared; Telnyx signs with a private key only Telnyx and tests hold).
SIGNING_VARIABLES = {
    "twilio": "TWILIO_AUTH_TOKEN",
    "telnyx": "TELNYX_SIGNING_PRIVATE_KEY",
    "signalwire": "SIGNALWIRE_SIGNING_KEY",
    "vonage": "VONAGE_SIGNATURE_SECRET",
    "plivo": "PLIVO_AUTH_TOKEN",
}
