"""Telnyx media streaming protocol core: parse and build messages, no I/O.

Telnyx opens the WebSocket named by `<Stream url>` and sends JSON text frames: `connected`, then `start`
(the call's ids, who calls whom, and `media_format`), `media` (base64 RTP payloads, no RTP headers),
`dtmf`, `mark` (the echo of one of ours, once the audio before it has played), `error` and `stop`. With
bidirectional RTP streaming the application sends back `media` (a payload in the bidirectional codec),
`mark` and `clear`. See https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming and
https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket.

L16 is linear PCM in network byte order (big-endian, RFC 3551 section 4.5.11), which the seam carries as
PCM16LE: `l16_to_pcm16` and `pcm16_to_l16` swap bytes. Both sides live here: the gateway parses what
Telnyx sends and builds what it may send back; the caller simulator (`TelnyxSender`) does the reverse.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.audio import audioop
from gateway.wire import ProtocolError as ProtocolError  # re-exported: the line catches it here
from gateway.wire import as_int as _int
from gateway.wire import as_object as _obj
from gateway.wire import base64_payload as _b64
from gateway.wire import base64_text, json_object
from gateway.wire import shown as _shown

# Stream ids are Telnyx UUIDs; call control ids look like "v3:..." (base64url). Spliced into hand-built JSON.
_ID = re.compile(r"[A-Za-z0-9:_=-]{1,128}")
ENCODINGS = {"L16", "PCMU", "PCMA"}  # the codecs a line can carry without a codec library


@dataclass(frozen=True, slots=True)
class Connected:
    """`connected`: Telnyx's first message on a stream."""

    version: str


@dataclass(frozen=True, slots=True)
class Start:
    """`start`: the stream's metadata, once, before any media."""

    stream_id: str
    call_control_id: str  # the call's id: TeXML's CallSid, and the id its REST API takes
    caller: str
    called: str
    encoding: str  # L16, PCMU or PCMA
    sample_rate: int
    channels: int
    client_state: str = ""


@dataclass(slots=True)  # not frozen: 50 a second per call
class Media:
    """`media`: a chunk of the caller's audio in the stream's encoding (20 ms by default)."""

    stream_id: str
    payload: bytes
    track: str = "inbound"


@dataclass(frozen=True, slots=True)
class Dtmf:
    """`dtmf`: the caller pressed a key."""

    stream_id: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    """`mark`: the echo of a mark we sent, once the audio queued before it has played (or was cleared)."""

    stream_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    """`clear`: empty the playout queue. Sent by the gateway, never by Telnyx; parsed for the simulator."""

    stream_id: str


@dataclass(frozen=True, slots=True)
class Error:
    """`error`: Telnyx could not use something we sent (a bad payload, say); the stream goes on."""

    stream_id: str
    code: int
    title: str


@dataclass(frozen=True, slots=True)
class Stop:
    """`stop`: the stream has ended (the caller hung up, or the call moved on)."""

    stream_id: str


TelnyxEvent = Connected | Start | Media | Dtmf | Mark | Clear | Error | Stop

DTMF_DIGITS = frozenset("0123456789*#ABCD")


def _text(value: Any, what: str, limit: int = 200) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"{what} is not a short string: {_shown(value)}")
    return value


def parse(text: str | bytes) -> TelnyxEvent:
    """Parse one WebSocket message into a typed event, or raise ProtocolError."""
    msg = json_object(text, "binary frame (Telnyx stream messages are JSON text)")
    event = msg.get("event")
    sid = msg.get("stream_id") or ""
    if not isinstance(sid, str) or (sid and not _ID.fullmatch(sid)):
        raise ProtocolError("stream_id is not a plain id")
    if event == "media":
        media = _obj(msg.get("media"), "media")
        return Media(sid, _b64(media.get("payload")), _text(media.get("track"), "media.track") or "inbound")
    if event == "start":
        start = _obj(msg.get("start"), "start")
        fmt = _obj(start.get("media_format", {}), "start.media_format")
        call_id = _text(start.get("call_control_id"), "start.call_control_id")
        if not _ID.fullmatch(call_id):
            raise ProtocolError("start.call_control_id is not a plain id")
        encoding = _text(fmt.get("encoding"), "media_format.encoding").upper() or "PCMU"
        if encoding not in ENCODINGS:
            raise ProtocolError(f"media_format.encoding {_shown(encoding)} is not one of {sorted(ENCODINGS)}")
        rate = _int(fmt.get("sample_rate", 8000), "media_format.sample_rate")
        if rate not in (8000, 16000) or (encoding != "L16" and rate != 8000):
            raise ProtocolError(f"media_format: {encoding} at {rate} Hz is not carried")
        channels = _int(fmt.get("channels", 1), "media_format.channels")
        if channels != 1:
            raise ProtocolError(f"media_format.channels is {channels}, not 1")
        return Start(
            stream_id=sid,
            call_control_id=call_id,
            caller=_text(start.get("from"), "start.from"),
            called=_text(start.get("to"), "start.to"),
            encoding=encoding,
            sample_rate=rate,
            channels=channels,
            client_state=_text(start.get("client_state"), "start.client_state", 4096),
        )
    if event == "dtmf":
        digit = _obj(msg.get("dtmf"), "dtmf").get("digit")
        if not isinstance(digit, str) or digit not in DTMF_DIGITS:
            raise ProtocolError(f"dtmf.digit {_shown(digit)} is not a key")
        return Dtmf(sid, digit)
    if event == "mark":
        return Mark(sid, _text(_obj(msg.get("mark"), "mark").get("name"), "mark.name"))
    if event == "stop":
        return Stop(sid)
    if event == "connected":
        return Connected(_text(msg.get("version"), "version"))
    if event == "clear":
        return Clear(sid)
    if event == "error":
        payload = _obj(msg.get("payload", {}), "error.payload")
        return Error(
            sid, _int(payload.get("code", 0), "error.code"), _text(payload.get("title"), "error.title")
        )
    raise ProtocolError(f"unknown event {_shown(event)}")


# --- audio: L16 on the wire, PCM16LE on the seam ---


def l16_to_pcm16(payload: bytes) -> bytes:
    """L16 (big-endian) -> PCM16LE, whatever the host's byte order: one byte swap (an odd trailing byte is
    dropped)."""
    return audioop.byteswap(payload[: len(payload) // 2 * 2], 2)


def pcm16_to_l16(pcm: bytes) -> bytes:
    """PCM16LE -> L16 (big-endian): the same swap the other way."""
    return l16_to_pcm16(pcm)


# --- what the gateway sends ---


def media_message(payload: bytes) -> str:
    # Hand-built: this runs 50 times a second per call, and base64 output never needs JSON escaping.
    return '{"event":"media","media":{"payload":"' + base64_text(payload) + '"}}'


def mark_message(name: str) -> str:
    return json.dumps({"event": "mark", "mark": {"name": name}})


def clear_message() -> str:
    return '{"event":"clear"}'


# --- what Telnyx sends (the caller simulator's side) ---


class TelnyxSender:
    """Builds Telnyx's side of a stream, with its sequence numbers and media chunk counters."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.sequence = 0
        self.chunk = 0

    def _next(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "version": "1.0.0"})

    def start(
        self, call_control_id: str, caller: str, called: str, encoding: str = "L16", rate: int = 16000
    ) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequence_number": self._next(),
                "start": {
                    "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
                    "call_control_id": call_control_id,
                    "client_state": None,
                    "from": caller,
                    "to": called,
                    "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1},
                },
                "stream_id": self.stream_id,
            }
        )

    def media(self, payload: bytes, timestamp_ms: int) -> str:
        self.chunk += 1
        return json.dumps(
            {
                "event": "media",
                "sequence_number": self._next(),
                "media": {
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    "timestamp": str(timestamp_ms),
                    "payload": base64.b64encode(payload).decode("ascii"),
                },
                "stream_id": self.stream_id,
            }
        )

    def mark(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequence_number": self._next(),
                "stream_id": self.stream_id,
                "mark": {"name": name},
            }
        )

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequence_number": self._next(),
                "stream_id": self.stream_id,
                "dtmf": {"digit": digit},
            }
        )

    def stop(self, call_control_id: str) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequence_number": self._next(),
                "stop": {"call_control_id": call_control_id},
                "stream_id": self.stream_id,
            }
        )
