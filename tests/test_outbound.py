"""Outbound calls end to end over real sockets: `POST /calls` -> the gateway -> the Twilio stand-in, which
rings the simulated callee, fetches the signed webhook, opens the media stream with the caller simulator as
the callee, and sends the status and answering-machine detection callbacks -> the local Live backend.

One gateway serves every test of the module (its start-up is paid once); each test places its own call."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from gateway.app import create_app
from gateway.cli import build_parser
from gateway.devtools.callee import Callee
from gateway.devtools.simulator import RATE, agent_speech
from gateway.devtools.twilio_api import FakeTwilioApi, PlacedCall
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.local_live.tts import sentences, synthesize
from gateway.outbound.campaign_run import CampaignRun, read_do_not_call, read_numbers, spec_from_args
from gateway.outbound.campaign_store import open_campaign_store
from gateway.outbound.client import CallsApi, run_dial
from gateway.server import running_gateway
from tests.support.gateway import settings_for
from tests.support.processes import clean_env, free_port
from tests.support.twilio_api import fake_twilio_api

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ACCOUNT, TOKEN, API_TOKEN = "AC" + "7" * 32, "outbound-auth-token", "calls-api-token"
FROM = "+12025550100"
PERSON, VOICEMAIL, MACHINE, BUSY, NO_ANSWER = (f"+1212555010{i}" for i in range(1, 6))
# A campaign's numbers: a person, busy then a person, never answering, on the do-not-call list, and one
# whose calling window is closed (its own time zone, 12 hours from UTC).
C_PERSON, C_BUSY_ONCE, C_NEVER, C_DNC, C_LATER = (f"+1212555020{i}" for i in range(1, 6))
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
    database_url: str


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
            PERSON: [Callee("person", ring_s=0.2, talk_s=3.5)],
            VOICEMAIL: [Callee("voicemail", ring_s=0.2, greeting=SHORT_GREETING)],
            MACHINE: [Callee("voicemail", ring_s=0.2, greeting=SHORT_GREETING)],
            BUSY: [Callee("busy", ring_s=0.1)],
            NO_ANSWER: [Callee("no_answer", ring_s=0.1)],
            C_PERSON: [Callee("person", ring_s=0.1, talk_s=2.0)],
            C_BUSY_ONCE: [Callee("busy", ring_s=0.1), Callee("person", ring_s=0.1, talk_s=2.0)],
            C_NEVER: [Callee("no_answer", ring_s=0.1)],
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
                yield Outbound(url, api, http, app, settings.database_url)


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


async def test_a_campaign_retries_busy_and_no_answer_honours_its_window_and_never_calls_twice(
    outbound, tmp_path
):
    now = datetime.now(UTC)
    # A window open now in UTC and closed now twelve hours away (where C_LATER's callee lives).
    window = "00:00-12:00" if now.hour < 12 else "12:00-24:00"
    numbers = tmp_path / "reminders.csv"
    numbers.write_text(
        "number,name,date,tz\n"
        + "".join(f"{n},Ada,Friday,{'Etc/GMT-12' if n == C_LATER else ''}\n" for n in
                  (C_PERSON, C_BUSY_ONCE, C_NEVER, C_DNC, C_LATER))
    )  # fmt: skip
    dnc = tmp_path / "do-not-call.txt"
    dnc.write_text(f"{C_DNC}\n")
    args = build_parser().parse_args(
        ["campaign", "run", str(numbers), "--agent", "reminders", "--concurrency", "2", "--rate", "10/s",
         "--window", window, "--tz", "UTC", "--attempts", "2", "--retry-after", "1s",
         "--do-not-call", str(dnc)]
    )  # fmt: skip

    async def run_once() -> CampaignRun:
        spec = spec_from_args(args)
        rows = read_numbers(numbers, spec.tz, read_do_not_call(dnc), spec.policy.window)
        store = open_campaign_store(outbound.database_url)
        await store.open()
        try:
            campaign = CampaignRun(spec, CallsApi(outbound.url, API_TOKEN), store, io.StringIO())
            await campaign.prepare(rows)
            async with campaign.api.client() as http:
                await asyncio.wait_for(campaign.run(http), 60)
        finally:
            await store.close()
        return campaign

    before = len(outbound.api.calls)
    first = await run_once()
    dialled = [c.form["To"] for c in list(outbound.api.calls.values())[before:]]
    assert sorted(dialled) == sorted(
        [C_PERSON, C_BUSY_ONCE, C_BUSY_ONCE, C_NEVER, C_NEVER]
    )  # retried once each
    outcomes = {e.number: (e.status, e.outcome, e.attempts) for e in first.entries}
    assert outcomes == {
        C_PERSON: ("done", "person", 1),
        C_BUSY_ONCE: ("done", "person", 2),  # busy, then answered
        C_NEVER: ("done", "no_answer", 2),  # no answer twice: given up
        C_DNC: ("skipped", "do_not_call", 0),
        C_LATER: ("pending", "", 0),  # its window is closed: not called
    }
    assert first.waiting_for_window is not None and "run the same command again" in first.summary()
    records = [
        (await outbound.http.get(f"/calls/{c.sid}")).json()
        for c in list(outbound.api.calls.values())[before:]
    ]
    assert {r["campaign"] for r in records} == {"reminders"}  # per-call results are in the call records

    second = await run_once()  # the same campaign again: nobody is called twice
    assert len(outbound.api.calls) == before + len(dialled)
    assert {e.number: (e.status, e.outcome) for e in second.entries}[C_PERSON] == ("done", "person")


async def test_gateway_dial_places_a_call_through_the_api_and_waits_for_its_record(
    outbound, monkeypatch, capsys
):
    monkeypatch.setenv("CALLS_API_TOKEN", API_TOKEN)
    args = build_parser().parse_args(["dial", "--to", BUSY, "--url", outbound.url, "--wait"])
    assert await run_dial(args) == 0
    out = capsys.readouterr().out
    assert f"{BUSY} from {FROM}, agent default, machine hang_up" in out and '"call_status": "busy"' in out
    monkeypatch.setenv("CALLS_API_TOKEN", "wrong")
    assert await run_dial(build_parser().parse_args(["dial", "--to", BUSY, "--url", outbound.url])) == 1
    assert "HTTP 401: bearer token required" in capsys.readouterr().err


async def test_gateway_dial_simulate_shows_an_outbound_call_on_one_machine(tmp_path):
    """Its own gateway process and Twilio stand-in, no keys: here a busy line (the shortest call)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "dial", "--to", "+12125550123", "--simulate", "busy",
        cwd=tmp_path, env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "POST /calls -> 201" in text and "twilio: busy" in text
    assert "call_status=busy, outcome=busy" in text
