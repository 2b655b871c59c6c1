"""`POST /telnyx/voice`: Telnyx's TeXML webhook, answered with TeXML that streams the call to us wideband.

A TeXML application (see `gateway telnyx configure`) points a number's calls here. Telnyx posts the call's
parameters form-encoded, as Twilio does (`CallSid`, `AccountSid`, `From`, `To`, ...: TeXML is TwiML's
dialect, https://developers.telnyx.com/docs/voice/programmable-voice/texml-fundamentals), signed with
Ed25519 (gateway.telnyx.auth). The answer:

    <Response>
      <Connect>
        <Stream url="wss://.../telnyx/media?call=...&token=..." bidirectionalMode="rtp" codec="L16"
                bidirectionalCodec="L16" bidirectionalSamplingRate="16000"/>
      </Connect>
      <Hangup/>
    </Response>

`<Stream>`'s attributes (https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream):
RTP both ways, linear PCM at 16 kHz, so the caller's audio reaches Live at its own rate and the agent's
comes back wideband. Telnyx's media upgrade carries no signature, so the per-call values (the CallSid the
token is bound to, the token, who calls whom) travel in the stream URL's query: the upgrade is checked
against them before it is accepted (gateway.telnyx.carrier). Telnyx's Python SDK has no TeXML builder, so
the document is built with the standard library's ElementTree (escaping included).
"""

from __future__ import annotations

import functools
import time
import xml.etree.ElementTree as ET

import structlog
from starlette.requests import Request
from starlette.responses import Response

from gateway.carriers import answer_call, media_url
from gateway.drain import MOVED_QUERY
from gateway.stream_tokens import PARAMETER as TOKEN_PARAMETER
from gateway.telnyx.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookVerifier

log = structlog.get_logger("gateway.telnyx")

VOICE_PATH, MEDIA_PATH = "/telnyx/voice", "/telnyx/media"
WIDEBAND_RATE = 16000
# The query of the stream URL: the webhook's CallSid and AccountSid, the token, who calls whom, a moved call.
CALL_QUERY, ACCOUNT_QUERY, FROM_QUERY, TO_QUERY = "call", "account", "from", "to"
FALLBACK_PAUSE_S = 1
SIGNATURE_HINT = "Telnyx signs with the account's key: TELNYX_PUBLIC_KEY must be its public key (base64)"


def texml(*verbs: ET.Element) -> Response:
    response = ET.Element("Response")
    response.extend(verbs)
    document = '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode")
    return Response(document, media_type="application/xml")


def stream_texml(stream_url: str) -> Response:
    connect = ET.Element("Connect")
    ET.SubElement(
        connect,
        "Stream",
        url=stream_url,
        bidirectionalMode="rtp",
        codec="L16",
        bidirectionalCodec="L16",
        bidirectionalSamplingRate=str(WIDEBAND_RATE),
    )
    return texml(connect, ET.Element("Hangup"))


def busy_texml() -> Response:
    return texml(ET.Element("Reject", reason="busy"))


def redirect_texml(voice_url: str) -> Response:
    """While this instance drains: the same call, back through the load balancer after a pause."""
    redirect = ET.Element("Redirect", method="POST")
    redirect.text = voice_url
    return texml(ET.Element("Pause", length=str(FALLBACK_PAUSE_S)), redirect)


@functools.cache  # one per key: the key is parsed once per process
def verifier_for(public_key: str | None) -> WebhookVerifier | None:
    return WebhookVerifier(public_key) if public_key else None


async def voice(request: Request) -> Response:
    """Telnyx's TeXML webhook: stream the call to `/telnyx/media` at 16 kHz, then hang up when we close."""
    from gateway.app import Gateway

    gw: Gateway = request.app.state.gateway
    body = await request.body()
    verifier = verifier_for(gw.settings.telnyx_public_key)
    if verifier is not None:
        refusal = verifier.refusal(
            body, request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER), time.time()
        )
    else:
        refusal = None if gw.unsigned_ok("telnyx", "TELNYX_PUBLIC_KEY") else "TELNYX_PUBLIC_KEY is not set"
    if refusal is not None:
        gw.refusals.refused(
            "webhook",
            "signature",
            "webhook_signature_rejected",
            carrier="telnyx",
            why=refusal,
            hint=SIGNATURE_HINT,
        )
        return Response("invalid signature", status_code=403)
    form = await request.form()
    params = {k: str(v) for k, v in form.items()}
    call_sid = params.get("CallSid", "")
    if gw.drain.active:  # this instance is shutting down: the call goes to another one
        log.info("call_sent_elsewhere", call_sid=call_sid, reason="draining")
        return redirect_texml(gw.public_base(request).rstrip("/") + VOICE_PATH)
    if not call_sid:
        return Response("CallSid is required", status_code=400)
    moved = request.query_params.get(MOVED_QUERY) == "1"
    answer = answer_call(gw, "telnyx", call_sid, params.get("To", ""), moved=moved)
    if answer.kind == "busy":
        return busy_texml()
    if answer.kind == "replayed":
        return Response("this call was answered already", status_code=409)
    query = {CALL_QUERY: call_sid, TOKEN_PARAMETER: answer.token}
    if params.get("AccountSid"):
        query[ACCOUNT_QUERY] = params["AccountSid"][:64]
    for name, key in (("From", FROM_QUERY), ("To", TO_QUERY)):
        if params.get(name):
            query[key] = params[name][:200]
    if moved:
        query[MOVED_QUERY] = "1"
    return stream_texml(media_url(gw, request, gw.routed(MEDIA_PATH), query))
