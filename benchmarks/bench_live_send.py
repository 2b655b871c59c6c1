"""What one message to Live costs the gateway: `LiveSession.send` against `websockets`' own `send`.

A Live session set up with the scripted peer (in its own process, so only the sender's CPU is counted), the
same 20 ms caller frame as the gateway sends it (`live.protocol.audio_message`), sent N times each way in
alternating rounds; CPU time of this process per message, medians of the rounds. The peer reads as fast as
it can; every 50 messages the sender yields to its event loop, as a call does between frames.

    python benchmarks/bench_live_send.py [--rounds 7] [--messages 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from machine import describe

from gateway.devtools.load import ChildProcessPeer
from gateway.live import protocol as lp
from gateway.live.session import LiveSession


async def one_round(session: LiveSession, message: str, n: int, direct: bool) -> float:
    ws = session._ws  # the comparison is with the connection's own send
    started = time.process_time()
    for i in range(n):
        if direct:
            await session.send(message)
        else:
            await ws.send(message)
        if i % 50 == 0:
            await asyncio.sleep(0)
    spent = time.process_time() - started
    await asyncio.sleep(0.5)  # let the peer catch up before the next round
    return spent / n * 1e6


async def main(rounds: int, messages: int) -> None:
    message = lp.audio_message(os.urandom(640), 16000)
    async with ChildProcessPeer() as peer:
        session = await LiveSession.open(peer.url, {"setup": {"model": "models/x"}})
        try:
            sides: dict[str, list[float]] = {"websockets": [], "gateway": []}
            for r in range(rounds):
                order = ("websockets", "gateway") if r % 2 == 0 else ("gateway", "websockets")
                for side in order:
                    sides[side].append(await one_round(session, message, messages, side == "gateway"))
        finally:
            await session.close()
    ratios = [g / w for g, w in zip(sides["gateway"], sides["websockets"], strict=True)]
    print(describe("websockets", "uvloop"))
    print()
    print("| send | us CPU per message: median (min-max) |")
    print("|---|---:|")
    for side, values in sides.items():
        print(f"| {side} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |")
    print()
    print(
        f"gateway / websockets per round: median {statistics.median(ratios):.3f} "
        f"({min(ratios):.3f}-{max(ratios):.3f}), {rounds} rounds of {messages} messages"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.rounds, args.messages))
