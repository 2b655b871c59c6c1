"""What every carrier's protocol core reads alike: JSON messages from a peer, checked field by field.

A carrier's message that cannot be understood raises `ProtocolError` (the call goes on; the message is
skipped), and the error quotes the peer's values briefly, so junk cannot flood the logs through our errors.
Pure: no I/O.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

import orjson
import pybase64

# Brackets a message may have for orjson to read it (nesting is at most this deep); no message of any
# carrier or of Live comes near it.
MAX_BRACKETS = 256


class ProtocolError(ValueError):
    """A message that cannot be understood. The call goes on; the message is skipped."""


def shown(value: Any) -> str:
    """A peer's value in an error message: short, so junk cannot flood the logs through our errors."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def json_object(text: str | bytes, binary: str) -> dict[str, Any]:
    """One text message as a JSON object; `binary` says why a binary frame is not one."""
    if isinstance(text, bytes | bytearray):
        raise ProtocolError(binary)
    return as_object(json_value(text), "message")


def json_value(text: str | bytes) -> Any:
    """A peer's JSON, read by orjson (every frame of audio comes as JSON: a third of `json`'s time), text or
    bytes (Live's messages come in binary frames). What orjson refuses (bytes in UTF-16 or UTF-32, which
    `json` detects), and text nested deeper than `json` reads (orjson has no depth limit, and a value
    hundreds of levels deep would exhaust the stack wherever it is printed), goes to `json`, which has the
    last word. One difference remains: an integer beyond 64 bits comes back as a float. Raises
    ProtocolError."""
    if isinstance(text, str):
        brackets = text.count("[") + text.count("{")
    else:
        brackets = text.count(b"[") + text.count(b"{")
    if brackets <= MAX_BRACKETS:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("malformed JSON") from None


def as_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not an object")
    return value


def as_int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float (JSON's 1e999)
        raise ProtocolError(f"{what} is not an integer: {shown(value)}") from None


def base64_payload(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError("payload is not a string")
    try:
        return pybase64.b64decode(value, validate=True)  # SIMD: a fifth of binascii's time on audio
    except (binascii.Error, ValueError):
        pass  # pybase64 is the stricter of the two (excess padding): binascii has the last word
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("payload is not valid base64") from None


def base64_text(data: bytes) -> str:
    """Audio for a JSON message: standard base64 with padding."""
    return pybase64.b64encode_as_string(data)
