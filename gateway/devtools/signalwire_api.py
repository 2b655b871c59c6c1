"""A stand-in for SignalWire's Compatibility REST API on loopback.

SignalWire's Compatibility API is Twilio's REST API under `/api/laml` on the space's host, with the
project ID where Twilio has the AccountSid and Basic authentication with the project's API token
(https://developer.signalwire.com/compatibility-api/rest/): Twilio's stand-in
(gateway.devtools.twilio_api) under that prefix speaks it. The base URL it yields is what
SIGNALWIRE_SPACE_URL takes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway.devtools.twilio_api import FakeTwilioApi, fake_twilio_api
from gateway.signalwire.rest import LAML_PATH


@contextlib.asynccontextmanager
async def fake_signalwire_api(project_id: str, api_token: str) -> AsyncIterator[tuple[str, FakeTwilioApi]]:
    async with fake_twilio_api(project_id, api_token, prefix=LAML_PATH) as (url, api):
        yield url, api
