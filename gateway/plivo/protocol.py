"""Plivo Audio Streaming: parse what Plivo sends, build what we send back. No I/O, no clock.

The wire (https://www.plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference, and
the `<Stream>` element, https://docs.plivo.com/docs/voice/xml/audiostream), all JSON text:

- from Plivo: `start` (once: `start.callId`, `start.streamId`, `start.accountId`, `start.mediaFormat`, and
  `extra_headers`, the `extraHeaders` of our `<Stream>` as `k=v;k2=v2`), `media` (base64 audio of the caller
  in `media.payload`), `dtmf` (`dtmf.digit`), `playedStream` (our `checkpoint` named `name` has played;
  Plivo's support pages call it `played`: both are read), `clearedAudio` (our `clearAudio` emptied the
  queue); some streams end with `stop`;
- to Plivo: `playAudio` (`media.contentType`, `media.sampleRate`, base64 `media.payload`), `checkpoint`
  (`streamId`, `name`: Plivo answers `playedStream` once the audio queued before it has played) and
  `clearAudio` (`streamId`).

We ask for `audio/x-l16;rate=16000` both ways (the best `<Stream bidirectional="true">` offers: wideband,
and no mu-law step): 16-bit samples, 640 bytes per 20 ms. Plivo does not document their byte order; they are
taken as little-endian (PCM as computers hold it, and what Vonage documents for the same content type): the
one thing to hear on a first real call. Whether Plivo answers the checkpoints a clear flushed is not
documented, so the line releases those itself when it sends the clear and ignores a late answer
(`gateway.call.line_marks.PendingMarks`).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.wire import ProtocolError as ProtocolError  # re-exported: the line catches it here
from gateway.wire import as_object as _obj
from gateway.wire import base64_payload, base64_text, json_object
from gateway.wire import shown as _shown

RATE = 16000
CONTENT_TYPE = "audio/x-l16;rate=16000"  # the <Stream> attribute
PLAY_CONTENT_TYPE = "audio/x-l16"  # playAudio's media.contentType (the rate travels apart)
# Stream ids are spliced into hand-built JSON (see play_message), so only plain ids are accepted.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DIGIT = re.compile(r"[0-9*#A-D]")
MAX_EXTRA_HEADERS = 32


@dataclass(frozen=True, slots=True)
class Start:
    """`start`: the stream's ids, its audio format and our `<Stream>`'s extra headers."""

    stream_id: str
    call_id: str
    account_id: str
    encoding: str
    sample_rate: int
    extra_headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)  # not frozen: 50 a second per call
class Media:
    """`media`: a chunk of the caller's audio, as sent (L16 or mu-law, per `start.mediaFormat`)."""

    stream_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    stream_id: str
    digit: str


@dataclass(frozen=True, slots=True)
class PlayedStream:
    """`playedStream`: the audio queued before our checkpoint `name` has played."""

    stream_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ClearedAudio:
    stream_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    stream_id: str


PlivoEvent = Start | Media | Dtmf | PlayedStream | ClearedAudio | Stop


def _id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ProtocolError(f"{what} is not a plain id")
    return value


def parse_extra_headers(text: str) -> dict[str, str]:
    """`k=v;k2=v2` (or comma-separated, as the XML attribute is written) into a dict."""
    pairs = [p for p in re.split(r"[;,]", text) if p.strip()]
    if len(pairs) > MAX_EXTRA_HEADERS:
        raise ProtocolError(f"{len(pairs)} extra headers")
    headers = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ProtocolError(f"extra header {_shown(pair)} has no value")
        headers[key.strip()] = value.strip()
    return headers


def _message(text: str | bytes) -> dict[str, Any]:
    return json_object(text, "binary frame (Plivo's messages are JSON text)")


def _audio(media: Any) -> bytes:
    """The base64 `payload` of a `media` object, decoded."""
    return base64_payload(_obj(media, "media").get("payload"))


def parse(text: str | bytes) -> PlivoEvent:
    """Parse one WebSocket text message into a typed event, or raise ProtocolError."""
    msg = _message(text)
    event = msg.get("event")
    if event == "media":
        return Media(_id(msg.get("streamId"), "streamId"), _audio(msg.get("media")))
    if event == "start":
        start = _obj(msg.get("start"), "start")
        fmt = _obj(start.get("mediaFormat"), "start.mediaFormat")
        rate = fmt.get("sampleRate")
        if not isinstance(rate, int) or isinstance(rate, bool) or rate not in (8000, 16000):
            raise ProtocolError(f"sampleRate {_shown(rate)} is not 8000 or 16000")
        extra = msg.get("extra_headers") or ""
        if not isinstance(extra, str):
            raise ProtocolError("extra_headers is not a string")
        return Start(
            stream_id=_id(start.get("streamId"), "start.streamId"),
            call_id=_id(start.get("callId"), "start.callId"),
            account_id=str(start.get("accountId", "")),
            encoding=str(fmt.get("encoding", "")),
            sample_rate=rate,
            extra_headers=parse_extra_headers(extra),
        )
    if event == "dtmf":
        dtmf = _obj(msg.get("dtmf"), "dtmf")
        digit = dtmf.get("digit")
        if not isinstance(digit, str) or not _DIGIT.fullmatch(digit):
            raise ProtocolError(f"dtmf digit {_shown(digit)} is not a key")
        return Dtmf(_id(msg.get("streamId"), "streamId"), digit)
    if event in ("playedStream", "played"):  # the reference says playedStream; Plivo's support pages, played
        name = msg.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError("playedStream without a name")
        return PlayedStream(_id(msg.get("streamId"), "streamId"), name)
    if event == "clearedAudio":
        return ClearedAudio(_id(msg.get("streamId"), "streamId"))
    if event == "stop":
        return Stop(str(msg.get("streamId", "")))
    raise ProtocolError(f"unknown event {_shown(event)}")


# --- what the gateway sends ---


def play_message(pcm: bytes, rate: int = RATE) -> str:
    payload = base64_text(pcm)
    # Hand-built: this runs for every outbound chunk and json.dumps costs several times more.
    return (
        f'{{"event":"playAudio","media":{{"contentType":"{PLAY_CONTENT_TYPE}","sampleRate":{rate},'
        f'"payload":"{payload}"}}}}'
    )


def checkpoint_message(stream_id: str, name: str) -> str:
    return json.dumps({"event": "checkpoint", "streamId": stream_id, "name": name})


def clear_message(stream_id: str) -> str:
    return json.dumps({"event": "clearAudio", "streamId": stream_id})


# --- what Plivo sends (the caller simulator and tests build these) ---


@dataclass
class PlivoSender:
    """Numbers messages as Plivo does: one sequence for the stream, one chunk count for media."""

    stream_id: str
    extra_headers: str = ""
    sequence: int = 0
    chunk: int = 0

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence

    def start(self, call_id: str, account_id: str, rate: int = RATE) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "start": {
                    "callId": call_id,
                    "streamId": self.stream_id,
                    "accountId": account_id,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": rate},
                },
                "extra_headers": self.extra_headers,
            }
        )

    def media(self, pcm: bytes, timestamp_ms: int) -> str:
        self.chunk += 1
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "streamId": self.stream_id,
                "media": {
                    "track": "inbound",
                    "timestamp": str(timestamp_ms),
                    "chunk": self.chunk,
                    "payload": base64.b64encode(pcm).decode("ascii"),
                },
                "extra_headers": self.extra_headers,
            }
        )

    def dtmf(self, digit: str, timestamp_ms: int) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequenceNumber": self._next(),
                "streamId": self.stream_id,
                "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(timestamp_ms)},
                "extra_headers": self.extra_headers,
            }
        )

    def played(self, name: str) -> str:
        return json.dumps(
            {
                "event": "playedStream",
                "sequenceNumber": self._next(),
                "streamId": self.stream_id,
                "name": name,
            }
        )

    def cleared(self) -> str:
        return json.dumps(
            {"event": "clearedAudio", "sequenceNumber": self._next(), "streamId": self.stream_id}
        )


@dataclass(frozen=True, slots=True)
class Command:
    """What the gateway sent, as the simulator reads it: `playAudio` (with its audio), `checkpoint` (with
    its name) or `clearAudio`."""

    event: str
    name: str = ""
    pcm: bytes = b""
    rate: int = 0


def parse_command(text: str) -> Command:
    msg = _message(text)
    event = msg.get("event")
    if event == "playAudio":
        rate = _obj(msg.get("media"), "media").get("sampleRate", 0)
        return Command("playAudio", pcm=_audio(msg.get("media")), rate=rate if isinstance(rate, int) else 0)
    if event == "checkpoint":
        return Command("checkpoint", name=str(msg.get("name", "")))
    if event == "clearAudio":
        return Command("clearAudio")
    raise ProtocolError(f"unknown command {_shown(event)}")
