"""`POST /signalwire/voice`: SignalWire's cXML webhook, answered with cXML that streams the call to us.

SignalWire's Compatibility API is Twilio's dialect: a number's "When a call comes in" webhook posts the
call's parameters form-encoded (`CallSid`, `AccountSid` (the project), `From`, `To`, ...), signed as
Twilio signs (gateway.signalwire.auth), and cXML is TwiML
(https://developer.signalwire.com/compatibility-api/cxml/). The answer is built with Twilio's TwiML
builder, as SignalWire's own Python package does (`signalwire.voice_response` subclasses it):

    <Response>
      <Connect>
        <Stream url="wss://.../signalwire/media" authBearerToken="...">
          <Parameter name="From" .../><Parameter name="To" .../><Parameter name="token" .../>
        </Stream>
      </Connect>
      <Hangup/>
    </Response>

The stream is SignalWire's default codec, mu-law at 8 kHz (PCMU@8000h), the same media protocol as
Twilio's Media Streams. SignalWire also offers `codec="L16@16000h"`, but does not document the byte order
of its L16 payloads; until that is checked against a real space, the certain narrowband stream is used.
"""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import Response
from twilio.twiml.voice_response import VoiceResponse

from gateway.carriers import answer_call, media_url
from gateway.drain import MOVED_QUERY
from gateway.signalwire.auth import BEARER_PURPOSE, signature_of, webhook_ok
from gateway.stream_tokens import PARAMETER as TOKEN_PARAMETER

log = structlog.get_logger("gateway.signalwire")

VOICE_PATH, MEDIA_PATH = "/signalwire/voice", "/signalwire/media"
SIGNATURE_HINT = (
    "SignalWire signed the URL the number points at with the space's Signing Key: PUBLIC_URL must be its "
    "base, and SIGNALWIRE_SIGNING_KEY the space's"
)


def cxml(response: VoiceResponse) -> Response:
    return Response(str(response), media_type="application/xml")


async def voice(request: Request) -> Response:
    """SignalWire's voice webhook: stream the call to `/signalwire/media`, then hang up when we close."""
    from gateway.app import Gateway

    gw: Gateway = request.app.state.gateway
    form = await request.form()
    params = {k: str(v) for k, v in form.items()}
    url = gw.public_base(request) + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    key = gw.settings.signalwire_signing_key
    if key:
        signed = webhook_ok(key, url, params, signature_of(request.headers))
    else:
        signed = gw.unsigned_ok("signalwire", "SIGNALWIRE_SIGNING_KEY")
    if not signed:
        gw.refusals.refused(
            "webhook",
            "signature",
            "webhook_signature_rejected",
            carrier="signalwire",
            url=url,
            hint=SIGNATURE_HINT,
        )
        return Response("invalid signature", status_code=403)
    call_sid = params.get("CallSid", "")
    if gw.drain.active:  # this instance is shutting down: the call goes to another one
        log.info("call_sent_elsewhere", call_sid=call_sid, reason="draining")
        response = VoiceResponse()
        response.pause(length=1)
        response.redirect(gw.public_base(request).rstrip("/") + VOICE_PATH, method="POST")
        return cxml(response)
    if not call_sid:
        return Response("CallSid is required", status_code=400)
    moved = request.query_params.get(MOVED_QUERY) == "1"
    answer = answer_call(gw, "signalwire", call_sid, params.get("To", ""), moved=moved)
    response = VoiceResponse()
    if answer.kind == "busy":
        response.reject(reason="busy")
        return cxml(response)
    if answer.kind == "replayed":
        return Response("this call was answered already", status_code=409)
    stream = response.connect().stream(
        url=media_url(gw, request, gw.routed(MEDIA_PATH)), authBearerToken=gw.tokens.bearer(BEARER_PURPOSE)
    )
    for name in ("From", "To"):
        if params.get(name):
            stream.parameter(name=name, value=params[name][:200])
    stream.parameter(name=TOKEN_PARAMETER, value=answer.token)
    if moved:
        stream.parameter(name=MOVED_QUERY, value="1")
    response.hangup()
    return cxml(response)
