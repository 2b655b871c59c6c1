"""Outbound calls end to end over real sockets: `POST /calls` -> the gateway -> the Twilio stand-in, which
rings the simulated callee, fetches the signed webhook, opens the media stream with the caller simulator as
the callee, and sends the status and answering-machine detection callbacks -> the local Live backend.

One gateway serves every test of the module (its start-up is paid once); each test places its own call."""

from __future__ import annotations

import asyncio
import dataclasses
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from gateway.app import create_app
from gateway.devtools.callee import Callee
from gateway.devtools.simulator import RATE, agent_speech
from gateway.devtools.twilio_api import FakeTwilioApi, PlacedCall
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.local_live.tts import sentences, synthesize
from gateway.server import running_gateway
from tests.support.gateway import settings_for
from tests.support.processes import free_port
from tests.support.twilio_api import fake_twilio_api

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ACCOUNT, TOKEN, API_TOKEN = "AC" + "7" * 32, "outbound-auth-token", "calls-api-token"
FROM = "+12025550100"
PERSON, VOICEMAIL, MACHINE, BUSY, NO_ANSWER = (f"+1212555010{i}" for i in range(1, 6))
MESSAGE = "Hi Ada, this is Acme. Your appointment is on Friday. Goodbye."
AGENTS = """
[agents.reminders]
instructions = "You call {name} to confirm an appointment on {date}."
greeting = "Hello {name}, this is Acme about your appointment on {date}."
voicemail = "Hi {name}, this is Acme. Your appointment is on {date}. Goodbye."
variables = ["name", "date"]
machine = "leave_message"
"""
VARIABLES = {"name": "Ada", "date": "Friday"}
SHORT_GREETING = "Please leave a message after the tone."


@dataclass
class Outbound:
    url: str
    api: FakeTwilioApi
    http: httpx.AsyncClient
    app: Any


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def outbound(tmp_path_factory) -> AsyncIterator[Outbound]:
    agents = tmp_path_factory.mktemp("outbound") / "agents.toml"
    agents.write_text(textwrap.dedent(AGENTS))
    port = free_port()
    async with (
        LocalLiveServer(options=LocalLiveOptions()) as live,
        fake_twilio_api(ACCOUNT, TOKEN) as (api_url, api),
    ):
        api.callees = {
            PERSON: [Callee("person", ring_s=0.2, talk_s=5.0)],
            VOICEMAIL: [Callee("voicemail", ring_s=0.2, greeting=SHORT_GREETING)],
            MACHINE: [Callee("voicemail", ring_s=0.2, greeting=SHORT_GREETING)],
            BUSY: [Callee("busy", ring_s=0.1)],
            NO_ANSWER: [Callee("no_answer", ring_s=0.1)],
        }
        env = {
            "AGENTS_FILE": str(agents),
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "TWILIO_FROM_NUMBER": FROM,
            "CALLS_API_TOKEN": API_TOKEN,
        }
        settings = dataclasses.replace(settings_for(live.url(), **env), twilio_api_base_url=api_url)
        app = create_app(settings)
        async with running_gateway(settings, port=port, app=app) as url:
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
                yield Outbound(url, api, http, app)


async def dial(ob: Outbound, to: str, **body: Any) -> tuple[PlacedCall, dict[str, Any]]:
    """Place a call through the API; once the callee's side is over, the call and its final record."""
    response = await ob.http.post("/calls", json={"to": to, **body})
    assert response.status_code == 201, response.text
    sid = response.json()["call_sid"]
    call = ob.api.calls[sid]
    async with asyncio.timeout(40):
        await call.done.wait()
    async with asyncio.timeout(10):  # the records are written just after, off the call's path
        while True:
            record: dict[str, Any] = (await ob.http.get(f"/calls/{sid}")).json()
            if record.get("call_status") in {"completed", "busy", "no-answer"} and record.get("outcome"):
                return call, record
            await asyncio.sleep(0.1)


def heard_speech(call: PlacedCall) -> list[tuple[float, float]]:
    """(start, end) of each stretch of agent speech the callee heard, on the stream's timeline."""
    assert call.result is not None
    return [(s.start, s.start + s.heard_s) for s in agent_speech(call.result)]


async def test_a_person_hears_the_agent_only_once_known_to_be_a_person(outbound):
    call, record = await dial(outbound, PERSON, agent="reminders", variables=VARIABLES)
    assert call.pickup is not None and call.error == ""
    speech = heard_speech(call)
    assert speech, "the agent never spoke to the person"
    # The agent answered the callee's hello, and nothing reached the line before Twilio said "human".
    assert speech[0][0] >= call.pickup.amd_at_s > call.pickup.speech_end_s
    assert call.result is not None and call.result.closed_by == "caller"
    assert (record["direction"], record["answered_by"], record["call_status"]) == (
        "outbound",
        "human",
        "completed",
    )
    assert record["amd_wait_ms"] > 0 and record["amd_duration_ms"] > 0 and record["machine_action"] == ""
    assert record["to_number"] == PERSON and record["from_number"] == FROM


async def test_a_voicemail_hears_the_whole_message_after_the_beep_then_the_call_hangs_up(outbound):
    call, record = await dial(outbound, VOICEMAIL, agent="reminders", variables=VARIABLES)
    assert call.pickup is not None and call.pickup.beep_end_s is not None and call.result is not None
    speech = heard_speech(call)
    assert speech and speech[0][0] >= call.pickup.beep_end_s  # nothing was said over the greeting
    assert call.result.closed_by == "gateway"  # the gateway hung up...
    marks = [e.details["name"] for e in call.result.events if e.kind == "mark_echo"]
    assert marks[-1].startswith("hang_up-")  # ...once the mark after the message came back
    assert "clear" not in {e.kind for e in call.result.events}  # none of the message was flushed
    # Heard whole: all the audio of the message (as the local backend speaks it, sentence by sentence)
    # reached the callee, and the hang-up waited for it to play out.
    message = sum(len(synthesize(s, rate=RATE, voice_name="Kore", wpm=165)) // 2 for s in sentences(MESSAGE))
    assert call.result.media_bytes_received >= 0.95 * message
    assert (record["answered_by"], record["machine_action"]) == ("machine_end_beep", "message_left")
    assert record["outcome"] == "agent_hung_up"


async def test_a_machine_is_hung_up_on_with_the_hang_up_policy(outbound):
    call, record = await dial(outbound, MACHINE, agent="reminders", variables=VARIABLES, machine="hang_up")
    assert call.result is not None and call.result.closed_by == "gateway"
    assert heard_speech(call) == []  # the machine recorded nothing of the agent
    assert (record["answered_by"], record["machine_action"]) == ("machine_end_beep", "hung_up")


@pytest.mark.parametrize(
    ("to", "status", "outcome"), [(BUSY, "busy", "busy"), (NO_ANSWER, "no-answer", "no_answer")]
)
async def test_a_call_nobody_picks_up_is_recorded_with_twilio_s_status(outbound, to, status, outcome):
    call, record = await dial(outbound, to)
    assert call.result is None and call.statuses[-1] == status  # no webhook, no stream
    assert (record["call_status"], record["outcome"], record["direction"]) == (status, outcome, "outbound")


async def test_refusals_dial_nothing_and_say_why(outbound):
    before = len(outbound.api.calls)
    anonymous = await outbound.http.post("/calls", json={"to": PERSON}, headers={"Authorization": ""})
    wrong = await outbound.http.post("/calls", json={"to": PERSON}, headers={"Authorization": "Bearer nope"})
    assert anonymous.status_code == wrong.status_code == 401
    premium = await outbound.http.post("/calls", json={"to": "+19005551234"})
    assert premium.status_code == 403 and "premium-rate" in premium.json()["error"]
    unknown = await outbound.http.post(
        "/calls", json={"to": PERSON, "agent": "reminders", "variables": {"nam": "x"}}
    )
    assert unknown.status_code == 400 and "unknown variable(s) nam" in unknown.json()["error"]
    gateway = outbound.app.state.gateway
    gateway.drain.active = True
    try:
        draining = await outbound.http.post("/calls", json={"to": PERSON})
    finally:
        gateway.drain.active = False
    assert draining.status_code == 503 and "shutting down" in draining.json()["error"]
    gateway.outbound.dialling = gateway.settings.max_outbound_calls
    try:
        full = await outbound.http.post("/calls", json={"to": PERSON})
    finally:
        gateway.outbound.dialling = 0
    assert full.status_code == 429 and "MAX_OUTBOUND_CALLS" in full.json()["error"]
    assert len(outbound.api.calls) == before  # nothing was dialled
