"""Turn-taking through real gateway processes and the caller simulator, every comparison side by side.

Four measures, each with both settings running at the same time (two gateway processes, calls alternating
between them, so a drifting machine moves both alike):

1. Barge-in reaction, BARGE_IN=local vs server: the caller talks over the agent's greeting; the simulator's
   own speech detection marks the onset, and the reaction is onset -> Twilio `clear` received. Live is the
   local backend, whose VAD (Silero) is configured from the gateway's setup like Live's defaults (start
   sensitivity high, 20 ms prefix padding): it sends `interrupted` when it hears the caller.
2. False barge-ins per minute of agent speech, BARGE_IN=local: a scripted Live peer talks for the whole call
   (eSpeak NG, in turns of about 5 s, paced as Live paces them); the caller says nothing, and the simulated
   line carries noise and the agent's own voice echoed back at -20 dB and -10 dB.
3. End of the caller's speech -> the agent's first audio, TURN_DETECTION=local vs server, with the local
   backend (its recognizer and synthesizer included: the same work either way).
4. CPU per call-second of the gateway process, local detector on (BARGE_IN=local) vs off (BARGE_IN=server,
   TURN_DETECTION=server), under the load harness's calls against the scripted peer (bench_load's setup),
   rounds alternating.

    python benchmarks/bench_turns.py [--quick] [--only reaction,false,latency,cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: processes, the Live peer

from bench_load import gateway_process
from machine import describe

from gateway.devtools import load as load_module
from gateway.devtools import turn_corpus as tc
from gateway.devtools.load import ChildProcessPeer, LoadOptions, _run, analyze, run_load
from gateway.devtools.simulator import CallResult, CallScript, place_call
from tests.support.live_peer import LivePeer, PeerSession
from tests.support.processes import clean_env, free_port, start_gateway, wait_until_serving


@contextlib.asynccontextmanager
async def gateway(**env: str) -> AsyncIterator[str]:
    """`gateway serve` in a process of its own (the local backend embedded unless GEMINI_LIVE_URL is set)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "gateway.log"
        full = clean_env(
            PORT=str(port), LOG_LEVEL="warning", DEVELOPMENT_MODE="true",
            DATABASE_URL=f"sqlite:///{tmp}/calls.sqlite3", **env,
        )  # fmt: skip
        proc = start_gateway(full, Path(tmp), log)
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient() as client:
                await wait_until_serving(client, url, proc, log, timeout_s=60)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except Exception:
                proc.kill()


def pcts(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.percentile(values, 50) * 1000:.0f} / {np.percentile(values, 95) * 1000:.0f}"


def line_audio(seconds: float, seed: int, *parts: tuple[float, str]) -> bytes:
    """Line noise for `seconds`, with caller sentences at the given times."""
    track = tc.line_noise(seconds, seed)
    for at, text in parts:
        said = tc.voice(text, agent=False, level_dbfs=-22)
        start = int(at * tc.RATE)
        track[start : start + said.size] += said[: track.size - start]
    return tc.phone_line(track)


# --- 1. barge-in reaction ---------------------------------------------------------------------------------


async def reaction(calls: int) -> None:
    sentences = [s for s in tc.CALLER_SENTENCES if len(s) > 20]
    found: dict[str, list[float]] = {"local": [], "server": []}
    missed = {"local": 0, "server": 0}
    async with gateway(BARGE_IN="local") as local, gateway(BARGE_IN="server") as server:
        urls = {"local": local, "server": server}
        for i in range(calls):
            audio = line_audio(4.5, i, (2.0, sentences[i % len(sentences)]))
            results = await asyncio.gather(
                *(place_call(url, CallScript(audio, trailing_silence_s=0.5)) for url in urls.values())
            )
            for mode, result in zip(urls, results, strict=True):
                found[mode].extend(result.barge_ins)
                missed[mode] += len(result.unanswered_barge_ins)
            print(f"reaction call {i + 1}/{calls}", file=sys.stderr)
    print("\n## Barge-in reaction: caller speech onset -> Twilio `clear`\n")
    print("| BARGE_IN | barge-ins | cleared | onset -> clear p50 / p95 ms | max ms |")
    print("|---|---|---|---|---|")
    for mode, values in found.items():
        total = len(values) + missed[mode]
        top = f"{max(values) * 1000:.0f}" if values else "-"
        print(f"| {mode} | {total} | {len(values)} | {pcts(values)} | {top} |")


# --- 2. false barge-ins -----------------------------------------------------------------------------------


def agent_turns(seconds: float) -> list[bytes]:
    """The agent's speech at Live's 24 kHz, in turns of about 5 s."""
    from gateway.audio import resample_block

    talk = tc.agent_talk(seconds)
    pcm = np.clip(np.round(talk), -32768, 32767).astype("<i2").tobytes()
    wide = resample_block(pcm, tc.RATE, 24000)
    step = 5 * 24000 * 2
    return [wide[i : i + step] for i in range(0, len(wide), step)]


def talking_peer(turns: list[bytes], lead_s: float = 1.0):  # type: ignore[no-untyped-def]
    """A Live stand-in that talks: each turn's audio at real time plus `lead_s`, then turnComplete."""

    async def script(session: PeerSession) -> None:
        await asyncio.wait_for(session.got_turn.wait(), 10)  # the greeting asks it to speak
        started = time.monotonic()
        sent_s = 0.0
        for turn in turns:
            for i in range(0, len(turn), 2 * 24000 * 40 // 1000):
                chunk = turn[i : i + 2 * 24000 * 40 // 1000]
                delay = started + sent_s - lead_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await session.send_audio(chunk)
                sent_s += len(chunk) / 48000
            await session.send({"serverContent": {"turnComplete": True}})

    return script


async def false_barge_ins(seconds: float) -> None:
    turns = agent_turns(seconds)
    print("\n## False barge-ins while the agent talks (BARGE_IN=local, the caller silent)\n")
    print("| caller's line | agent speech heard, s | clears (false barge-ins) | per minute of agent speech |")
    print("|---|---|---|---|")
    for label, echo_db in (
        ("line noise", None),
        ("noise + echo at -20 dB", -20.0),
        ("noise + echo at -10 dB", -10.0),
    ):
        async with LivePeer(talking_peer(turns)) as peer, gateway(GEMINI_LIVE_URL=peer.url) as url:
            noise = tc.phone_line(tc.line_noise(seconds + 3, seed=11))
            result = await place_call(url, CallScript(noise, trailing_silence_s=0.0, echo_db=echo_db))
        agent_s = heard_agent_s(result)
        clears = sum(1 for e in result.events if e.kind == "clear")
        rate = clears / (agent_s / 60) if agent_s else float("nan")
        print(f"| {label} | {agent_s:.0f} | {clears} | {rate:.1f} |")


def heard_agent_s(result: CallResult) -> float:
    samples = np.frombuffer(result.heard, "<i2")
    frames = samples[: samples.size // 160 * 160].reshape(-1, 160)
    return float((np.abs(frames).max(axis=1) > 300).sum() * 0.02)


# --- 3. end of speech -> first agent audio ------------------------------------------------------------------


async def latency(calls: int) -> None:
    found: dict[str, list[float]] = {"server": [], "local": []}
    async with (
        gateway(TURN_DETECTION="server", AGENT_GREETING="none") as server,
        gateway(TURN_DETECTION="local", AGENT_GREETING="none") as local,
    ):
        urls = {"server": server, "local": local}
        for i in range(calls):
            texts = [tc.CALLER_SENTENCES[(3 * i + k) % len(tc.CALLER_SENTENCES)] for k in range(3)]
            audio = line_audio(18.0, 20 + i, (0.8, texts[0]), (6.8, texts[1]), (12.8, texts[2]))
            results = await asyncio.gather(
                *(place_call(url, CallScript(audio, trailing_silence_s=0.5)) for url in urls.values())
            )
            for mode, result in zip(urls, results, strict=True):
                found[mode].extend(t.response_latency for t in result.turns if t.response_latency is not None)
            print(f"latency call {i + 1}/{calls}", file=sys.stderr)
    print("\n## End of the caller's speech -> the agent's first audio (local backend)\n")
    print("| TURN_DETECTION | answers | p50 / p95 ms | mean ms |")
    print("|---|---|---|---|")
    for mode, values in found.items():
        mean = f"{statistics.mean(values) * 1000:.0f}" if values else "-"
        print(f"| {mode} | {len(values)} | {pcts(values)} | {mean} |")


# --- 4. CPU ----------------------------------------------------------------------------------------------

SETTINGS = {
    "off": {"BARGE_IN": "server", "TURN_DETECTION": "server"},
    "on": {"BARGE_IN": "local", "TURN_DETECTION": "server"},
}


def espeak_caller(seconds: float, seed: int, rate: int = 8000) -> bytes:
    """What the load harness's callers say instead of its synthetic bursts: eSpeak NG sentences with pauses,
    in line noise (the synthetic bursts are not speech to the model: each costs a whole confirmation)."""
    assert rate == tc.RATE
    return tc.caller_in_noise(seed=seed, seconds=seconds).line


async def cpu(rounds: int, calls: int, duration: float, callers: str) -> None:
    per_round: list[dict[str, float]] = []
    if callers == "espeak":
        load_module.caller_audio = espeak_caller  # type: ignore[assignment]
    async with ChildProcessPeer() as peer:
        for r in range(rounds):
            figures: dict[str, float] = {}
            order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
            for mode in order:
                os.environ.update(SETTINGS[mode])  # the gateway process takes its settings from here
                async with gateway_process(peer.url) as (url, pid):
                    run = await run_load(LoadOptions(url, calls, duration, ramp_s=2.0, gateway_pid=pid), peer)
                figures[mode] = analyze(run).gateway_ms_per_call_s
                print(f"cpu round {r + 1} {mode}: {figures[mode]:.2f} ms per call-s", file=sys.stderr)
            per_round.append(figures)
    what = "eSpeak NG sentences in line noise" if callers == "espeak" else "synthetic speech-like bursts"
    print(f"\n## CPU per call-second, local detector on vs off ({calls} calls of {duration:.0f} s; {what})\n")
    print("| round (order) | off ms CPU per call-s | on ms CPU per call-s | on/off |")
    print("|---|---|---|---|")
    ratios = []
    for r, f in enumerate(per_round):
        ratio = f["on"] / f["off"]
        ratios.append(ratio)
        order = "off, on" if r % 2 == 0 else "on, off"
        print(f"| {r + 1} ({order}) | {f['off']:.2f} | {f['on']:.2f} | {ratio:.2f} |")
    print(f"\non/off median **{statistics.median(ratios):.2f}** over {len(ratios)} rounds")


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="reaction,false,latency,cpu")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"# Turn-taking\n\n{describe()}")
    if "reaction" in only:
        await reaction(6 if args.quick else 20)
    if "false" in only:
        await false_barge_ins(30.0 if args.quick else 60.0)
    if "latency" in only:
        await latency(2 if args.quick else 6)
    if "cpu" in only:
        await cpu(2 if args.quick else 4, 20, 15.0 if args.quick else 25.0, "espeak")
        await cpu(2, 20, 15.0 if args.quick else 25.0, "synthetic")
    return 0


if __name__ == "__main__":
    raise SystemExit(_run(main()))
