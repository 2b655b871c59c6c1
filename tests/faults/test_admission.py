"""Admission under attack: sockets that never start, a replayed webhook, floods of refused upgrades.

Each test asserts the figure of its scenario in docs/reliability.md against a bound:

- sockets that never send `start` hold no call place: with 200 of them open a genuine signed call is
  answered and carried (it was answered busy);
- one signed webhook replayed 10,000 times starts at most one Live session (it started 5,000 here, opened
  6,330 in the field); a call a drain moves back is answered again, once; pre-warm keeps to its budget;
- 3,000 refused upgrades leave a call in progress no frame later than 30 ms (60-150 ms before), and the
  memory 1,500 of them took comes back to within 12 MB (27-33 MB stayed).

The last two run the gateway as a process (`gateway serve`) and the attack in another one, at the lowest CPU
priority: on a real deployment the attacker is another machine, and it must not take the CPU of the gateway
whose lateness is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection

from gateway.app import create_app
from gateway.config import ConfigError, load_settings
from gateway.devtools.simulator import CallObserver, CallScript, SimulatorError, place_call
from gateway.server import running_gateway
from gateway.twilio.protocol import TwilioSender
from tests.support.audio import agent_tone, caller_tone
from tests.support.gateway import json_lines, logged, settings_for
from tests.support.live_peer import LivePeer, PeerSession
from tests.support.processes import clean_env, free_port, start_gateway, wait_until_serving

TOKEN = "admission-auth-token-7c1f"
PUBLIC = "https://voice.example.test"
SIGNED_STREAM = {
    "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(
        PUBLIC.replace("https", "wss") + "/twilio/media", {}
    )
}


class CountingPeer(LivePeer):
    """A Live peer that counts the connections opened to it, whether or not they got as far as a setup."""

    connections = 0

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        await super()._handle(ws)


def signed_settings(live_url: str, **env: str):
    return settings_for(live_url, TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_URL=PUBLIC, AGENT_GREETING="none", **env)


# --- 3: sockets that never send `start` -------------------------------------------------------------------


async def test_sockets_that_never_start_hold_no_call_place_so_a_signed_call_is_carried(capsys):
    """200 signed upgrades that never send `start`, against a limit of 50 calls: each held a call place for
    STREAM_START_TIMEOUT_S, and the genuine call was answered busy. Now they wait in their own budget (64),
    the oldest closed (1013) to make room for newer ones, and the call is answered and carried."""

    async def answer(session: PeerSession) -> None:
        await asyncio.sleep(0.2)
        with contextlib.suppress(websockets.ConnectionClosed):
            await session.send_audio(agent_tone(1.0))
            await session.send({"serverContent": {"turnComplete": True}})

    async with LivePeer(answer) as peer:
        settings = signed_settings(peer.url, MAX_CONCURRENT_CALLS="50", MAX_UNVERIFIED_STREAMS="64")
        app = create_app(settings)
        gw = app.state.gateway
        async with running_gateway(settings, app=app) as url:
            media = url.replace("http", "ws") + "/twilio/media"

            async def never_start() -> websockets.ClientConnection | None:
                with contextlib.suppress(websockets.InvalidStatus):  # refused at the upgrade
                    return await connect(media, additional_headers=SIGNED_STREAM)
                return None

            opened = await asyncio.gather(*(never_start() for _ in range(200)))
            idle = [ws for ws in opened if ws is not None]
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        while sum(ws.close_code is not None for ws in idle) < 200 - 64:
                            await asyncio.sleep(0.01)
                held = sum(ws.close_code is None for ws in idle)
                calls_while_held = len(gw.calls)
                try:
                    result = await place_call(
                        url,
                        CallScript(audio=caller_tone(0.5), trailing_silence_s=1.5),
                        auth_token=TOKEN,
                        public_url=PUBLIC,
                    )
                except SimulatorError as exc:
                    pytest.fail(f"the genuine call was not carried, with 200 sockets open: {exc}")
            finally:
                await asyncio.gather(*(ws.close() for ws in idle), return_exceptions=True)

    closes = Counter(ws.close_code for ws in idle)
    # The figure: the genuine call was answered (not busy) and carried: it heard the agent's whole reply.
    assert ET.fromstring(result.twiml)[0].tag == "Connect"
    heard = np.frombuffer(result.heard, "<i2")
    assert np.count_nonzero(heard) >= 0.9 * 8000, "the caller did not hear the agent"
    assert result.closed_by == "caller"
    # Unverified sockets held no call place, and no more than their budget of places of their own.
    assert calls_while_held == 0
    assert held <= 64 and len(gw.unverified) == 0
    # The oldest made room, with "try again later": for the newer hostile ones, then for the genuine stream.
    assert closes[1013] == 200 - 64 + 1
    assert len(peer.sessions) == 1  # the sockets that never started cost no Live session
    # One line per refusal (the first 50 a second one by one, then a count): none lost, no flood.
    lines = logged(capsys)
    evicted = [line for line in lines if line["event"] == "stream_evicted"]
    suppressed = sum(
        line["by_reason"].get("stream:evicted", 0) for line in lines if line["event"] == "refusals_suppressed"
    )
    assert len(evicted) <= 60 and len(evicted) + suppressed == 200 - 64 + 1
    assert all(line["reason"] == "evicted" for line in evicted)


# --- 4: one signed webhook replayed ---------------------------------------------------------------------


def token_of(response: httpx.Response) -> str:
    """The stream token in a webhook's answer ("" if it answered something else than a stream)."""
    if response.status_code != 200 or (stream := ET.fromstring(response.text).find("Connect/Stream")) is None:
        return ""
    return next((p.get("value", "") for p in stream.findall("Parameter") if p.get("name") == "token"), "")


async def _post_many(
    url: str, form: dict[str, str], count: int, connections: int = 8
) -> Counter[tuple[int, str]]:
    """POST one signed webhook `count` times over a few keep-alive connections; tally (status, token)."""
    headers = {
        "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/voice", form)
    }
    answers: Counter[tuple[int, str]] = Counter()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker(n: int) -> None:
            for _ in range(n):
                response = await client.post(url + "/twilio/voice", data=form, headers=headers)
                answers[(response.status_code, token_of(response))] += 1

        await asyncio.gather(*(worker(count // connections) for _ in range(connections)))
    return answers


async def test_ten_thousand_replays_of_one_signed_webhook_open_at_most_one_live_session(capsys):
    """A captured signed webhook replayed 10,000 times got a new stream token and a pre-warmed Live session
    each time (6,330 opened). Now a CallSid gets one token: while its stream is on the way a repeat gets the
    same answer, once the stream has used the token a replay is refused (409); one Live session in all."""
    async with CountingPeer() as peer:
        # The pre-warmed session waits for the stream as long as it can: 5,000 webhooks took 10 to 25 s on a
        # loaded machine, and a session that lapsed before the stream would make a second, not a replay's.
        app = create_app(signed_settings(peer.url, LIVE_PREWARM_S="60"))
        async with running_gateway(app.state.gateway.settings, app=app) as url:
            form = {
                "CallSid": "CA" + "7" * 32,
                "AccountSid": "AC1",
                "From": "+15550001111",
                "To": "+15550002222",
            }
            ringing = await _post_many(url, form, 5000)
            opened_while_ringing = app.state.gateway.prewarm.opened, peer.connections
            # The call's stream arrives (its token is the one every answer carried) and the call is carried.
            token = min(token for _, token in ringing)
            async with connect(
                url.replace("http", "ws") + "/twilio/media", additional_headers=SIGNED_STREAM
            ) as ws:
                sender = TwilioSender("MZ" + "1" * 32)
                await ws.send(sender.connected())
                await ws.send(sender.start(form["CallSid"], "AC1", {"token": token}))
                await ws.send(sender.media(b"\xff" * 160, 0))
                async with asyncio.timeout(10):  # the call took the session pre-warmed for it
                    while not any(session.audio_bytes for session in peer.sessions):
                        await asyncio.sleep(0.01)
                replayed = await _post_many(url, form, 5000)
                await ws.send(sender.stop(form["CallSid"], "AC1"))
        lines = logged(capsys)

    # The figure: Live connections opened for 10,000 replays of one webhook (set up or not).
    started, connected = opened_while_ringing
    assert started <= 1 and connected <= 1, f"{started} Live sessions started, {connected} connected"
    assert peer.connections <= 1
    assert len(peer.sessions) == 1
    assert ringing == Counter({(200, token): 5000}), f"{len(ringing)} answers"  # the same answer each time
    assert replayed == Counter({(409, ""): 5000})  # the token was used: every replay refused
    # One line per repeat or replay, at most 50 a second and a count for the rest.
    counted = [line for line in lines if line["event"] in ("webhook_repeated", "webhook_replay_refused")]
    suppressed = sum(line["total"] for line in lines if line["event"] == "refusals_suppressed")
    assert len(counted) + suppressed == 9999
    assert len(counted) <= 50 * 60


async def test_a_call_moved_back_to_the_instance_that_answered_it_is_answered_again_once():
    """Behind a load balancer a call's webhook and its stream can land on different instances; when the one
    carrying it drains, the call may be moved to the one that answered its webhook, whose answer has since
    been used or has expired. The moved webhook (`?moved=1`, in the URL Twilio signs) is answered afresh,
    once; a replay of either webhook is refused."""
    form = {"CallSid": "CA" + "5" * 32, "From": "+15550001111", "To": "+15550002222"}

    async with LivePeer() as peer:
        app = create_app(signed_settings(peer.url))
        tokens = app.state.gateway.tokens
        async with running_gateway(app.state.gateway.settings, app=app) as url, httpx.AsyncClient() as client:

            async def answer(query: str = "") -> tuple[int, str]:
                signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/voice" + query, form)
                response = await client.post(
                    url + "/twilio/voice" + query, data=form, headers={"X-Twilio-Signature": signature}
                )
                return response.status_code, token_of(response)

            status, first = await answer()
            assert status == 200 and await answer() == (200, first)  # a retry: the same answer
            assert tokens.redeem(form["CallSid"], first) is None  # its stream (here, or its token expired)
            assert await answer() == (409, "")  # a replay
            status, moved = await answer("?moved=1")
            assert status == 200 and moved and moved != first  # the call a drain moved here: a new token
            assert await answer("?moved=1") == (200, moved)
            assert tokens.redeem(form["CallSid"], moved) is None
            assert await answer("?moved=1") == (409, "")  # once
            assert await answer() == (409, "")


async def test_pre_warm_holds_at_most_its_budget_of_live_sessions():
    """Pre-warm has a global budget: 20 calls ringing at once, a budget of 5, at most 5 Live sessions."""
    async with CountingPeer() as peer:
        settings = signed_settings(peer.url, LIVE_PREWARM_MAX_SESSIONS="5", LIVE_PREWARM_S="5")
        app = create_app(settings)
        async with running_gateway(settings, app=app) as url:
            async with httpx.AsyncClient() as client:
                for i in range(20):
                    form = {"CallSid": f"CA{i:032d}", "From": "+15550001111", "To": "+15550002222"}
                    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/voice", form)
                    response = await client.post(
                        url + "/twilio/voice", data=form, headers={"X-Twilio-Signature": signature}
                    )
                    assert "<Connect>" in response.text  # every call answered; only the pre-warm is skipped
            await asyncio.sleep(1.0)
            opened = app.state.gateway.prewarm.opened
    # The figure: Live connections pre-warm opened for 20 calls ringing at once.
    assert peer.connections <= 5 and opened == 5


def test_admission_settings_are_checked_at_start_up():
    assert load_settings({}, env_file=None).max_unverified_streams == 64
    assert load_settings({}, env_file=None).prewarm_max_sessions == 100
    for name, value in (("MAX_UNVERIFIED_STREAMS", "0"), ("LIVE_PREWARM_MAX_SESSIONS", "0")):
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value}, env_file=None)


# --- 9: floods of refused upgrades -------------------------------------------------------------------------

# The attack, as its own process: `rounds` of `per_round` upgrades at once, each round once the last one is
# over. Every `unsigned_every`-th has no signature (refused before the upgrade); the others are signed and
# present a forged stream token at `start`. Prints how each one ended, tallied.
ATTACKER = r"""
import asyncio, json, os, sys
from collections import Counter
import websockets
from websockets.asyncio.client import connect

os.nice(19)  # the lowest CPU priority: on a real deployment the attacker is another machine
url, signature, rounds, per_round, unsigned_every, compression = sys.argv[1:7]
CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
START = json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ" + "0" * 32, "start": {
    "streamSid": "MZ" + "0" * 32, "callSid": "CA" + "0" * 32, "accountSid": "AC" + "0" * 32,
    "tracks": ["inbound"], "customParameters": {"token": "1.forged.token"},
    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})

async def one(signed):
    try:
        headers = {"X-Twilio-Signature": signature} if signed else {}
        async with connect(url, additional_headers=headers, open_timeout=60, close_timeout=5,
                           compression=None if compression == "none" else "deflate") as ws:
            await ws.send(CONNECTED)
            await ws.send(START)
            async for _ in ws:
                pass
        return str(ws.close_code)
    except websockets.ConnectionClosed as exc:
        return str(exc.rcvd.code if exc.rcvd else 1006)
    except websockets.InvalidStatus as exc:
        return f"http {exc.response.status_code}"
    except Exception as exc:
        return type(exc).__name__

async def main():
    tally, every = Counter(), int(unsigned_every)
    for _ in range(int(rounds)):
        tally.update(await asyncio.gather(*(one(not every or i % every) for i in range(int(per_round)))))
    print(json.dumps(tally))

asyncio.run(main())
"""


async def attack(
    url: str, rounds: int, per_round: int, unsigned_every: int = 0, compression: str = "none"
) -> dict[str, int]:
    """Run the attacker; how its upgrades ended, tallied ("1008", "http 403", ...)."""
    media = url.replace("http", "ws") + "/twilio/media"
    signature = SIGNED_STREAM["X-Twilio-Signature"]
    args = (media, signature, str(rounds), str(per_round), str(unsigned_every), compression)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ATTACKER, *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return json.loads(out)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextlib.asynccontextmanager
async def gateway_process(live_url: str, tmp_path: Path, **env: str) -> AsyncIterator[tuple[str, int, Path]]:
    """`gateway serve` signed like production, its Live endpoint `live_url`: (base URL, pid, log file)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = clean_env(
        PORT=str(port), PUBLIC_URL=PUBLIC, TWILIO_AUTH_TOKEN=TOKEN, GEMINI_LIVE_URL=live_url,
        AGENT_GREETING="none", CALL_FAILURE_MESSAGE="none",
        DATABASE_URL=f"sqlite:///{tmp_path / 'calls.sqlite3'}", **env,
    )  # fmt: skip
    log_path = tmp_path / "serve.log"
    proc = start_gateway(environment, tmp_path, log_path)
    try:
        async with httpx.AsyncClient() as client:
            await wait_until_serving(client, url, proc, log_path, 60)
        yield url, proc.pid, log_path
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Arrivals(CallObserver):
    """When each of the agent's media messages reached the caller."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def media_received(self, payload: bytes, at: float) -> None:
        self.at.append(at)


async def test_refused_upgrades_cost_a_call_in_progress_no_late_frame(tmp_path):
    """3,000 upgrades refused while a call is in progress, in bursts of 50 (half unsigned, refused before
    the upgrade; half signed with a forged stream token, refused at `start`), stalled the call's audio by
    60-150 ms: full collections over the whole start-up heap, a Call built for every socket, three log lines
    each. The agent streams 20 ms chunks in real time; each chunk's transit (the peer sent it -> the caller
    received it, on one clock) must stay within 30 ms (nine in ten) all through the attack and the second
    after it."""
    sent: list[float] = []

    async def talk(session: PeerSession) -> None:  # the agent speaks for the whole call, in real time
        chunk, began = agent_tone(0.02), time.monotonic()
        with contextlib.suppress(websockets.ConnectionClosed):
            for k in itertools.count():
                await asyncio.sleep(max(0.0, began + k * 0.02 - time.monotonic()))
                sent.append(time.monotonic())
                await session.send_audio(chunk, chunk_s=0.02)

    arrivals = Arrivals()
    async with LivePeer(talk) as peer:
        async with gateway_process(peer.url, tmp_path) as (url, _pid, log_path):
            script = CallScript(audio=b"", trailing_silence_s=60.0)
            call = asyncio.create_task(
                place_call(url, script, auth_token=TOKEN, public_url=PUBLIC, observer=arrivals, record=False)
            )
            async with asyncio.timeout(10):
                while len(arrivals.at) < 50:  # a second of the call carried before the attack
                    await asyncio.sleep(0.05)
            began = time.monotonic()
            ends = await attack(url, rounds=60, per_round=50, unsigned_every=2)
            ended = time.monotonic()
            await asyncio.sleep(1.5)  # the burst's memory is given back after it: measured too
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            log = log_path.read_text()

    transit = [(arrivals.at[j] - sent[j], sent[j]) for j in range(min(len(sent), len(arrivals.at)))]
    # The floor: the half second before the attack (what the peer said while the phone rang came in a burst).
    floor = max(delay for delay, at in transit if began - 0.5 <= at < began)
    during = [delay for delay, at in transit if began <= at <= ended + 1.5]
    assert ends == {"http 403": 1500, "1008": 1500}, ends  # every one refused, and how
    assert len(during) >= (ended - began + 1.5) / 0.02 - 5  # the call was carried all along, no frame lost
    assert floor < 0.03  # the peer, the gateway and the caller on one machine, no attack
    # The figures, from the first refusal to 1.5 s after the last. The stalls this guards against came with
    # every burst (60-150 ms, several frames each, so most frames late). On a quiet machine 4-14 ms was the
    # worst but one; on this machine in another hour every frame ran later (a floor of 3-8 ms, a dozen of
    # about 320 frames at 30-57 ms, with the same build before and after): so nine frames in ten within 30 ms,
    # and none but one beyond 100 ms.
    ordered = sorted(during)
    most, late = ordered[int(0.9 * len(ordered))], ordered[-2]
    assert most <= 0.030 and late <= 0.100, (
        f"frames {most * 1000:.0f} ms late at the 90th percentile, {late * 1000:.0f} ms the worst but one "
        f"(floor before the attack {floor * 1000:.0f} ms)"
    )
    # One JSON line per refusal, at most 50 a second, then a count: no flood, no traceback.
    lines = log.splitlines()
    assert all(line.startswith("{") for line in lines), [x for x in lines if not x.startswith("{")][:3]
    assert len(lines) <= 60 * (ended - began + 3) + 50, f"{len(lines)} log lines for 3,000 refusals"


async def test_memory_taken_by_refused_upgrades_comes_back(tmp_path):
    """1,500 signed upgrades that ask for permessage-deflate (as a websockets client does by default) and
    present a forged token: RSS grew by 27 MB and stayed. Now it comes back within 12 MB of where it was."""
    async with LivePeer() as peer:
        async with gateway_process(peer.url, tmp_path) as (url, pid, log_path):
            await attack(url, rounds=1, per_round=50, compression="deflate")  # every code path used once
            await asyncio.sleep(2.0)
            baseline = rss_mb(pid)
            ends = await attack(url, rounds=3, per_round=500, compression="deflate")
            peak = rss_mb(pid)
            with contextlib.suppress(TimeoutError):  # QUIET_S after the last refusal, it is given back
                async with asyncio.timeout(6):
                    while log_path.read_text().count('"memory_returned"') < 2:
                        await asyncio.sleep(0.1)
            after = rss_mb(pid)
            returned = [
                line for line in json_lines(log_path.read_text()) if line["event"] == "memory_returned"
            ]
    assert sum(ends.values()) == 1500 and "101" not in ends, ends
    # The figure: RSS once the attack is over, against RSS before it.
    assert after - baseline <= 12.0, f"RSS {baseline:.0f} -> {peak:.0f} -> {after:.0f} MB"
    assert returned[-1]["rss_mb"] < returned[-1]["rss_mb_before"]
