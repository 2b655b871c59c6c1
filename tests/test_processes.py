"""Several gateway processes on one port (WEB_CONCURRENCY): what they share is right across them.

The rules of the shared tables are pure functions over arrays (microseconds); one end-to-end test runs
`gateway serve` with two processes and checks the shared rules where the kernel spreads the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from websockets.asyncio.client import connect

from gateway import server as gateway_server
from gateway.config import ConfigError, load_settings
from gateway.devtools.callee import Callee
from gateway.devtools.load import child_processes
from gateway.machine import Machine, digest, redeem_in, reserve_in, start_in
from gateway.stream_tokens import StreamTokens
from gateway.twilio.protocol import TwilioSender
from tests.support.browser import chromium, screenshot
from tests.support.gateway import json_lines
from tests.support.live_peer import LivePeer
from tests.support.processes import clean_env, free_port, start_gateway, wait_until_serving
from tests.support.twilio_api import fake_twilio_api


def _table(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(n, np.int64), np.zeros(n, np.float64)


def test_a_redeemed_token_is_refused_until_it_expires_and_a_full_table_refuses_rather_than_forgets():
    digests, expiries = _table(2)
    assert redeem_in(digests, expiries, 7, expires=100.0, now=10.0) is None
    assert redeem_in(digests, expiries, 7, expires=100.0, now=50.0) == "stream token already used"
    assert redeem_in(digests, expiries, 8, expires=100.0, now=50.0) is None
    # Both entries hold unexpired tokens: a third would overwrite one, so it is refused instead.
    assert (
        redeem_in(digests, expiries, 9, expires=100.0, now=50.0)
        == "too many stream tokens in use on this machine"
    )
    # Once they have expired their entries are reused (and an expired token is refused by its own check).
    assert redeem_in(digests, expiries, 9, expires=300.0, now=200.0) is None


def test_the_call_limit_counts_every_processs_calls_and_the_calls_answered_on_their_way():
    waiting, calls = _table(8), np.zeros(2, np.int64)
    assert reserve_in(waiting, calls, digest("CA1"), until=15.0, now=0.0, limit=2)
    assert reserve_in(waiting, calls, digest("CA1"), until=15.0, now=1.0, limit=2)  # asked again: same place
    assert reserve_in(waiting, calls, digest("CA2"), until=15.0, now=1.0, limit=2)
    assert not reserve_in(waiting, calls, digest("CA3"), until=15.0, now=1.0, limit=2)
    # CA1's stream lands on process 1: its waiting place becomes a call there, not a second place.
    assert start_in(waiting, calls, 1, digest("CA1"), own=0, limit=2)
    assert list(calls) == [0, 1] and not reserve_in(
        waiting, calls, digest("CA3"), until=16.0, now=2.0, limit=2
    )
    # CA2 never streams: its place lapses; a stream of a call answered elsewhere needs a free call place.
    assert reserve_in(waiting, calls, digest("CA3"), until=31.0, now=16.0, limit=2)
    assert start_in(waiting, calls, 0, digest("CA3"), own=0, limit=2)
    assert not start_in(waiting, calls, 0, digest("CA4"), own=1, limit=2)
    assert list(calls) == [1, 1]


def test_a_token_issued_by_one_process_is_good_once_on_the_machine():
    machine = Machine.create(2)
    issuer = StreamTokens(machine.key, shared=machine)
    other = StreamTokens(machine.key, shared=machine)
    token = issuer.issue("CA1")
    assert other.redeem("CA1", token) is None
    assert issuer.redeem("CA1", token) == "stream token already used"
    assert other.redeem("CA1", token) == "stream token already used"


def test_web_concurrency_defaults_to_one_process_per_core_and_refuses_nonsense():
    assert load_settings({}, env_file=None).web_concurrency >= 1
    assert load_settings({"WEB_CONCURRENCY": "3"}, env_file=None).web_concurrency == 3
    # Outbound calling too: an outbound call's requests are routed to the process that placed it.
    cores = load_settings({}, env_file=None).web_concurrency
    assert load_settings({"TWILIO_FROM_NUMBER": "+12025550123"}, env_file=None).web_concurrency == cores
    for bad in ("0", "two", "1000"):
        with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
            load_settings({"WEB_CONCURRENCY": bad}, env_file=None)


# What a worker copies of the supervisor's memory once it collects its garbage (KiB, its own pages).
_COPIED_BY_A_COLLECTION = """
import gc, os, sys
import gateway.server
if sys.argv[1] == "shared":
    gateway.server.share_with_workers()

def private_kib():
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean", "Private_Dirty")))

reader, writer = os.pipe()
if (pid := os.fork()) == 0:
    before = private_kib()
    gc.collect()
    os.write(writer, str(private_kib() - before).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(reader, 64).decode())
"""


def test_a_worker_s_garbage_collections_leave_the_supervisor_s_objects_shared():
    """Forked workers share the supervisor's pages until they write to them; a full collection writes to
    every object it tracks, so the supervisor freezes what it holds before it forks."""

    def copied_kib(how: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _COPIED_BY_A_COLLECTION, how], capture_output=True, text=True, check=True
        )
        return int(run.stdout)

    frozen, plain = copied_kib("shared"), copied_kib("plain")
    assert plain > 4 * 1024, plain  # the effect is there to be avoided: megabytes of modules' objects
    assert frozen < plain / 4, (frozen, plain)


# --- two processes on one port -------------------------------------------------------------------------


async def _fresh(url: str, path: str, data: dict[str, str] | None = None) -> httpx.Response:
    """One request on a connection of its own: the kernel gives each connection to either process."""
    async with httpx.AsyncClient() as client:
        if data is None:
            return await client.get(url + path)
        return await client.post(url + path, data=data)


async def _twiml(url: str, call_sid: str) -> ET.Element:
    return ET.fromstring((await _fresh(url, "/twilio/voice", {"CallSid": call_sid})).text)


async def _stream(
    url: str, call_sid: str, token: str, stream_sid: str, stream_url: str | None = None
) -> websockets.ClientConnection:
    ws = await connect(stream_url or url.replace("http", "ws") + "/twilio/media")
    sender = TwilioSender(stream_sid)
    await ws.send(sender.connected())
    await ws.send(sender.start(call_sid, "AC1", {"token": token}))
    return ws


async def _close_code(ws: websockets.ClientConnection) -> int | None:
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    return ws.close_code


async def _hang_up(url: str, call: websockets.ClientConnection, call_sid: str, stream_sid: str) -> None:
    """Once the call is up on the machine: Twilio's `stop`, and the machine's calls back to none."""
    async with asyncio.timeout(10):
        while (await _fresh(url, "/healthz")).json()["active_calls"] != 1:
            await asyncio.sleep(0.05)
    await call.send(TwilioSender(stream_sid).stop(call_sid, "AC1"))
    await _close_code(call)
    async with asyncio.timeout(10):
        while (await _fresh(url, "/healthz")).json()["active_calls"] != 0:
            await asyncio.sleep(0.05)


@pytest.mark.e2e
async def test_two_processes_share_the_port_the_tokens_and_the_call_limit_and_both_drain(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LivePeer() as peer, httpx.AsyncClient() as client:
        env = clean_env(
            PORT=str(port), GEMINI_LIVE_URL=peer.url, DEVELOPMENT_MODE="true", AGENT_GREETING="none",
            WEB_CONCURRENCY="2", MAX_CONCURRENT_CALLS="2", DATABASE_URL=f"sqlite:///{tmp_path / 'calls.db'}",
        )  # fmt: skip
        log_path = tmp_path / "serve.log"
        proc = start_gateway(env, tmp_path, log_path)
        try:
            await wait_until_serving(client, url, proc, log_path, 60)
            # Both processes answer on the port (each connection goes to either; 2^-100 to miss one).
            seen: set[int] = set()
            for _ in range(100):
                seen.add((await _fresh(url, "/healthz")).json()["process"])
                if seen == {0, 1}:
                    break
            assert seen == {0, 1}
            # Connections are routed, not requests: no response leaves its connection open for another.
            assert (await _fresh(url, "/healthz")).headers["connection"] == "close"

            # The limit is the machine's: two answered calls hold both places, wherever they were answered.
            first = await _twiml(url, "CA1")
            assert first[0].tag == "Connect"
            assert (await _twiml(url, "CA2"))[0].tag == "Connect"
            assert [(c.tag, c.get("reason")) for c in await _twiml(url, "CA3")] == [("Reject", "busy")]

            # CA1's token, redeemed once, is refused on every process: eight replays on fresh connections.
            token = {p.get("name"): p.get("value") for p in first.iter("Parameter")}["token"]
            call = await _stream(url, "CA1", token, "MZ1", first.find("Connect/Stream").get("url"))
            async with asyncio.timeout(10):
                while (await _fresh(url, "/healthz")).json()["active_calls"] != 1:
                    await asyncio.sleep(0.05)
            for n in range(8):
                assert await _close_code(await _stream(url, "CA1", token, f"MZr{n}")) == 1008
            metrics = (await _fresh(url, "/metrics")).text
            assert "gateway_active_calls 1.0" in metrics  # both processes' gauges, added up

            # The call ends; its place is given back on the machine.
            await _hang_up(url, call, "CA1", "MZ1")

            # A call's stream lands on the process that answered it, where its Live session is pre-warmed:
            # the stream URL names that process, and the supervisor hands the stream to it (by chance, six
            # calls more would find their sessions 1 time in 64).
            for n in range(6):
                twiml = await _twiml(url, f"CB{n}")
                stream_url = twiml.find("Connect/Stream").get("url")
                assert stream_url.startswith(f"ws://127.0.0.1:{port}/twilio/media/process-")
                token = {p.get("name"): p.get("value") for p in twiml.iter("Parameter")}["token"]
                call = await _stream(url, f"CB{n}", token, f"MZb{n}", stream_url)
                await _hang_up(url, call, f"CB{n}", f"MZb{n}")
            metrics = (await _fresh(url, "/metrics")).text
            assert 'gateway_prewarm_total{result="taken"} 7.0' in metrics  # CA1's and these six

            # SIGTERM: the supervisor passes it on, every process drains, and all exit with 0.
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 40) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = json_lines(log_path.read_text())
    assert sum(line.get("event") == "drain_finished" for line in lines) == 2


AGENTS = """
[agents.reminders]
instructions = "You call {name} about an appointment."
voicemail = "Hi {name}, this is Acme. Goodbye."
variables = ["name"]
"""
ACCOUNT, TOKEN, API_TOKEN = "AC" + "7" * 32, "processes-auth-token", "calls-api-token"
MACHINE_NUMBER = "+12125550103"


@pytest.mark.e2e
async def test_outbound_calls_reach_the_process_that_placed_them_and_the_limit_is_the_machines(tmp_path):
    """An outbound call's plan lives in the process that placed it: Twilio's webhook, stream and machine
    detection callback for the call are routed back there, so every call follows its plan (here: hang up
    on a machine), and MAX_OUTBOUND_CALLS counts every process's calls."""
    (tmp_path / "agents.toml").write_text(AGENTS)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LivePeer() as peer, fake_twilio_api(ACCOUNT, TOKEN) as (api_url, api):
        api.callees = {MACHINE_NUMBER: [Callee("voicemail", ring_s=0.3, greeting="Leave a message.")] * 5}
        env = clean_env(
            PORT=str(port), GEMINI_LIVE_URL=peer.url, AGENT_GREETING="none", WEB_CONCURRENCY="2",
            TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN, TWILIO_API_BASE_URL=api_url,
            PUBLIC_URL=url, TWILIO_FROM_NUMBER="+12025550100", CALLS_API_TOKEN=API_TOKEN,
            MAX_OUTBOUND_CALLS="4", AGENTS_FILE=str(tmp_path / "agents.toml"),
            DATABASE_URL=f"sqlite:///{tmp_path / 'calls.db'}",
        )  # fmt: skip
        log_path = tmp_path / "serve.log"
        proc = start_gateway(env, tmp_path, log_path)
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        body = {"to": MACHINE_NUMBER, "agent": "reminders", "variables": {"name": "A"}, "machine": "hang_up"}
        try:
            async with httpx.AsyncClient() as client:
                await wait_until_serving(client, url, proc, log_path, 60)

            async def place() -> httpx.Response:  # a connection of its own: the supervisor spreads them
                async with httpx.AsyncClient(headers=headers, timeout=10) as http:
                    return await http.post(url + "/calls", json=body)

            placed = [await place() for _ in range(4)]
            assert [r.status_code for r in placed] == [201] * 4, [r.text for r in placed]
            # Four in progress on the machine (two on each process): a fifth is refused wherever it lands.
            refused = await place()
            assert refused.status_code == 429 and "MAX_OUTBOUND_CALLS" in refused.json()["error"]
            sids = [r.json()["call_sid"] for r in placed]
            async with asyncio.timeout(40), httpx.AsyncClient(headers=headers) as http:
                for sid in sids:
                    await api.calls[sid].done.wait()
                    while not (record := (await http.get(f"{url}/calls/{sid}")).json()).get("outcome"):
                        await asyncio.sleep(0.1)
                    assert record["answered_by"] == "machine_end_beep"
                    assert record["machine_action"] == "hung_up"
            processes = {api.calls[sid].form["Url"].rsplit("/", 1)[1] for sid in sids}
            assert processes == {"process-0", "process-1"}
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 40)


def _running(pids: list[int]) -> list[int]:
    """Those of `pids` still running (not exited; an exited orphan may stay a zombie a while)."""
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(pid)
    return out


@pytest.mark.e2e
async def test_workers_whose_supervisor_is_killed_drain_and_exit(tmp_path):
    """SIGKILL (the OOM killer) takes the supervisor and the port with it: its workers, which no connection
    can reach any more, drain their calls and exit instead of lingering."""
    port = free_port()
    env = clean_env(PORT=str(port), WEB_CONCURRENCY="2")  # (the local Live backend: no call is made)
    log_path = tmp_path / "serve.log"
    proc = start_gateway(env, tmp_path, log_path)
    try:
        async with httpx.AsyncClient() as client:
            await wait_until_serving(client, f"http://127.0.0.1:{port}", proc, log_path, 60)
        workers = child_processes(proc.pid, descendants=False)
        assert len(workers) == 2
        proc.kill()
        proc.wait()
        async with asyncio.timeout(20):
            while _running(workers):
                await asyncio.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = json_lines(log_path.read_text())
    assert sum(line.get("event") == "supervisor_gone" for line in lines) == 2
    assert sum(line.get("event") == "drain_finished" for line in lines) == 2


@pytest.mark.e2e
async def test_a_worker_that_dies_is_replaced_while_the_other_goes_on_taking_connections(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(PORT=str(port), WEB_CONCURRENCY="2")
    log_path = tmp_path / "serve.log"
    loop = asyncio.get_running_loop()
    proc = start_gateway(env, tmp_path, log_path)
    try:
        async with httpx.AsyncClient() as client:
            await wait_until_serving(client, url, proc, log_path, 60)
        # A worker that dies sooner than this after it started could not start: the instance would stop.
        # The workers started before they served (how long the supervisor took to import the gateway before
        # it forked them varies with the machine's load: from now on is safe whatever it was).
        await asyncio.sleep(gateway_server.EARLY_DEATH_S + 0.5)
        first = child_processes(proc.pid, descendants=False)
        os.kill(first[0], signal.SIGKILL)
        # While the supervisor waits to start its replacement, the other process is handed every connection.
        began = loop.time()
        while loop.time() - began < gateway_server.RESTART_PAUSE_S:
            asked = loop.time()
            assert (await _fresh(url, "/healthz")).status_code == 200
            assert loop.time() - asked < 0.5
        async with asyncio.timeout(30):
            seen: set[int] = set()
            while seen != {0, 1}:
                seen.add((await _fresh(url, "/healthz")).json()["process"])
        assert len(child_processes(proc.pid, descendants=False)) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 40)
    assert sum(line.get("event") == "worker_died" for line in json_lines(log_path.read_text())) == 1


async def _live_news(url: str, cookie: str, wanted: set[str]) -> dict[str, int]:
    """The console's live stream, read until its snapshots have shown every call of `wanted`: call -> the
    process each was shown on."""
    shown: dict[str, int] = {}
    async with (
        httpx.AsyncClient(headers={"Cookie": cookie}) as client,
        client.stream("GET", url + "/console/live/events") as response,
        asyncio.timeout(10),
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and (news := json.loads(line[6:]))["type"] == "snapshot":
                shown |= {
                    c["call_sid"]: c["process"] for c in news["calls"] if news["process"] == c["process"]
                }
                if wanted <= set(shown):
                    return shown
    raise AssertionError(f"the stream ended having shown {shown}")


@pytest.mark.e2e
async def test_the_console_sees_every_processs_calls_and_its_sign_in_state_is_the_machines(tmp_path):
    """The live view relays every process's calls into one stream and hangs up a call on the process that
    holds it; a session signed out on one process is refused by all, and so are a client's failures."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LivePeer() as peer, httpx.AsyncClient() as client:
        env = clean_env(
            PORT=str(port), GEMINI_LIVE_URL=peer.url, DEVELOPMENT_MODE="true", AGENT_GREETING="none",
            WEB_CONCURRENCY="2", CONSOLE_PASSWORD="console-password-1",
            DATABASE_URL=f"sqlite:///{tmp_path / 'calls.db'}",
        )  # fmt: skip
        log_path = tmp_path / "serve.log"
        proc = start_gateway(env, tmp_path, log_path)
        try:
            await wait_until_serving(client, url, proc, log_path, 60)
            signed_in = await _fresh(url, "/console/login", {"password": "console-password-1"})
            cookie = f"gateway_console={signed_in.cookies['gateway_console']}"
            # Calls until both processes hold one (each webhook goes to the process with the fewest).
            calls: dict[str, tuple[int, websockets.ClientConnection]] = {}
            for n in range(6):
                twiml = await _twiml(url, f"CL{n}")
                stream_url = twiml.find("Connect/Stream").get("url")
                token = {p.get("name"): p.get("value") for p in twiml.iter("Parameter")}["token"]
                ws = await _stream(url, f"CL{n}", token, f"MZl{n}", stream_url)
                calls[f"CL{n}"] = int(stream_url.rsplit("process-", 1)[1]), ws
                if {p for p, _ in calls.values()} == {0, 1}:
                    break
            assert {p for p, _ in calls.values()} == {0, 1}
            async with asyncio.timeout(10):
                while (await _fresh(url, "/healthz")).json()["active_calls"] != len(calls):
                    await asyncio.sleep(0.05)

            # One stream, whichever process serves it, shows every call where it is.
            for _ in range(4):
                assert await _live_news(url, cookie, set(calls)) == {sid: p for sid, (p, _) in calls.items()}
            live_page = await client.get(url + "/console/live", headers={"Cookie": cookie})
            # A process's own feed, routed to it, needs a session like any console API.
            assert (await _fresh(url, "/console/live/events/process-1")).status_code == 401

            # In a browser: the live page shows every call, and hangs one up on the process that holds it.
            sid = next(sid for sid, (p, _) in calls.items() if p == 1)
            async with chromium() as browser:
                page = await browser.new_page(viewport={"width": 1100, "height": 700})
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                await page.goto(url + "/console/login?next=/console/live")
                await page.fill("input[name=password]", "console-password-1")
                await page.click("button[type=submit]")
                # (a locator, not a function: the page's Content-Security-Policy refuses eval)
                await page.locator(".live-call").nth(len(calls) - 1).wait_for(timeout=10_000)
                assert sorted(
                    await page.locator(".live-call").evaluate_all("b => b.map(e => e.dataset.sid)")
                ) == sorted(calls)
                assert await page.text_content("#live-status") == "live"
                page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
                await page.click(f"#call-{sid} button.hang-up")
                await page.wait_for_selector(f"#call-{sid}.ended", timeout=10_000)
                await screenshot(page, "console", "live-two-processes")
                assert not errors
            await _close_code(calls[sid][1])
            async with asyncio.timeout(10):
                while (await _fresh(url, "/healthz")).json()["active_calls"] != len(calls) - 1:
                    await asyncio.sleep(0.05)
            assert "operator_hung_up" in log_path.read_text()

            # Signed out on one process, the cookie is refused on every one (eight fresh connections).
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', live_page.text)[1]
            async with httpx.AsyncClient(headers={"Cookie": cookie, "X-CSRF-Token": csrf}) as console:
                assert (await console.post(url + "/console/logout")).status_code == 303
            for _ in range(8):
                async with httpx.AsyncClient(headers={"Cookie": cookie}) as console:
                    assert (await console.get(url + "/console/live/events")).status_code == 401
            # Five wrong passwords, spread over the processes, and the sixth try is refused on any.
            for _ in range(5):
                assert (await _fresh(url, "/console/login", {"password": "guess"})).status_code == 401
            for _ in range(4):
                assert (await _fresh(url, "/console/login", {"password": "guess"})).status_code == 429
            for other, (_, ws) in calls.items():  # the callers hang up: nothing left to drain
                if other != sid:
                    await ws.send(TwilioSender("MZl" + other.removeprefix("CL")).stop(other, "AC1"))
                    await _close_code(ws)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 40)
