"""Admission under attack: sockets that never start, a replayed webhook, floods of refused upgrades.

Each test asserts the figure of its scenario in docs/reliability.md against a bound (how late frames run
under a flood is the machine's speed: a benchmark measures it):

- sockets that never send `start` hold no call place: with 200 of them open a genuine signed call is
  answered and carried (it was answered busy);
- one signed webhook replayed 10,000 times starts at most one Live session (it started 5,000 here, opened
  6,330 in the field); a call a drain moves back is answered again, once; pre-warm keeps to its budget;
- 3,000 refused upgrades leave a call in progress carried, no frame lost, with one log line per refusal
  (then a count); none of them builds a Call, and start-up is out of the collector's sight (what stalled
  the call's audio 60-150 ms with every burst); the memory 1,500 of them took comes back to within 12 MB
  (27-33 MB stayed). How late the call's frames run under the attack is a figure of the machine's speed:
  `benchmarks/bench_admission.py` measures it beside the same call without the attack.

The floods run the gateway as a process (`gateway serve`) and the attack in another one, at the lowest CPU
priority (tests/support/attack.py): on a real deployment the attacker is another machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection

from gateway.app import Call, create_app
from gateway.config import ConfigError, load_settings
from gateway.devtools.simulator import CallScript, SimulatorError, place_call
from gateway.server import running_gateway
from gateway.twilio.protocol import TwilioSender
from tests.support.attack import (
    PUBLIC,
    SIGNED_STREAM,
    TOKEN,
    Arrivals,
    agent_talks,
    attack,
    gateway_process,
    rss_mb,
    transits,
)
from tests.support.audio import agent_tone, caller_tone
from tests.support.gateway import json_lines, logged, settings_for
from tests.support.live_peer import LivePeer, PeerSession


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


async def test_refused_upgrades_leave_a_call_in_progress_carried(tmp_path):
    """3,000 upgrades refused while a call is in progress, in bursts of 50 (half unsigned, refused before
    the upgrade; half signed with a forged stream token, refused at `start`): every one refused, and how;
    the call carried all through, no frame lost; one JSON log line per refusal, then a count. How late the
    call's frames ran meanwhile is a figure of this machine's speed: `benchmarks/bench_admission.py`
    measures it beside the same call without the attack. What made the frames late before (60-150 ms with
    every burst) is asserted below, in-process: no Call for a refused socket, start-up out of the
    collector's sight."""
    sent: list[float] = []
    arrivals = Arrivals()
    async with LivePeer(agent_talks(sent)) as peer:
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
            await asyncio.sleep(1.5)
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            log = log_path.read_text()

    during = transits(sent, arrivals, began, ended + 1.5)
    assert ends == {"http 403": 1500, "1008": 1500}, ends  # every one refused, and how
    assert len(during) >= (ended - began + 1.5) / 0.02 - 5  # the call was carried all along, no frame lost
    ordered = sorted(during)
    print(f"transit during the attack: median {statistics.median(ordered) * 1000:.0f} ms, "
          f"90th percentile {ordered[int(0.9 * len(ordered))] * 1000:.0f} ms")  # fmt: skip
    # One JSON line per refusal, at most 50 a second, then a count: no flood, no traceback.
    lines = log.splitlines()
    assert all(line.startswith("{") for line in lines), [x for x in lines if not x.startswith("{")][:3]
    assert len(lines) <= 60 * (ended - began + 3) + 50, f"{len(lines)} log lines for 3,000 refusals"


async def test_a_refused_socket_builds_no_call_and_start_up_is_out_of_the_collectors_sight(capsys):
    """What stalled every call's audio for 60-150 ms with each burst of refused upgrades: a Call built for
    every socket, and full collections over the whole start-up heap (the refused sockets' objects are freed
    only by the collector). Now a socket becomes a Call only once admitted, and start-up is frozen out of the
    collector's sight while the gateway serves (a full collection scans what calls and sockets made since)."""
    built: list[object] = []
    original = Call.__init__

    def counted(self: Call, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    async with LivePeer() as peer:
        settings = signed_settings(peer.url)
        frozen_before = gc.get_freeze_count()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Call, "__init__", counted)  # wherever a Call would be built
            async with running_gateway(settings) as url:
                frozen_serving = gc.get_freeze_count()
                ends = await attack(url, rounds=1, per_round=40, unsigned_every=2)  # the flood's attacker
    assert ends == {"http 403": 20, "1008": 20}, ends
    assert built == []  # 40 refused sockets, no Call
    assert len(peer.sessions) == 0  # and no Live session
    # Everything start-up made (modules, models, the app) is frozen out of the collector's sight.
    assert frozen_serving - frozen_before > 10_000
    refused = [line for line in logged(capsys) if "reason" in line]
    assert len(refused) == 40  # one line each (under 50 a second)


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
