"""Twilio Media Streams protocol core: parse and build messages, no I/O.

Both sides live here: the gateway parses what Twilio sends (``connected``, ``start``, ``media``, ``dtmf``,
``mark``, ``stop``) and builds what it may send back (``media``, ``mark``, ``clear``); the caller simulator
does the reverse. Counters and timestamps are strings on the wire, as Twilio sends them.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.wire import ProtocolError as ProtocolError  # re-exported: lines and the simulator catch it here
from gateway.wire import as_int as _int
from gateway.wire import as_object as _obj
from gateway.wire import base64_payload as _b64
from gateway.wire import base64_text, json_object
from gateway.wire import shown as _shown

# Stream sids are spliced into hand-built JSON (see media_message), so only plain ids are accepted.
_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Connected:
    """`connected`: Twilio's first message on a stream (no streamSid yet)."""

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    """`start`: the stream's metadata, once, before any media: its sids, tracks, the `<Parameter>`s of the
    TwiML (`custom_parameters`) and the audio format (mu-law 8 kHz mono)."""

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int


@dataclass(slots=True)  # not frozen: 50 a second per call, and frozen __init__ costs a setattr per field
class Media:
    """`media`: a chunk of the caller's audio (mu-law, usually 20 ms); `chunk` and `timestamp_ms` count from
    the stream's start."""

    stream_sid: str
    payload: bytes
    track: str = "inbound"
    chunk: int = 0
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class Dtmf:
    """`dtmf`: the caller pressed a key."""

    stream_sid: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    """`mark`: Twilio's echo of a mark sent on the stream, once the audio queued before it has played, or when
    a `clear` flushed it (so an echo alone does not prove the caller heard the audio)."""

    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    """`clear`: empty the playout buffer. Sent by the gateway, never by Twilio; parsed for the caller
    simulator."""

    stream_sid: str


@dataclass(frozen=True, slots=True)
class Stop:
    """`stop`: the stream has ended (the caller hung up, or the call moved on to other TwiML)."""

    stream_sid: str
    call_sid: str = ""


TwilioEvent = Connected | Start | Media | Dtmf | Mark | Clear | Stop


def parse(text: str | bytes) -> TwilioEvent:
    """Parse one WebSocket text message into a typed event, or raise ProtocolError."""
    msg = json_object(text, "binary frame (Media Streams messages are JSON text)")
    event = msg.get("event")
    sid = msg.get("streamSid") or ""
    if not isinstance(sid, str) or (sid and not _SID.fullmatch(sid)):
        raise ProtocolError("streamSid is not a plain id")
    try:
        if event == "media":
            media = _obj(msg.get("media"), "media")
            return Media(
                stream_sid=sid,
                payload=_b64(media.get("payload")),
                track=str(media.get("track", "inbound")),
                chunk=_int(media.get("chunk", 0), "media.chunk"),
                timestamp_ms=_int(media.get("timestamp", 0), "media.timestamp"),
            )
        if event == "start":
            start = _obj(msg.get("start"), "start")
            fmt = _obj(start.get("mediaFormat", {}), "start.mediaFormat")
            params = _obj(start.get("customParameters") or {}, "start.customParameters")
            sid = sid or str(start.get("streamSid", ""))
            if not _SID.fullmatch(sid):
                raise ProtocolError("start has no usable streamSid")
            return Start(
                stream_sid=sid,
                call_sid=str(start.get("callSid", "")),
                account_sid=str(start.get("accountSid", "")),
                tracks=tuple(str(t) for t in start.get("tracks", ("inbound",))),
                custom_parameters={str(k): str(v) for k, v in params.items()},
                encoding=str(fmt.get("encoding", "audio/x-mulaw")),
                sample_rate=_int(fmt.get("sampleRate", 8000), "mediaFormat.sampleRate"),
                channels=_int(fmt.get("channels", 1), "mediaFormat.channels"),
            )
        if event == "mark":
            return Mark(stream_sid=sid, name=str(_obj(msg.get("mark"), "mark").get("name", "")))
        if event == "dtmf":
            return Dtmf(stream_sid=sid, digit=str(_obj(msg.get("dtmf"), "dtmf").get("digit", "")))
        if event == "stop":
            stop = msg.get("stop") or {}
            return Stop(stream_sid=sid, call_sid=str(_obj(stop, "stop").get("callSid", "")))
        if event == "connected":
            return Connected(protocol=str(msg.get("protocol", "")), version=str(msg.get("version", "")))
        if event == "clear":
            return Clear(stream_sid=sid)
    except (AttributeError, TypeError):
        raise ProtocolError(f"malformed {_shown(event)} message") from None
    raise ProtocolError(f"unknown event {_shown(event)}")


# --- messages the app sends (only on a bidirectional <Connect><Stream>) ---


def media_message(stream_sid: str, ulaw: bytes) -> str:
    payload = base64_text(ulaw)
    # Hand-built: this runs for every outbound frame and json.dumps costs several times more.
    return f'{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"{payload}"}}}}'


def mark_message(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})


# --- messages Twilio sends (the caller simulator and tests build these) ---


@dataclass
class TwilioSender:
    """Numbers messages as Twilio does: one sequence for the stream, one chunk count for media."""

    stream_sid: str
    sequence: int = 0
    chunk: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def _next(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, call_sid: str, account_sid: str, custom_parameters: dict[str, str]) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": call_sid,
                    "tracks": ["inbound"],
                    "customParameters": custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )

    def media(self, ulaw: bytes, timestamp_ms: int) -> str:
        self.chunk += 1
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    "timestamp": str(timestamp_ms),
                    "payload": base64.b64encode(ulaw).decode("ascii"),
                },
            }
        )

    def mark(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def stop(self, call_sid: str, account_sid: str) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": account_sid, "callSid": call_sid},
            }
        )
