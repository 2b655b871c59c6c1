"""The answer to Plivo's answer URL: Plivo XML that streams the call to our media WebSocket. Pure.

Built with Plivo's own XML elements (`plivo.xml`): `<Stream bidirectional="true" keepCallAlive="true"
contentType="audio/x-l16;rate=16000">wss://.../plivo/media</Stream>` (https://docs.plivo.com/docs/voice/
xml/audiostream). L16 at 16 kHz is the best a bidirectional stream offers: wideband both ways, Live's own
input rate, and no mu-law step. `keepCallAlive` makes the stream run alone until it ends; nothing follows it,
so the call ends when our side closes the socket.

The call's values travel as `extraHeaders`, which Plivo allows only letters and digits in (and 512 bytes in
all): numbers lose their `+`, and the stream token (base64url and dots) travels hex-encoded.
"""

from __future__ import annotations

import re

import plivo.xml as px

from gateway.plivo.protocol import CONTENT_TYPE

MEDIA_PATH = "/plivo/media"
MAX_EXTRA_HEADERS_BYTES = 512
_ALNUM = re.compile(r"[A-Za-z0-9]*")


def extra_headers(values: dict[str, str]) -> str:
    """`k=v,k2=v2` from values already made of letters and digits (ValueError otherwise, or if too long)."""
    for key, value in values.items():
        if not (_ALNUM.fullmatch(key) and _ALNUM.fullmatch(value)):
            raise ValueError(f"extra header {key!r} is not letters and digits")
    text = ",".join(f"{k}={v}" for k, v in values.items())
    if len(text) > MAX_EXTRA_HEADERS_BYTES:
        raise ValueError(f"extra headers of {len(text)} bytes (Plivo takes {MAX_EXTRA_HEADERS_BYTES})")
    return text


def digits(number: str) -> str:
    """A number as extraHeaders can carry it: its digits (a SIP address or a name carries nothing)."""
    kept = number.lstrip("+")
    return kept if kept.isdigit() else ""


def e164(number: str) -> str:
    """A Plivo number (digits, sometimes with a +) as E.164."""
    kept = number.lstrip("+")
    return f"+{kept}" if kept.isdigit() else number


def encode_token(token: str) -> str:
    return token.encode().hex()


def decode_token(text: str) -> str | None:
    try:
        return bytes.fromhex(text).decode("ascii")
    except ValueError:  # also UnicodeDecodeError
        return None


def stream_xml(stream_url: str, headers: dict[str, str]) -> str:
    response = px.ResponseElement()
    response.add(
        px.StreamElement(
            stream_url,
            bidirectional=True,
            audioTrack="inbound",
            contentType=CONTENT_TYPE,
            keepCallAlive=True,
            extraHeaders=extra_headers(headers),
        )
    )
    return str(response.to_string())


def hangup_xml() -> str:
    response = px.ResponseElement()
    response.add(px.HangupElement(reason="busy"))
    return str(response.to_string())


def dial_xml(number: str) -> str:
    """What the transfer URL answers: dial `number` (the caller leaves the stream for it)."""
    response = px.ResponseElement()
    response.add(px.DialElement().add(px.NumberElement(number)))
    return str(response.to_string())
