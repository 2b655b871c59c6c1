"""A flood of refused media upgrades against a gateway process, and a call's frames timed through it.

The attack runs as its own process at the lowest CPU priority: on a real deployment the attacker is another
machine, and it must not take the CPU of the gateway whose calls are measured. Used by
tests/faults/test_admission.py and benchmarks/bench_admission.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import websockets
from twilio.request_validator import RequestValidator

from gateway.devtools.simulator import CallObserver
from tests.support.audio import agent_tone
from tests.support.live_peer import PeerSession
from tests.support.processes import clean_env, free_port, start_gateway, wait_until_serving

TOKEN = "admission-auth-token-7c1f"
PUBLIC = "https://voice.example.test"
SIGNED_STREAM = {
    "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(
        PUBLIC.replace("https", "wss") + "/twilio/media", {}
    )
}

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


def agent_talks(sent: list[float]):
    """A Live peer's session that speaks 20 ms chunks in real time for the whole call, noting when it sent
    each in `sent` (on the monotonic clock the caller's arrivals use)."""

    async def talk(session: PeerSession) -> None:
        chunk, began = agent_tone(0.02), time.monotonic()
        with contextlib.suppress(websockets.ConnectionClosed):
            for k in itertools.count():
                await asyncio.sleep(max(0.0, began + k * 0.02 - time.monotonic()))
                sent.append(time.monotonic())
                await session.send_audio(chunk, chunk_s=0.02)

    return talk


def transits(sent: list[float], arrivals: Arrivals, since: float, until: float) -> list[float]:
    """Each agent chunk's transit (the peer sent it -> the caller received it) for the chunks sent in
    [since, until], in order. The k-th chunk received is taken to be the k-th sent: true while none is lost
    (the chunks are alike), which the caller checks by counting; chunks not received yet are left out."""
    pairs = zip(sent, arrivals.at, strict=False)
    return [at - sent_at for sent_at, at in pairs if since <= sent_at <= until]
