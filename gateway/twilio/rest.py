"""Twilio's REST API for calls: place one (outbound), hang up, or hand one to other TwiML (a transfer).

twilio's own client over its aiohttp transport, so a REST round trip never blocks the event loop that carries
every call's audio. Updating a call that has already ended (error 20404) is not a failure.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

log = structlog.get_logger("gateway.twilio.rest")

CALL_NOT_FOUND = 20404


class CallControl:
    """A call in progress through Twilio's REST API: replace its TwiML (the drain's redirect), transfer it,
    hang it up."""

    def __init__(self, account_sid: str, auth_token: str, *, base_url: str | None = None) -> None:
        self._http = AsyncTwilioHttpClient(timeout=10)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        if base_url:  # a regional edge, or a local stand-in in tests
            self._client.api.base_url = base_url.rstrip("/")

    async def update(self, call_sid: str, twiml: str) -> bool:
        """Replace the call's TwiML (this ends its media stream). False if the call had already ended."""
        try:
            await self._client.calls(call_sid).update_async(twiml=twiml)
        except TwilioRestException as exc:
            if exc.code == CALL_NOT_FOUND:
                log.info("call_already_ended", call_sid=call_sid)
                return False
            raise
        return True

    async def transfer(self, call_sid: str, number: str) -> bool:
        response = VoiceResponse()
        response.dial(number)
        return await self.update(call_sid, str(response))

    async def hang_up(self, call_sid: str) -> bool:
        response = VoiceResponse()
        response.hangup()
        return await self.update(call_sid, str(response))

    async def create(
        self,
        to: str,
        from_: str,
        public_url: str,
        *,
        amd_timeout_s: int = 30,
        route: Callable[[str], str] = lambda path: path,
    ) -> str:
        """Place an outbound call; its CallSid. Twilio fetches the voice webhook when the callee picks up (so
        the signed webhook, stream token and pre-warm are the inbound ones), reports every status change,
        and runs answering-machine detection alongside the call, reporting when a machine's greeting has
        ended (`DetectMessageEnd`, asynchronous: the callee is connected at once, not after detection).
        Each path goes through `route` (`Gateway.routed`: to this process, when several serve the port).
        Raises TwilioRestException when Twilio refuses (a number it will not call, say)."""
        base = public_url.rstrip("/")

        def url(path: str) -> str:
            return base + route(path)

        call = await self._client.calls.create_async(
            to=to,
            from_=from_,
            url=url("/twilio/voice"),
            method="POST",
            status_callback=url("/twilio/status"),
            status_callback_method="POST",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            machine_detection="DetectMessageEnd",
            machine_detection_timeout=amd_timeout_s,
            async_amd="true",
            async_amd_status_callback=url("/twilio/amd"),
            async_amd_status_callback_method="POST",
        )
        return str(call.sid)

    async def close(self) -> None:
        await self._http.close()
