"""A drain moves a call to another instance through Twilio's REST API: only a Twilio call can be moved so.
A call another carrier carries is not sent to Twilio; it hears the failure message when the moves give up."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.call.line import Started
from gateway.drain import Drain, DrainPlan
from tests.support.gateway import settings_for
from tests.support.twilio_api import fake_twilio_api


@dataclass(eq=False)
class ACall:
    start: Started
    between_turns: bool = True
    resumption_handle: str = ""
    ended: list[str] = field(default_factory=list)

    @property
    def call_sid(self) -> str:
        return self.start.call_sid

    def end_unmoved(self) -> None:
        self.ended.append("apology")

    def moved(self) -> None:
        self.ended.append("moved")


async def test_a_call_of_another_carrier_is_not_redirected_through_twilio_but_apologised_to():
    telnyx = ACall(Started("v3:abc", carrier="telnyx"))
    calls = {telnyx}

    async def save_handle(_sid: str, _handle: str) -> None:
        pass

    account = "AC" + "1" * 32
    async with fake_twilio_api(account, "token") as (api_url, api):
        settings = settings_for(
            "ws://127.0.0.1:9/x",
            TWILIO_ACCOUNT_SID=account,
            TWILIO_AUTH_TOKEN="token",
            PUBLIC_URL="https://voice.example.com",
            TWILIO_API_BASE_URL=api_url,  # it would take the redirect: it must not be asked
        )
        drain = Drain(settings, calls, save_handle)
        await asyncio.wait_for(drain.move_calls([telnyx], DrainPlan(0.0, 0.0, 0.05, 0.1)), 5)
    assert not api.updates
    assert telnyx.ended == ["apology"] and drain.not_moved == {"v3:abc"} and not drain.moved
