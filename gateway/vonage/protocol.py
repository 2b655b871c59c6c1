"""Vonage Voice API WebSockets: parse what Vonage sends, build what we send back. No I/O, no clock.

The wire (https://developer.vonage.com/en/voice/voice-api/concepts/websockets, with the NCCO `connect`
action's `websocket` endpoint, https://developer.vonage.com/en/voice/voice-api/ncco-reference):

- Vonage's first message is JSON text, `{"event": "websocket:connected", "content-type":
  "audio/l16;rate=16000", ...}`, with the `headers` of our NCCO's endpoint as top-level fields (our call's
  uuid, numbers and stream token travel there).
- Audio both ways is **binary** frames of raw 16-bit little-endian linear PCM, mono, 20 ms each: 640 bytes at
  16 kHz. Vonage takes only whole frames, so the agent's audio is cut into 640-byte frames here and the last
  frame of a turn is padded with silence (`Framer`).
- A keypress is a JSON text event, `{"event": "websocket:dtmf", "digit": "5", "duration": 260}`.
- Vonage buffers what we send and plays it out at its pace. Two JSON commands act on that buffer:
  `{"action": "notify", "payload": {...}}` is answered with `{"event": "websocket:notify", "payload": {...}}`
  once the audio sent before it has played (our playout mark), and `{"action": "clear"}` empties the buffer,
  answered with `{"event": "websocket:cleared"}` (barge-in). Whether Vonage still answers the notifies a
  clear flushed is not documented, so the line releases them itself on `websocket:cleared` and ignores a late
  answer (`gateway.call.line_marks.PendingMarks`): either way every mark comes back once, as on Twilio.
- The caller hanging up closes the socket.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.wire import ProtocolError as ProtocolError  # re-exported: the line catches it here
from gateway.wire import json_object
from gateway.wire import shown as _shown

RATE = 16000
CONTENT_TYPE = "audio/l16;rate=16000"
FRAME_BYTES = 640  # 20 ms of 16 kHz 16-bit mono: the only frame size Vonage plays
MARK_KEY = "mark"  # the key of our mark's name in a notify payload
_DIGIT = re.compile(r"[0-9*#A-D]")
_CONTENT_TYPE = re.compile(r"audio/l16;\s*rate=(8000|16000|24000)", re.IGNORECASE)
MAX_HEADERS = 32  # our NCCO sends a handful; a connected message with hundreds is not Vonage's


@dataclass(frozen=True, slots=True)
class Connected:
    """`websocket:connected`: the stream is up, with its audio format and our NCCO endpoint's headers."""

    rate: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)  # not frozen: 50 a second per call
class Audio:
    """A binary frame of the caller's audio: PCM16LE at the stream's rate."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    """`websocket:dtmf`: the caller pressed a key."""

    digit: str
    duration_ms: int = 0


@dataclass(frozen=True, slots=True)
class Notified:
    """`websocket:notify`: the audio sent before our notify has played; `name` is our mark's."""

    name: str


@dataclass(frozen=True, slots=True)
class Cleared:
    """`websocket:cleared`: Vonage emptied its playback buffer after our `clear`."""


VonageEvent = Connected | Audio | Dtmf | Notified | Cleared


def parse(message: str | bytes) -> VonageEvent:
    """One WebSocket message (binary: audio; text: a JSON event) as a typed event, or ProtocolError."""
    if isinstance(message, bytes | bytearray):
        if len(message) % 2:
            raise ProtocolError(f"an audio frame of {len(message)} bytes (16-bit samples come in pairs)")
        return Audio(bytes(message))
    msg = json_object(message, "")  # text: a binary frame is audio, above
    event = msg.get("event")
    if event == "websocket:dtmf":
        digit = msg.get("digit")
        if not isinstance(digit, str) or not _DIGIT.fullmatch(digit):
            raise ProtocolError(f"dtmf digit {_shown(digit)} is not a key")
        duration = msg.get("duration", 0)
        return Dtmf(digit, duration if isinstance(duration, int) and not isinstance(duration, bool) else 0)
    if event == "websocket:notify":
        payload = msg.get("payload")
        name = payload.get(MARK_KEY) if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name:
            raise ProtocolError("notify without our mark in its payload")
        return Notified(name)
    if event == "websocket:cleared":
        return Cleared()
    if event == "websocket:connected":
        content_type = msg.get("content-type")
        match = _CONTENT_TYPE.fullmatch(content_type) if isinstance(content_type, str) else None
        if match is None:
            raise ProtocolError(f"content-type {_shown(content_type)} is not L16")
        headers = {k: v for k, v in msg.items() if k not in ("event", "content-type")}
        if len(headers) > MAX_HEADERS:
            raise ProtocolError(f"{len(headers)} headers on websocket:connected")
        return Connected(int(match.group(1)), {str(k): str(v) for k, v in headers.items()})
    raise ProtocolError(f"unknown event {_shown(event)}")


# --- what the gateway sends ---


def notify_message(name: str) -> str:
    return json.dumps({"action": "notify", "payload": {MARK_KEY: name}})


def clear_message() -> str:
    return '{"action":"clear"}'


class Framer:
    """Cuts the agent's audio into the whole 20 ms frames Vonage plays, carrying a partial frame over to the
    next chunk; at a mark (the end of a turn) the partial frame is padded with silence and sent."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def frames(self, pcm: bytes) -> list[bytes]:
        data = self._rest + pcm if self._rest else pcm
        whole = len(data) - len(data) % FRAME_BYTES
        self._rest = data[whole:]
        return [data[i : i + FRAME_BYTES] for i in range(0, whole, FRAME_BYTES)]

    def flush(self) -> bytes | None:
        """The partial frame padded to a whole one (None if there is none)."""
        if not self._rest:
            return None
        frame, self._rest = self._rest.ljust(FRAME_BYTES, b"\0"), b""
        return frame

    def drop(self) -> None:
        self._rest = b""


# --- what Vonage sends (the caller simulator and tests build these) ---


def connected_message(headers: dict[str, str], content_type: str = CONTENT_TYPE) -> str:
    return json.dumps({"event": "websocket:connected", "content-type": content_type, **headers})


def dtmf_message(digit: str, duration_ms: int = 260) -> str:
    return json.dumps({"event": "websocket:dtmf", "digit": digit, "duration": duration_ms})


def notified_message(payload: Any) -> str:
    return json.dumps({"event": "websocket:notify", "payload": payload})


def cleared_message() -> str:
    return '{"event":"websocket:cleared"}'


@dataclass(frozen=True, slots=True)
class Command:
    """A JSON command the gateway sent (parsed by the caller simulator): `notify` with its payload, or
    `clear`."""

    action: str
    payload: Any = None


def parse_command(text: str) -> Command:
    """What the simulator makes of a text message from the gateway."""
    msg = json_object(text, "a binary frame is audio, not a command")
    if msg.get("action") not in ("notify", "clear"):
        raise ProtocolError("not a notify or clear command")
    return Command(str(msg["action"]), msg.get("payload"))
