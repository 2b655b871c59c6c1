"""The browser softphone's wire protocol: parse what the page sends, build what we send back; no I/O.

One WebSocket per call (`/console/phone/ws`). Audio travels as binary frames, everything else as JSON text:

page -> gateway
    {"type": "start", "agent": "<name>", "quality": "phone" | "wideband"}   once, first
    binary                                   the microphone: mu-law 8 kHz (phone) or PCM16LE 16 kHz (wideband)
    {"type": "mark", "name": "..."}          the page's playout reached the mark (or a `clear` flushed it)
    {"type": "dtmf", "digit": "5"}           a keypad button
    {"type": "hangup"}                       the Hang up button
    {"type": "ping", "id": 7}                answered at once with a `pong`: the page measures the round trip

gateway -> page
    {"type": "started", "call_sid", "agent", "quality", "in_rate", "out_rate", "encoding"}
    binary                                   the agent: mu-law 8 kHz (phone) or PCM16LE 24 kHz (wideband)
    {"type": "mark", "name"}   {"type": "clear"}   {"type": "pong", "id"}
    {"type": "transcript", "role": "caller" | "agent", "text"}
    {"type": "response", "latency_ms"}       a turn's response latency as the gateway measured it
    {"type": "transfer", "target"}           the agent transferred the call (a browser cannot be moved)
    {"type": "ended", "outcome"}             the call is over, and why

The two qualities are what a caller on a phone hears (`phone`: mu-law at 8 kHz both ways, so the call's
resamplers run as for Twilio) and what the model produces (`wideband`: no telephony codec, Live's own rates).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from gateway.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.call.line import LineAudio
from gateway.wire import ProtocolError as ProtocolError  # a message the page should not have sent: skipped
from gateway.wire import json_object, shown

MAX_TEXT = 2048  # our control messages are tiny: anything longer is not one of them
MAX_AUDIO_S = 0.2  # the page sends 20 ms frames; a frame longer than this is refused, not buffered
DIGITS = frozenset("0123456789*#ABCD")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.+ ")


@dataclass(frozen=True, slots=True)
class Quality:
    """How the audio of a browser call travels: its rates at the line and its encoding on the wire."""

    name: Literal["phone", "wideband"]
    audio: LineAudio
    encoding: Literal["mulaw", "pcm16"]

    def decode(self, data: bytes) -> bytes:
        """A microphone frame from the page as PCM16LE at `audio.in_rate`."""
        if not data:
            raise ProtocolError("an empty audio frame")
        if len(data) > MAX_AUDIO_S * self.audio.in_rate * self.bytes_per_sample:
            raise ProtocolError(f"audio frame of {len(data)} bytes: frames are 20 ms")
        if self.encoding == "mulaw":
            return ulaw_to_pcm16(data)
        if len(data) % 2:
            raise ProtocolError("a PCM16 frame has an odd number of bytes")
        return data

    def encode(self, pcm: bytes) -> bytes:
        """The agent's PCM16LE at `audio.out_rate` as the page plays it."""
        return pcm16_to_ulaw(pcm) if self.encoding == "mulaw" else pcm

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.encoding == "mulaw" else 2


PHONE = Quality("phone", LineAudio(8000, 8000, mulaw=True), "mulaw")  # exactly what a Twilio caller hears
WIDEBAND = Quality("wideband", LineAudio(16000, 24000), "pcm16")  # Live's rates: no resampler, no codec
QUALITIES: dict[str, Quality] = {q.name: q for q in (PHONE, WIDEBAND)}


@dataclass(frozen=True, slots=True)
class Start:
    agent: str  # the agent's name ("" for the default agent)
    quality: Quality


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    id: int


PageMessage = Start | Mark | Dtmf | Hangup | Ping


def parse(text: str) -> PageMessage:
    """One JSON control message from the page, or ProtocolError saying what is wrong with it."""
    if len(text) > MAX_TEXT:
        raise ProtocolError(f"control message of {len(text)} characters")
    msg = json_object(text, "audio frames are binary, control messages text")
    kind = msg.get("type")
    if kind == "start":
        quality = QUALITIES.get(_str(msg, "quality", "phone"))
        if quality is None:
            raise ProtocolError(f"quality must be one of {', '.join(QUALITIES)}")
        return Start(_name(msg, "agent"), quality)
    if kind == "mark":
        name = _name(msg, "name")
        if not name:
            raise ProtocolError("a mark needs a name")
        return Mark(name)
    if kind == "dtmf":
        digit = _str(msg, "digit", "")
        if digit not in DIGITS or len(digit) != 1:
            raise ProtocolError("digit must be one of 0-9, *, #, A-D")
        return Dtmf(digit)
    if kind == "hangup":
        return Hangup()
    if kind == "ping":
        ping_id = msg.get("id")
        if not isinstance(ping_id, int) or isinstance(ping_id, bool) or not 0 <= ping_id < 2**53:
            raise ProtocolError("a ping's id is a non-negative integer")
        return Ping(ping_id)
    raise ProtocolError(f"unknown message type {shown(kind)}")


def _str(msg: dict[str, Any], key: str, default: str) -> str:
    value = msg.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(f"{key} must be a string")
    return value


def _name(msg: dict[str, Any], key: str) -> str:
    value = _str(msg, key, "")
    if len(value) > 64 or not set(value) <= _NAME_CHARS:
        raise ProtocolError(f"{key} must be up to 64 letters, digits and _-.+")
    return value


# --- what the gateway sends ---


def _message(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def started_message(call_sid: str, agent: str, quality: Quality) -> str:
    rates = quality.audio
    return _message(
        "started",
        call_sid=call_sid,
        agent=agent,
        quality=quality.name,
        in_rate=rates.in_rate,
        out_rate=rates.out_rate,
        encoding=quality.encoding,
    )


def mark_message(name: str) -> str:
    return _message("mark", name=name)


def clear_message() -> str:
    return _message("clear")


def pong_message(ping_id: int) -> str:
    return _message("pong", id=ping_id)


def transcript_message(role: str, text: str) -> str:
    return _message("transcript", role=role, text=text)


def response_message(latency_s: float) -> str:
    return _message("response", latency_ms=round(latency_s * 1000))


def transfer_message(target: str) -> str:
    return _message("transfer", target=target)


def ended_message(outcome: str) -> str:
    return _message("ended", outcome=outcome)
