"""SignalWire's Compatibility REST API for calls in progress: Twilio's client, pointed at the space.

The Compatibility API is Twilio's REST API at `https://<space>.signalwire.com/api/laml/2010-04-01/...`,
authenticated with the project ID and API token
(https://developer.signalwire.com/compatibility-api/rest/calls/update-a-call/): the project ID stands where
Twilio's AccountSid does. SignalWire's own Python package is exactly this (a subclass of Twilio's `Client`
with `api.base_url` set to the space), but pins twilio 6; Twilio's client, already the gateway's, is used
directly, through the same `CallControl` that carries Twilio's calls.
"""

from __future__ import annotations

from gateway.twilio.rest import CallControl

LAML_PATH = "/api/laml"


def signalwire_control(project_id: str, api_token: str, space_url: str) -> CallControl:
    """Hang-up and transfer of SignalWire calls (space_url: https://<space>.signalwire.com or a stand-in)."""
    return CallControl(project_id, api_token, base_url=space_url.rstrip("/") + LAML_PATH)
