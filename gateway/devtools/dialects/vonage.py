"""Vonage's dialect: a JSON answer webhook signed with a JWT, an NCCO, and a media WebSocket of binary L16 at
16 kHz whose upgrade Vonage signs too (gateway.vonage).

The simulator signs as Vonage does, with the account's signature secret (VONAGE_SIGNATURE_SECRET, which the
gateway under test shares): HS256 JWTs with the body's `payload_hash` on the webhook, and on the upgrade
when the NCCO asks for Vonage's authorization.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from gateway.devtools.dialects import (
    Answered,
    Cleared,
    DialectError,
    GatewayMessage,
    Heard,
    MarkSent,
    WebhookRequest,
)
from gateway.vonage import protocol as vp
from gateway.vonage.answer import ANSWER_PATH
from gateway.vonage.signing import sign

WEBHOOK_USER_AGENT = "Vonage-Voice-Webhook/1.0"
STREAM_USER_AGENT = "Vonage-Voice-WebSocket/1.0"


class VonageStream:
    """A Vonage media WebSocket, as Vonage speaks it: `websocket:connected` with our NCCO's headers, then
    binary frames; our notify comes back as `websocket:notify` once played."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.stream_sid = headers.get("conversation_uuid", "") or f"CON-{uuid.uuid4()}"
        self._headers = headers

    def connected(self) -> None:
        return None  # Vonage's first message is websocket:connected: the stream's start

    def start(self) -> str:
        return vp.connected_message(self._headers)

    def media(self, pcm: bytes, timestamp_ms: int) -> bytes:
        return pcm

    def dtmf(self, digit: str) -> str:
        return vp.dtmf_message(digit)

    def mark(self, name: str) -> str:
        return vp.notified_message({vp.MARK_KEY: name})

    def stop(self) -> None:
        return None  # the caller hanging up closes the socket

    def parse(self, raw: str | bytes) -> GatewayMessage:
        if isinstance(raw, bytes):
            if len(raw) != vp.FRAME_BYTES:
                raise DialectError(f"an audio frame of {len(raw)} bytes (Vonage plays {vp.FRAME_BYTES})")
            return Heard(raw, raw)
        try:
            command = vp.parse_command(raw)
        except vp.ProtocolError as exc:
            raise DialectError(str(exc)) from None
        if command.action == "clear":
            return Cleared()
        payload = command.payload
        name = payload.get(vp.MARK_KEY) if isinstance(payload, dict) else None
        if not isinstance(name, str):
            raise DialectError(f"notify payload {payload!r} has no mark")
        return MarkSent(name)


class VonageDialect:
    """Vonage's Voice API: the webhook and the upgrade signed with `signature_secret` (None: unsigned)."""

    name = "vonage"
    rate = vp.RATE
    webhook_path = ANSWER_PATH
    user_agent = STREAM_USER_AGENT

    def __init__(self, signature_secret: str | None = None) -> None:
        self._secret = signature_secret
        self._signed_upgrade = False

    def new_call_sid(self) -> str:
        return str(uuid.uuid4())

    def webhook(self, url: str, signed_url: str, params: dict[str, str]) -> WebhookRequest:
        # Vonage writes numbers as digits without the +; the answer URL is POSTed JSON (our configure's).
        body = json.dumps(
            {
                "uuid": params.get("CallSid", ""),
                "conversation_uuid": f"CON-{uuid.uuid4()}",
                "from": params.get("From", "").lstrip("+"),
                "to": params.get("To", "").lstrip("+"),
            }
        ).encode()
        headers = {"User-Agent": WEBHOOK_USER_AGENT, "Content-Type": "application/json"}
        if self._secret:
            headers["Authorization"] = f"Bearer {sign(self._secret, time.time(), body)}"
        return WebhookRequest("POST", url, headers, content=body)

    def answered(self, document: str, base_url: str) -> Answered:
        try:
            ncco: Any = json.loads(document)
        except ValueError:
            raise DialectError(f"webhook answered no NCCO: {document[:300]!r}") from None
        endpoints = [
            endpoint
            for action in (ncco if isinstance(ncco, list) else [])
            if isinstance(action, dict) and action.get("action") == "connect"
            for endpoint in action.get("endpoint", [])
            if isinstance(endpoint, dict) and endpoint.get("type") == "websocket"
        ]
        if not endpoints:
            raise DialectError(f"the NCCO connects no websocket: {document[:300]!r}")
        endpoint = endpoints[0]
        if endpoint.get("content-type") != vp.CONTENT_TYPE:
            raise DialectError(f"the NCCO asks for {endpoint.get('content-type')!r}, not {vp.CONTENT_TYPE}")
        self._signed_upgrade = (endpoint.get("authorization") or {}).get("type") == "vonage"
        headers = {str(k): str(v) for k, v in (endpoint.get("headers") or {}).items()}
        return Answered(str(endpoint.get("uri", "")), headers)

    def upgrade_headers(self, stream_url: str) -> dict[str, str]:
        if not (self._secret and self._signed_upgrade):
            return {}
        return {"Authorization": f"Bearer {sign(self._secret, time.time())}"}

    def stream(
        self, call_sid: str, account_sid: str, answered: Answered, params: dict[str, str]
    ) -> VonageStream:
        return VonageStream(answered.parameters)
