"""The answer to Plivo's answer URL: Plivo XML that streams the call to our media WebSocket. Pure.

Built with Plivo's own XML elements (`plivo.xml`): `<Stream bidirectional="true" keepCallAlive="true"
contentType="audio/x-l16;rate=16000">wss://.../plivo/media</Stream>` (https://docs.plivo.com/docs/voice/
xml/audiostream). L16 at 16 kHz is the best a bidirectional stream offers: wideband both ways, Live's own
input rate, and no mu-law step. `keepCallAlive` makes the stream run alone until it ends; nothing follows it,
so the call ends when our side closes the socket.

The call's values (its CallUUID, the stream token, who calls whom) travel in the stream URL's query, checked
before the upgrade is accepted (as for Telnyx): `extraHeaders` would take only letters and digits.
"""

from __future__ import annotations

import plivo.xml as px

from gateway.plivo.protocol import CONTENT_TYPE

ANSWER_PATH, MEDIA_PATH = "/plivo/answer", "/plivo/media"
# The stream URL's query (our XML writes it; the line reads it): the CallUUID the token is bound to, the
# token (`gateway.stream_tokens.PARAMETER`), who calls whom.
CALL_QUERY, FROM_QUERY, TO_QUERY = "call", "from", "to"
FALLBACK_WAIT_S = 1


def e164(number: str) -> str:
    """A Plivo number (digits, sometimes with a +) as E.164; a SIP address or a name as it is."""
    kept = number.lstrip("+")
    return f"+{kept}" if kept.isdigit() else number


def stream_xml(stream_url: str) -> str:
    response = px.ResponseElement()
    response.add(
        px.StreamElement(
            stream_url, bidirectional=True, audioTrack="inbound", contentType=CONTENT_TYPE, keepCallAlive=True
        )
    )
    return str(response.to_string())


def redirect_xml(answer_url: str) -> str:
    """While this instance drains: the same call, back through the load balancer after a pause."""
    response = px.ResponseElement()
    response.add(px.WaitElement(length=FALLBACK_WAIT_S))
    response.add(px.RedirectElement(answer_url, method="POST"))
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
