"""`gateway dial --simulate`: an outbound call on one machine, no keys.

As `gateway demo` does for a call coming in: `gateway serve` runs as a process of its own (the local Live
backend, a clean environment), and this process plays Twilio and the callee: a stand-in for Twilio's REST
API (`gateway.devtools.twilio_api`) takes the gateway's `POST .../Calls.json`, rings the simulated callee,
fetches the gateway's signed webhook, opens the media stream with the caller simulator as the callee, and
sends the status and answering-machine detection callbacks when Twilio would. Then it prints what happened
with its figures: the callee's hello to the agent's first audio (a person), the end of the beep to the start
of the message (a voicemail), and the gateway's record of the call.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.devtools.callee import Callee
from gateway.devtools.demo import DemoError, gateway_process
from gateway.devtools.simulator import RATE, agent_speech, write_stereo_wav
from gateway.devtools.twilio_api import PlacedCall, fake_twilio_api
from gateway.outbound.client import ApiError, CallsApi, dial_body

ACCOUNT, AUTH_TOKEN = "AC" + "5" * 32, "simulated-auth-token"
FROM_NUMBER = "+12025550100"
# The agents file of the simulation: the README's example of an outbound agent.
AGENTS = """
[agents.reminders]
instructions = "You call {name} to confirm their appointment on {date}. Be brief and friendly."
greeting = "Hello {name}, this is Acme about your appointment on {date}."
voicemail = "Hi {name}, this is Acme about your appointment on {date}. Call us back to change it. Goodbye."
variables = ["name", "date"]
machine = "leave_message"
"""
DEFAULT_VARS = ["name=Ada", "date=Friday"]
CALL_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class OutboundFigures:
    """What a simulated outbound call measured, on the stream's timeline (seconds)."""

    answered_by: str  # what Twilio's detector said (the stand-in's model of it)
    amd_at_s: float | None  # when it said so
    callee_speech_end_s: float | None  # the end of the callee's hello, or of the voicemail's greeting
    beep_end_s: float | None
    agent_first_audio_s: float | None  # the agent's first audio began to play to the callee
    agent_heard_s: float  # agent audio the callee heard
    closed_by: str | None

    @property
    def hello_to_agent_s(self) -> float | None:
        """A person: the end of their hello to the agent's first audio."""
        if self.beep_end_s is not None or None in (self.callee_speech_end_s, self.agent_first_audio_s):
            return None
        return self.agent_first_audio_s - self.callee_speech_end_s  # type: ignore[operator]

    @property
    def beep_to_message_s(self) -> float | None:
        """A voicemail: the end of the beep to the start of the message."""
        if self.beep_end_s is None or self.agent_first_audio_s is None:
            return None
        return self.agent_first_audio_s - self.beep_end_s


def figures(call: PlacedCall) -> OutboundFigures:
    line, result = call.pickup, call.result
    speech = agent_speech(result) if result is not None else []
    return OutboundFigures(
        answered_by=call.amd_sent,
        amd_at_s=line.amd_at_s if line and call.amd_sent else None,
        callee_speech_end_s=line.speech_end_s if line else None,
        beep_end_s=line.beep_end_s if line else None,
        agent_first_audio_s=speech[0].start if speech else None,
        agent_heard_s=sum(s.heard_s for s in speech),
        closed_by=result.closed_by if result else None,
    )


def _simulation_env(workdir: Path, api_url: str) -> Any:
    def env(port: int) -> dict[str, str]:
        return {
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": api_url,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "AGENTS_FILE": str(workdir / "agents.toml"),
            "DEVELOPMENT_MODE": "true",
        }

    return env


async def run_dial_simulation(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="gateway-dial-") as tmp:
        workdir = Path(tmp)
        (workdir / "agents.toml").write_text(textwrap.dedent(AGENTS))
        callee = {"busy": "a busy line", "no_answer": "a phone nobody answers"}.get(args.simulate)
        print(
            f"starting the gateway and a Twilio stand-in; the callee is {callee or 'a ' + args.simulate}",
            flush=True,
        )
        try:
            async with (
                fake_twilio_api(ACCOUNT, AUTH_TOKEN) as (api_url, api),
                gateway_process(workdir, env_for_port=_simulation_env(workdir, api_url)) as gw,
            ):
                api.default_callee = Callee(args.simulate)
                if not args.agent:
                    args.agent = "reminders"
                    args.var = args.var or DEFAULT_VARS
                calls = CallsApi(gw.url, gw.calls_api_token)
                async with calls.client() as http:
                    answer = await calls.place(http, dial_body(args))
                    call = api.calls[answer["call_sid"]]
                    print(f"POST /calls -> 201 {answer['call_sid']} (agent {answer['agent']}, "
                          f"machine {answer['machine']})", flush=True)  # fmt: skip
                    await _follow(call)
                    record = await calls.wait_until_over(http, call.sid, timeout_s=15, poll_s=0.2)
        except (ApiError, DemoError, TimeoutError) as exc:
            print(f"gateway: {exc or 'the call did not end in time'}")
            return 1
        _report(call, record, args.out)
    return 0


async def _follow(call: PlacedCall) -> None:
    """Print each status as Twilio (the stand-in) reports it, until the call is over."""
    shown = 0
    async with asyncio.timeout(CALL_TIMEOUT_S):
        while not call.done.is_set() or shown < len(call.statuses):
            for status in call.statuses[shown:]:
                print(f"  twilio: {status}", flush=True)
            shown = len(call.statuses)
            await asyncio.sleep(0.05)


def _report(call: PlacedCall, record: dict[str, Any], out: str) -> None:
    f = figures(call)

    def at(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    print()
    if call.error:
        print(f"the simulated call failed: {call.error}")
    if call.pickup is not None:
        print(f"callee speech ended      {at(f.callee_speech_end_s)}")
        if f.beep_end_s is not None:
            print(f"beep ended               {at(f.beep_end_s)}")
        print(f"{'Twilio AMD: ' + (f.answered_by or 'nothing'):<24} {at(f.amd_at_s)}")
        heard = f"({f.agent_heard_s:.1f} s of agent audio heard)"
        print(f"agent's first audio      {at(f.agent_first_audio_s)}   {heard}")
        if f.hello_to_agent_s is not None:
            print(f"hello -> agent's first audio: {f.hello_to_agent_s * 1000:.0f} ms")
        if f.beep_to_message_s is not None:
            print(f"beep -> voicemail message:    {f.beep_to_message_s * 1000:.0f} ms")
        # The simulator is the callee here: what it calls "caller" is the person (or machine) called.
        print(f"hung up by the {'callee' if f.closed_by == 'caller' else f.closed_by or 'nobody'}")
    print(
        "record: "
        + ", ".join(
            f"{key}={record.get(key)}"
            for key in ("call_status", "outcome", "answered_by", "amd_wait_ms", "machine_action")
        )
    )
    if call.result is not None and call.result.sent:
        write_stereo_wav(out, call.result.sent, call.result.heard, RATE)
        print(f"wrote {out} (callee left, agent right)")
