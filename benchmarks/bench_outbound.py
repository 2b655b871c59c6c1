"""Outbound calls on one machine: `gateway serve` (local backend) as a process of its own, this process
playing Twilio (the REST stand-in) and the callees (the caller simulator), as `gateway dial --simulate` does.

1. Person and voicemail calls, interleaved, through two gateways whose Live backends differ only in their
   set-up round trip (0 and `--setup-delay` ms, standing in for Gemini's connect and setup): the callee's
   hello to the agent's first audio, split into what Twilio's detector takes (the stand-in's model of it:
   1.2 s of silence after the hello) and what the gateway adds once it knows; the end of the beep to the
   start of the voicemail message, split the same way.
2. A campaign of `--campaign` simulated calls at `--concurrency`: a mix of people, voicemails, busy lines and
   numbers nobody answers (each one's callee is known, so every outcome is checked against it), through
   `gateway campaign run`'s own runner.

    python benchmarks/bench_outbound.py [--pairs 5] [--campaign 50] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from gateway.devtools.callee import Callee
from gateway.devtools.demo import gateway_process
from gateway.devtools.dial import AGENTS, _simulation_env, figures
from gateway.devtools.twilio_api import PlacedCall, fake_twilio_api
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.logs import configure_logging
from gateway.outbound.campaign import Policy
from gateway.outbound.campaign_run import CampaignRun, CampaignSpec, read_numbers
from gateway.outbound.campaign_store import open_campaign_store
from gateway.outbound.client import CallsApi

ACCOUNT, AUTH_TOKEN = "AC" + "5" * 32, "simulated-auth-token"
VARS = {"name": "Ada", "date": "Friday"}
SHORT_GREETING = "Please leave a message after the tone."
# What each kind of callee comes to in the campaign.
EXPECTED = {"person": "person", "voicemail": "voicemail_left", "busy": "busy", "no_answer": "no_answer"}
MIX = (
    "person",
    "voicemail",
    "person",
    "busy",
    "person",
    "voicemail",
    "no_answer",
    "person",
    "voicemail",
    "busy",
)


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    median, low, high = (round(x * 1000) for x in (statistics.median(values), min(values), max(values)))
    return f"median {median} ms (min {low}, max {high})"


async def place(calls: CallsApi, api, http, to: str) -> PlacedCall:
    answer = await calls.place(http, {"to": to, "agent": "reminders", "variables": VARS})
    call = api.calls[answer["call_sid"]]
    async with asyncio.timeout(120):
        await call.done.wait()
    return call


def live_env(workdir: Path, api_url: str, live_url: str) -> Callable[[int], dict[str, str]]:
    base = _simulation_env(workdir, api_url)
    return lambda port: {**base(port), "GEMINI_LIVE_URL": live_url}


async def main(args: argparse.Namespace) -> int:
    configure_logging("console", "warning")
    delays = (0.0, args.setup_delay / 1000)
    with tempfile.TemporaryDirectory(prefix="bench-outbound-") as tmp:
        workdirs = [Path(tmp) / f"gw{i}" for i in range(2)]
        for workdir in workdirs:
            workdir.mkdir()
            (workdir / "agents.toml").write_text(textwrap.dedent(AGENTS))
        async with (
            fake_twilio_api(ACCOUNT, AUTH_TOKEN) as (api_url, api),
            LocalLiveServer(options=LocalLiveOptions(setup_delay_s=delays[0])) as live0,
            LocalLiveServer(options=LocalLiveOptions(setup_delay_s=delays[1])) as live1,
            gateway_process(workdirs[0], env_for_port=live_env(workdirs[0], api_url, live0.url())) as gw0,
            gateway_process(workdirs[1], env_for_port=live_env(workdirs[1], api_url, live1.url())) as gw1,
        ):
            gateways = [CallsApi(gw.url, gw.calls_api_token) for gw in (gw0, gw1)]
            calls = gateways[0]
            async with calls.client() as http, gateways[1].client() as http1:
                clients = [(gateways[0], http), (gateways[1], http1)]
                # 1. person and voicemail, interleaved, on both gateways
                hello: dict[int, list[float]] = {0: [], 1: []}
                hello_gw: dict[int, list[float]] = {0: [], 1: []}
                beep: dict[int, list[float]] = {0: [], 1: []}
                beep_gw: dict[int, list[float]] = {0: [], 1: []}
                n = 0
                for _ in range(args.pairs):
                    for g, (api_of_gw, client) in enumerate(clients):
                        for kind in ("person", "voicemail"):
                            number = f"+1212555{3000 + n:04d}"
                            n += 1
                            api.callees[number] = [
                                Callee(kind, ring_s=0.3, talk_s=4.0, greeting=SHORT_GREETING)  # type: ignore[arg-type]
                            ]
                            f = figures(await place(api_of_gw, api, client, number))
                            if f.amd_at_s is None or f.agent_first_audio_s is None:
                                continue
                            if f.hello_to_agent_s is not None:
                                hello[g].append(f.hello_to_agent_s)
                                hello_gw[g].append(f.agent_first_audio_s - f.amd_at_s)
                            if f.beep_to_message_s is not None:
                                beep[g].append(f.beep_to_message_s)
                                beep_gw[g].append(f.agent_first_audio_s - f.amd_at_s)
                for g, delay in enumerate(delays):
                    print(f"Live set-up round trip {delay * 1000:.0f} ms:")
                    print(
                        f"  person: hello -> agent's first audio  {ms(hello[g])}  over {len(hello[g])} calls"
                    )
                    print(f"          of which after Twilio's AMD said human: {ms(hello_gw[g])}")
                    print(
                        f"  voicemail: beep -> message start       {ms(beep[g])}  over {len(beep[g])} calls"
                    )
                    print(f"          of which after Twilio's AMD said machine: {ms(beep_gw[g])}")

                # 2. a campaign
                numbers = workdirs[0] / "campaign.csv"
                kinds = {}
                lines = ["number,name,date"]
                for i in range(args.campaign):
                    number = f"+1212555{4000 + i:04d}"
                    kind = MIX[i % len(MIX)]
                    kinds[number] = kind
                    api.callees[number] = [Callee(kind, ring_s=0.5, talk_s=3.0, greeting=SHORT_GREETING)]  # type: ignore[arg-type]
                    lines.append(f"{number},Ada,Friday")
                numbers.write_text("\n".join(lines) + "\n")
                spec = CampaignSpec(
                    "bench", "reminders", args.concurrency, args.rate, Policy(max_attempts=1), tz=""
                )
                store = open_campaign_store(f"sqlite:///{workdirs[0] / 'calls.sqlite3'}")
                await store.open()
                try:
                    run = CampaignRun(spec, calls, store, io.StringIO())
                    await run.prepare(read_numbers(numbers, "", set(), None))
                    began = time.monotonic()
                    await run.run(http)
                    took = time.monotonic() - began
                finally:
                    await store.close()
                outcomes = Counter(e.outcome for e in run.entries)
                wrong = [e for e in run.entries if e.outcome != EXPECTED[kinds[e.number]]]
                recorded = 0
                for e in run.entries:
                    record = await calls.record(http, e.call_sid)
                    recorded += record is not None and record.get("campaign") == "bench"
                print(
                    f"campaign: {len(run.entries)} calls at concurrency {args.concurrency}, {args.rate:g}/s: "
                    f"{took:.1f} s; outcomes {dict(outcomes)}; {len(wrong)} not what the callee did; "
                    f"{recorded}/{len(run.entries)} call records carry the campaign"
                )
                for e in wrong[:5]:
                    record = await calls.record(http, e.call_sid) or {}
                    keys = ("outcome", "answered_by", "machine_action", "amd_wait_ms")
                    what = {k: record.get(k) for k in keys}
                    print(f"  {e.number}: {kinds[e.number]} -> {e.outcome} {e.detail} {what}")
                    call = api.calls[e.call_sid]
                    print(
                        f"    callee side: error={call.error!r} amd_sent={call.amd_sent!r} "
                        f"closed_by={call.result.closed_by if call.result else None}"
                    )
                if wrong and args.keep_log:
                    log_text = await asyncio.to_thread(gw0.log_path.read_text)
                    await asyncio.to_thread(Path(args.keep_log).write_text, log_text)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=5, help="person and voicemail calls, interleaved")
    parser.add_argument("--campaign", type=int, default=50, help="calls in the campaign")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5.0, help="campaign calls started per second")
    parser.add_argument(
        "--setup-delay", type=float, default=500.0, help="the second gateway's Live set-up (ms)"
    )
    parser.add_argument("--keep-log", metavar="FILE", help="the gateway's log, if an outcome was wrong")
    sys.exit(asyncio.run(main(parser.parse_args())))
