"""Several gateway processes on one port (WEB_CONCURRENCY): what they share is right across them.

The rules of the shared tables are pure functions over arrays (microseconds); one end-to-end test runs
`gateway serve` with two processes and checks the shared rules where the kernel spreads the connections.
"""

from __future__ import annotations

import asyncio
import signal
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest
import websockets
from websockets.asyncio.client import connect

from gateway.config import ConfigError, load_settings
from gateway.machine import Machine, digest, redeem_in, reserve_in, start_in
from gateway.stream_tokens import StreamTokens
from gateway.twilio.protocol import TwilioSender
from tests.support.gateway import json_lines
from tests.support.live_peer import LivePeer
from tests.support.processes import clean_env, free_port, start_gateway, wait_until_serving


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
    # Outbound calls' plans are per process: one process unless asked otherwise.
    assert load_settings({"TWILIO_FROM_NUMBER": "+12025550123"}, env_file=None).web_concurrency == 1
    for bad in ("0", "two", "1000"):
        with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
            load_settings({"WEB_CONCURRENCY": bad}, env_file=None)


# --- two processes on one port -------------------------------------------------------------------------


async def _fresh(url: str, path: str, data: dict[str, str] | None = None) -> httpx.Response:
    """One request on a connection of its own: the kernel gives each connection to either process."""
    async with httpx.AsyncClient() as client:
        if data is None:
            return await client.get(url + path)
        return await client.post(url + path, data=data)


async def _twiml(url: str, call_sid: str) -> ET.Element:
    return ET.fromstring((await _fresh(url, "/twilio/voice", {"CallSid": call_sid})).text)


async def _stream(url: str, call_sid: str, token: str, stream_sid: str) -> websockets.ClientConnection:
    ws = await connect(url.replace("http", "ws") + "/twilio/media")
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

            # The limit is the machine's: two answered calls hold both places, wherever they were answered.
            first = await _twiml(url, "CA1")
            assert first[0].tag == "Connect"
            assert (await _twiml(url, "CA2"))[0].tag == "Connect"
            assert [(c.tag, c.get("reason")) for c in await _twiml(url, "CA3")] == [("Reject", "busy")]

            # CA1's token, redeemed once, is refused on every process: eight replays on fresh connections.
            token = {p.get("name"): p.get("value") for p in first.iter("Parameter")}["token"]
            call = await _stream(url, "CA1", token, "MZ1")
            async with asyncio.timeout(10):
                while (await _fresh(url, "/healthz")).json()["active_calls"] != 1:
                    await asyncio.sleep(0.05)
            for n in range(8):
                assert await _close_code(await _stream(url, "CA1", token, f"MZr{n}")) == 1008
            metrics = (await _fresh(url, "/metrics")).text
            assert "gateway_active_calls 1.0" in metrics  # both processes' gauges, added up

            # The call ends; its place is given back on the machine.
            await call.send(TwilioSender("MZ1").stop("CA1", "AC1"))
            await _close_code(call)
            async with asyncio.timeout(10):
                while (await _fresh(url, "/healthz")).json()["active_calls"] != 0:
                    await asyncio.sleep(0.05)
            # SIGTERM: the supervisor passes it on, every process drains, and all exit with 0.
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 40) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = json_lines(log_path.read_text())
    assert sum(line.get("event") == "drain_finished" for line in lines) == 2
