"""How late a call's audio runs while the gateway refuses a flood of upgrades, beside the same call at rest.

One `gateway serve` process (signed like production), one call in progress whose agent speaks 20 ms chunks in
real time (a scripted Live peer), and windows that alternate: the call alone for as long as the last attack
window, then an attack (bursts of 50 upgrades, half unsigned, refused before the upgrade, half signed with a
forged stream token, refused at `start`; the attacker is its own process at the lowest CPU priority). Each
chunk's transit (the peer sent it -> the caller received it, one clock) is reported per kind of window, so a
drifting machine moves both alike. The harness, the peer, the attacker and the gateway share this machine.

    python benchmarks/bench_admission.py [--rounds 3] [--bursts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the attack, the Live peer

from gateway.admission import QUIET_S
from gateway.devtools.simulator import CallScript, place_call
from tests.support.attack import PUBLIC, TOKEN, Arrivals, agent_talks, attack, gateway_process, transits
from tests.support.live_peer import LivePeer


def figures(delays: list[float]) -> str:
    ordered = sorted(delays)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return (
        f"{len(ordered):5d} frames  p50 {at(0.5):5.1f}  p90 {at(0.9):5.1f}  p99 {at(0.99):6.1f}  "
        f"worst but one {ordered[-2] * 1000:6.1f} ms"
    )


async def main(rounds: int, bursts: int) -> None:
    sent: list[float] = []
    arrivals = Arrivals()
    quiet: list[float] = []
    attacked: list[float] = []
    async with LivePeer(agent_talks(sent)) as peer:
        with tempfile.TemporaryDirectory() as tmp:
            async with gateway_process(peer.url, Path(tmp)) as (url, _pid, _log):
                script = CallScript(audio=b"", trailing_silence_s=3600.0)
                signed = {"auth_token": TOKEN, "public_url": PUBLIC}
                call = asyncio.create_task(place_call(url, script, **signed, observer=arrivals, record=False))
                while len(arrivals.at) < 100:  # noqa: ASYNC110 - two seconds of the call carried first
                    await asyncio.sleep(0.05)
                window = 3.0
                for k in range(rounds):
                    began = time.monotonic()
                    await asyncio.sleep(window)
                    quiet += transits(sent, arrivals, began, time.monotonic())
                    began = time.monotonic()
                    ends = await attack(url, rounds=bursts, per_round=50, unsigned_every=2)
                    took = time.monotonic() - began
                    # The window goes on past the burst: the memory it took is given back QUIET_S after
                    # the last refusal (a collection on the event loop), and is measured with it.
                    window = took + QUIET_S + 0.5
                    await asyncio.sleep(window - took + 0.5)  # and the frames sent by then arrive
                    attacked += transits(sent, arrivals, began, began + window)
                    print(f"round {k + 1}: {sum(ends.values())} refused in {took:.1f} s {dict(ends)}")
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call
    print(f"call alone      {figures(quiet)}")
    print(f"under attack    {figures(attacked)}")
    missing = len([t for t in sent if t < sent[-1] - 1.0]) - len(arrivals.at)
    print(f"frames sent but not received (beyond the last second): {max(0, missing)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="quiet/attack window pairs")
    parser.add_argument("--bursts", type=int, default=20, help="bursts of 50 upgrades per attack window")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.bursts))
