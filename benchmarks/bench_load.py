"""Load benchmark: concurrent calls through a real gateway process, against the scripted Live peer.

Three processes share the machine: the gateway (`gateway serve`, as deployed, LOG_LEVEL=warning), the scripted
Live peer (its own process, so its GIL is not the harness's), and this process, which places the calls with
the load harness (uvloop). Each load level gets a fresh gateway, so its memory figures start from idle.
Stamps from all three are on one clock (CLOCK_MONOTONIC), so per-frame latencies are measured, not inferred.

Prints Markdown for BENCHMARKS.md. Run: python benchmarks/bench_load.py [--levels 10,100,200] [--quick]
(the full run takes about 8 minutes). With py-spy on PATH, the gateway is profiled at the profile level.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from machine import describe

from gateway.devtools.load import (
    LATE_FRAME_S,
    ChildProcessPeer,
    Figures,
    LoadOptions,
    _run,
    analyze,
    report,
    run_direct_baseline,
    run_load,
)
from gateway.devtools.scripted_peer import PeerOptions

TARGET_CALLS_PER_CORE = 200
TARGET_RSS_PER_CALL = 1 << 20
TARGET_LATENCY_P99_S = 0.002
TARGET_BARGE_IN_P99_S = 0.005


# --- the gateway process --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_with(ws: str, port: int) -> None:
    """Launcher mode: `gateway serve` with another uvicorn WebSocket implementation (nothing else differs)."""
    import uvicorn

    from gateway.app import create_app
    from gateway.config import load_settings
    from gateway.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        ws_max_size=settings.max_message_bytes,
        ws=ws,  # type: ignore[arg-type]
    )


NAIVE_BRIDGE = Path(__file__).with_name("naive_bridge.py")
CALLBACK_BRIDGE = Path(__file__).with_name("callback_bridge.py")  # the naive bridge's work without its layers


@contextlib.asynccontextmanager
async def gateway_process(
    live_url: str,
    ws: str | None = None,
    *,
    bridge: Path | None = None,
    processes: int = 1,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[tuple[str, int]]:
    """A gateway (or a reference `bridge` script) in its own process; yields (base URL, pid). With
    processes > 1 the gateway runs that many processes (WEB_CONCURRENCY); the pid is their parent's."""
    port = _free_port()
    # Call records in a database of this process's own: the default is a file in the working directory,
    # which grew with every run, and the gateway's memory with it (an SQLite cache over 14 MB of old calls).
    records = tempfile.TemporaryDirectory(prefix="gateway-load-records-")
    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{records.name}/calls.sqlite3",
        "GEMINI_LIVE_URL": live_url,
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "DEVELOPMENT_MODE": "true",  # the harness signs nothing; stream tokens are still issued and checked
        "MAX_CONCURRENT_CALLS": "10000",  # measure capacity, not the admission limit
        "WEB_CONCURRENCY": str(processes),
        **(extra_env or {}),
    }
    env.pop("GEMINI_API_KEY", None)
    env.pop("TWILIO_AUTH_TOKEN", None)
    if bridge is not None:
        cmd = [sys.executable, str(bridge), "--port", str(port)]
    elif ws is None:
        cmd = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd = [sys.executable, __file__, "--serve-ws", ws, "--port", str(port)]
    # stderr to a file, not a pipe: a gateway blocked on a full pipe would look like a slow gateway.
    with records, tempfile.TemporaryFile() as stderr:
        process = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await _wait_healthy(url, process)
            await asyncio.sleep(1.0)  # let start-up CPU settle before the idle sample
            yield url, process.pid
        finally:
            if process.returncode is None:
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace")
            if "Traceback" in errors or '"level": "error"' in errors:
                print(f"<!-- gateway stderr (tail):\n{errors[-2000:]}\n-->", file=sys.stderr)


async def _wait_healthy(url: str, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            if process.returncode is not None:
                raise RuntimeError(f"gateway exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError("gateway did not become healthy")


# --- profiling ------------------------------------------------------------------------------------------


async def profile(pid: int, seconds: float, out: Path) -> None:
    """py-spy on the gateway, without pausing it (--nonblocking), as collapsed stacks."""
    if not shutil.which("py-spy"):
        return
    cmd = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"]
    cmd += ["--nonblocking", "--format", "raw", "--output", str(out)]
    spy = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await spy.wait()


def hot_spots(collapsed: Path, top: int = 18) -> str:
    """Self time by function and inclusive time by a few frames of interest, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "(no samples)"
    lines = [f"{total} samples. Self time (the function itself, not what it calls):", ""]
    lines += ["| self % | function |", "|---:|---|"]
    lines += [f"| {n / total * 100:.1f} | `{name}` |" for name, n in own.most_common(top)]
    lines += ["", "Inclusive time of the gateway's own steps:", "", "| incl. % | function |", "|---:|---|"]
    ours = [(k, v) for k, v in inclusive.most_common() if "gateway/" in k]
    lines += [f"| {n / total * 100:.1f} | `{name}` |" for name, n in ours[:top]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (pkg/file.py)", so lines of one function add up.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    tail = "/".join(parts[-2:]) if parts else path
    return f"{name} ({tail})"


# --- one level ------------------------------------------------------------------------------------------


@dataclass
class Level:
    calls: int
    ws: str
    figures: Figures
    text: str


async def run_level(
    peer: ChildProcessPeer, calls: int, duration: float, ramp: float, ws: str | None, prof: Path | None
) -> Level:
    async with gateway_process(peer.url, ws) as (url, pid):
        options = LoadOptions(url=url, calls=calls, duration_s=duration, ramp_s=ramp, gateway_pid=pid)
        spy = None
        if prof is not None:
            # Profile the steady part of the run, when every call is up.
            async def later() -> None:
                await asyncio.sleep(ramp + 1.5)
                await profile(pid, max(5.0, duration - ramp - 3), prof)

            spy = asyncio.create_task(later())
        run = await run_load(options, peer)
        if spy is not None:
            await spy
    figures = analyze(run)
    return Level(calls, ws or "websockets-sansio (uvicorn auto)", figures, report(figures))


def holds(f: Figures) -> bool:
    """Held: every call completed, nothing missing, and under 0.1% of frames late in either direction."""
    frames = max(1, len(f.inbound) + len(f.outbound))
    return (
        not f.errors
        and f.completed == f.calls
        and f.caller_frames_missing == 0
        and f.agent_frames_missing == 0
        and (f.late_inbound + f.late_outbound) / frames <= 0.001
        and not f.harness_overloaded
    )


# --- Markdown -------------------------------------------------------------------------------------------


def p(values: list[float], q: float) -> str:
    return f"{np.percentile(np.asarray(values) * 1000, q):.2f}" if values else "n/a"


def level_row(level: Level) -> str:
    f = level.figures
    late = f"{f.late_inbound} / {f.late_outbound}"
    missing = f"{f.caller_frames_missing} / {f.agent_frames_missing}"
    errors = sum(f.errors.values()) + (f.calls - f.completed if not f.errors else 0)
    harness = f"{f.harness_late_in_window * 100:.2f}%"
    return (
        f"| {level.calls} | {f.gateway_cpu_pct:.0f}% | {f.gateway_ms_per_call_s:.2f} | "
        f"{f.gateway_rss_steady / 2**20:.0f} | {p(f.inbound, 50)} / {p(f.inbound, 99)} | "
        f"{p(f.outbound, 50)} / {p(f.outbound, 99)} | {p(f.barge_in, 50)} / {p(f.barge_in, 99)} | "
        f"{late} | {missing} | {errors} | {harness} | {f.harness_cpu_pct:.0f}% / {f.peer_cpu_pct:.0f}% | "
        f"{'yes' if holds(f) else 'no'} |"
    )


TABLE_HEAD = (
    "| calls | gateway CPU | ms CPU per call-s | RSS MiB | inbound p50 / p99 ms | outbound p50 / p99 ms "
    "| barge-in p50 / p99 ms | late in / out | missing in / out | errors | harness late sends "
    "| harness / peer CPU | held |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"
)


def rss_slope(levels: list[Level]) -> float:
    """Least-squares slope of steady RSS against calls, bytes per call."""
    xs = np.array([lv.calls for lv in levels], float)
    ys = np.array([lv.figures.gateway_rss_steady for lv in levels], float)
    if len(xs) < 2 or np.ptp(xs) == 0:
        return float("nan")
    return float(np.polyfit(xs, ys, 1)[0])


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


# --- the gateway beside the naive bridge -----------------------------------------------------------------

TARGET_RATIO = 0.7  # gateway / naive CPU per call-second
TARGET_RSS_PER_CALL_VS = 200 * 1024


@dataclass
class Pair:
    """One round at one level: the gateway and the naive bridge, run one after the other."""

    calls: int
    gateway: Figures
    naive: Figures
    server: Figures | None = None  # the gateway with BARGE_IN=server: no caller-side speech detector
    callback: Figures | None = None  # callback_bridge.py: the naive bridge's work without its layers
    rate8k: Figures | None = None  # the gateway with LIVE_INPUT_RATE=8000: Live resamples the caller

    def versus_naive(self, side: Figures | None) -> float:
        """A side's CPU per call-second over the naive bridge's in this round (nan: the side did not run)."""
        if side is None:
            return math.nan
        return side.gateway_ms_per_call_s / self.naive.gateway_ms_per_call_s

    @property
    def ratio(self) -> float:
        return self.versus_naive(self.gateway)

    @property
    def server_ratio(self) -> float:
        return self.versus_naive(self.server)

    @property
    def rate8k_ratio(self) -> float:
        return self.versus_naive(self.rate8k)

    @property
    def callback_ratio(self) -> float:
        return self.versus_naive(self.callback)


async def run_versus(
    peer: ChildProcessPeer,
    levels: list[int],
    rounds: int,
    duration: float,
    server_side: bool = False,
    callback_side: bool = False,
    rate8k_side: bool = False,
) -> list[Pair]:
    """Rounds of every level, the gateway and the naive bridge alternating which goes first (A B, B A, ...):
    the machine's drift then falls on both sides alike."""
    pairs: list[Pair] = []
    for r in range(rounds):
        for calls in levels:
            ramp = min(5.0, max(1.0, calls / 20))
            got: dict[str, Figures] = {}
            sides = ["gateway", "naive"] + (["server"] if server_side else [])
            sides += ["callback"] if callback_side else []
            sides += ["rate8k"] if rate8k_side else []
            for name in sides if r % 2 == 0 else sides[::-1]:
                env = {"server": {"BARGE_IN": "server"}, "rate8k": {"LIVE_INPUT_RATE": "8000"}}.get(name)
                bridge = {"naive": NAIVE_BRIDGE, "callback": CALLBACK_BRIDGE}.get(name)
                async with gateway_process(peer.url, bridge=bridge, extra_env=env) as (url, pid):
                    options = LoadOptions(url, calls, duration_s=duration, ramp_s=ramp, gateway_pid=pid)
                    got[name] = analyze(await run_load(options, peer))
                text = report(got[name])
                print(f"<!-- round {r + 1}, {calls} calls, {name}:\n{text}\n-->", file=sys.stderr, flush=True)
            extra = (got.get("server"), got.get("callback"), got.get("rate8k"))
            pairs.append(Pair(calls, got["gateway"], got["naive"], *extra))
    return pairs


def _median_spread(values: list[float], fmt: str = ".2f") -> str:
    if not values:
        return "n/a"
    med = float(np.median(values))
    if len(values) == 1:
        return format(med, fmt)
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def versus_markdown(pairs: list[Pair], rounds: int, duration: float) -> str:
    levels = sorted({pr.calls for pr in pairs})
    lines = [
        "| calls | gateway / naive CPU per call-s | gateway ms CPU per call-s | naive ms CPU per call-s "
        "| gateway (BARGE_IN=server) / naive | gateway / naive KiB per call | held (gateway / naive) "
        "| in the kernel: gateway / naive | messages to Live per caller frame: gateway / naive "
        "| callback bridge / naive |",
        "|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|",
    ]
    for calls in levels:
        at = [pr for pr in pairs if pr.calls == calls]
        ratio = _median_spread([pr.ratio for pr in at])
        g = _median_spread([pr.gateway.gateway_ms_per_call_s for pr in at])
        n = _median_spread([pr.naive.gateway_ms_per_call_s for pr in at])
        kib = (
            f"{np.median([pr.gateway.rss_per_call for pr in at]) / 1024:.0f} / "
            f"{np.median([pr.naive.rss_per_call for pr in at]) / 1024:.0f}"
        )
        held = f"{sum(holds(pr.gateway) for pr in at)} / {sum(holds(pr.naive) for pr in at)} of {len(at)}"
        server = _median_spread([pr.server_ratio for pr in at if pr.server is not None])
        kernel = (
            f"{np.median([pr.gateway.gateway_kernel_share for pr in at]) * 100:.0f}% / "
            f"{np.median([pr.naive.gateway_kernel_share for pr in at]) * 100:.0f}%"
        )
        sends = " / ".join(
            f"{np.median([f.caller_messages_received / max(1, f.caller_frames_received) for f in side]):.2f}"
            for side in ([pr.gateway for pr in at], [pr.naive for pr in at])
        )
        callback = _median_spread([pr.callback_ratio for pr in at if pr.callback is not None])
        lines.append(
            f"| {calls} | {ratio} | {g} | {n} | {server} | {kib} | {held} | {kernel} | {sends} | {callback} |"
        )
    lines += [
        "",
        "Latency, every round of a level together (ms; late = more than 20 ms; missing = sent and never "
        "received; inbound counts from the newest frame of each message to Live, and how long a frame "
        "waited for the rest of its chunk, `LIVE_SPEECH_CHUNK_MS`, is apart):",
        "",
        "| calls | side | inbound p50 / p99 | held for the chunk p50 / max | outbound p50 / p99 "
        "| barge-in p50 / p99 | late in / out | missing in / out |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for calls in levels:
        at = [pr for pr in pairs if pr.calls == calls]
        for side in ("gateway", "naive", "callback"):
            figs = [getattr(pr, side) for pr in at if getattr(pr, side) is not None]
            if not figs:
                continue
            inbound = [x for f in figs for x in f.inbound]
            held = [x for f in figs for x in f.inbound_held]
            outbound = [x for f in figs for x in f.outbound]
            barge = [x for f in figs for x in f.barge_in]
            late = f"{sum(f.late_inbound for f in figs)} / {sum(f.late_outbound for f in figs)}"
            missing = (
                f"{sum(f.caller_frames_missing for f in figs)} / {sum(f.agent_frames_missing for f in figs)}"
            )
            lines.append(
                f"| {calls} | {side} | {p(inbound, 50)} / {p(inbound, 99)} | {p(held, 50)} / "
                f"{p(held, 100)} | {p(outbound, 50)} / {p(outbound, 99)} | {p(barge, 50)} / {p(barge, 99)} "
                f"| {late} | {missing} |"
            )
    if any(pr.rate8k is not None for pr in pairs):
        lines += ["", "| calls | gateway (LIVE_INPUT_RATE=8000) / naive CPU per call-s | its KiB per call |"]
        lines.append("|---:|---:|---:|")
        for calls in levels:
            at = [pr for pr in pairs if pr.calls == calls and pr.rate8k is not None]
            kib8 = np.median([pr.rate8k.rss_per_call for pr in at if pr.rate8k is not None]) / 1024
            lines.append(f"| {calls} | {_median_spread([pr.rate8k_ratio for pr in at])} | {kib8:.0f} |")
    ratios = [pr.ratio for pr in pairs]
    worst = max(float(np.median([pr.ratio for pr in pairs if pr.calls == c])) for c in levels)
    kib = [pr.gateway.rss_per_call for pr in pairs if pr.gateway.rss_per_call == pr.gateway.rss_per_call]
    lines += [
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| gateway / naive CPU per call-second <= {TARGET_RATIO} | median {np.median(ratios):.2f} over "
        f"{len(ratios)} pairs, worst level's median {worst:.2f} | {verdict(worst <= TARGET_RATIO)} |",
        f"| <= 200 KiB per call | median {np.median(kib) / 1024:.0f} KiB (steady RSS minus idle, per call) | "
        f"{verdict(float(np.median(kib)) <= TARGET_RSS_PER_CALL_VS)} |",
    ]
    return "\n".join(lines)


# --- calls held with several processes ---------------------------------------------------------------


@dataclass
class Held:
    processes: int
    calls: int
    figures: Figures
    prewarm: dict[str, float]


async def _prewarm_counts(url: str) -> dict[str, float]:
    """gateway_prewarm_total by result, from /metrics (every process's, added up)."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(url + "/metrics")).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gateway_prewarm_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = counts.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


async def run_capacity(peer: ChildProcessPeer, levels: list[int], duration: float) -> list[Held]:
    """WEB_CONCURRENCY=1 and 2 side by side at each level (which goes first alternates), up the ladder until
    neither holds two levels in a row."""
    runs: list[Held] = []
    for i, calls in enumerate(levels):
        ramp = min(10.0, max(1.0, calls / 20))
        for processes in (1, 2) if i % 2 == 0 else (2, 1):
            async with gateway_process(peer.url, processes=processes) as (url, pid):
                options = LoadOptions(url, calls, duration_s=duration, ramp_s=ramp, gateway_pid=pid)
                figures = analyze(await run_load(options, peer))
                prewarm = await _prewarm_counts(url)
            runs.append(Held(processes, calls, figures, prewarm))
            text = report(figures)
            print(
                f"<!-- {calls} calls, {processes} processes:\n{text}\n{prewarm}\n-->",
                file=sys.stderr,
                flush=True,
            )
        if i and not any(in_real_time(r.figures) for r in runs if r.calls in levels[i - 1 : i + 1]):
            break  # two levels in a row that neither held
    return runs


def in_real_time(f: Figures) -> bool:
    """Held in real time: every call completed, no caller frame missing, under 0.1% of frames late either way,
    the harness on time. Unlike `holds`, agent frames the harness could not pair are not counted: after the
    gateway's own barge-in on a turn the scripted peer went on with, the peer's turns and the caller's
    segments no longer line up one to one (the frames were cut on purpose, not lost)."""
    frames = max(1, len(f.inbound) + len(f.outbound))
    return (
        not f.errors
        and f.completed == f.calls
        and f.caller_frames_missing == 0
        and (f.late_inbound + f.late_outbound) / frames <= 0.001
        and not f.harness_overloaded
    )


def capacity_markdown(runs: list[Held]) -> str:
    lines = [
        "| calls | processes | held | gateway CPU (cores) | late in / out | missing in / out "
        "| harness late sends | harness / peer CPU | pre-warm taken / no stream |",
        "|---:|---:|:---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        f = r.figures
        lines.append(
            f"| {r.calls} | {r.processes} | {'yes' if in_real_time(f) else 'no'} | "
            f"{f.gateway_cpu_pct / 100:.2f} | "
            f"{f.late_inbound} / {f.late_outbound} | {f.caller_frames_missing} / {f.agent_frames_missing} | "
            f"{f.harness_late_in_window * 100:.2f}% | {f.harness_cpu_pct:.0f}% / {f.peer_cpu_pct:.0f}% | "
            f"{r.prewarm.get('taken', 0):.0f} / {r.prewarm.get('no_stream', 0):.0f} |"
        )
    held = [r for r in runs if in_real_time(r.figures)]
    most = {n: max((r.calls for r in held if r.processes == n), default=0) for n in (1, 2)}
    ratio = most[2] / most[1] if most[1] else float("nan")
    lines += [
        "",
        f"Most calls held: {most[1]} with one process, {most[2]} with two: {ratio:.2f}x.",
    ]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------


def peer_options(args: argparse.Namespace) -> PeerOptions:
    """The scripted peer sends a resumable handle after each turn, as Live does; --no-handles: never (the
    gateway then keeps its whole replay window: the memory of a call that Live gives no handle)."""
    return PeerOptions(handles=not args.no_handles)


async def main(args: argparse.Namespace) -> None:
    if args.capacity:
        levels = [int(x) for x in args.capacity.split(",")]
        async with ChildProcessPeer(options=peer_options(args)) as peer:
            runs = await run_capacity(peer, levels, args.duration)
        print(capacity_markdown(runs))
        return
    if args.versus_naive:
        levels = [int(x) for x in args.versus_naive.split(",")]
        async with ChildProcessPeer(options=peer_options(args)) as peer:
            pairs = await run_versus(
                peer,
                levels,
                args.rounds,
                args.duration,
                args.server_side,
                args.callback_side,
                args.rate8k_side,
            )
        print(versus_markdown(pairs, args.rounds, args.duration))
        return
    levels_wanted = [int(x) for x in args.levels.split(",")]
    out: list[str] = []
    async with ChildProcessPeer(options=peer_options(args)) as peer:
        base = await run_direct_baseline(peer, calls=100, seconds=args.baseline_duration)
        baseline = analyze(base)
        levels: list[Level] = []
        prof_path = Path(tempfile.gettempdir()) / f"gateway-load-{os.getpid()}.txt"
        for calls in levels_wanted:
            prof = prof_path if calls == args.profile_at else None
            ramp = min(args.ramp, max(1.0, calls / 20))
            level = await run_level(peer, calls, args.duration, ramp, None, prof)
            levels.append(level)
            print(f"<!-- {calls} calls:\n{level.text}\n-->", file=sys.stderr, flush=True)
            if not holds(level.figures) and calls > max(levels_wanted[:2], default=0) and args.stop_on_fail:
                break
        alternatives: list[Level] = []
        for ws in args.compare_ws.split(",") if args.compare_ws else ():
            with contextlib.suppress(ImportError):
                if ws == "wsproto":
                    import wsproto  # noqa: F401
                level = await run_level(peer, args.compare_at, args.duration, args.ramp, ws, None)
                alternatives.append(level)
                print(f"<!-- {ws}:\n{level.text}\n-->", file=sys.stderr, flush=True)

    out.append(markdown(args, levels, alternatives, baseline, prof_path if prof_path.exists() else None))
    print("\n".join(out))


def markdown(
    args: argparse.Namespace,
    levels: list[Level],
    alternatives: list[Level],
    baseline: Figures,
    prof: Path | None,
) -> str:
    held = [lv for lv in levels if holds(lv.figures)]
    steady = [lv.figures.gateway_ms_per_call_s for lv in levels if lv.calls >= 50 and holds(lv.figures)]
    ms_per_call = float(np.median(steady)) if steady else float("nan")
    per_core = 1000 / ms_per_call if ms_per_call > 0 else float("nan")
    slope = rss_slope([lv for lv in levels if lv.figures.gateway_rss_steady])
    at100 = next((lv.figures for lv in levels if lv.calls == 100), None)
    most = max(held, key=lambda lv: lv.calls) if held else None
    barge = [x for lv in levels if holds(lv.figures) for x in lv.figures.barge_in]
    lines = [
        "## Load: concurrent calls through the gateway",
        "",
        f"`python benchmarks/bench_load.py` ({args.duration:.0f} s calls, ramped over up to "
        f"{args.ramp:.0f} s; a fresh gateway per level).",
        "",
        f"Machine: {describe('uvicorn', 'websockets', 'starlette', 'uvloop', 'numpy')}.",
        "",
        "Processes, all on the same cores: the gateway (`gateway serve`: uvicorn, uvloop, LOG_LEVEL=warning, "
        "the default greeting); the scripted Live peer (`gateway.devtools.scripted_peer`, its own "
        "process: energy VAD on the caller audio, canned 24 kHz replies in 40 ms chunks at 2x real "
        "time, `interrupted` when the caller talks over a reply still streaming); the harness (this "
        "process, uvloop: the caller simulator's calls, sentences spoken by eSpeak NG, a third of the "
        "pauses short enough to barge in). "
        "Latencies are stamped on one monotonic clock in both processes: inbound = Twilio media sent -> "
        "realtimeInput received by the peer (from the newest frame in the message); outbound = peer chunk "
        "sent -> Twilio media received; barge-in "
        "= peer `interrupted` sent -> Twilio `clear` received. They include two loopback hops and the "
        "receiving process's own scheduling. Latencies, late frames and harness late sends are over "
        "the steady window (every call up; during the ramp each webhook costs the harness ~18 ms). "
        "Late = more than "
        f"{LATE_FRAME_S * 1000:.0f} ms. CPU and RSS are the gateway's (with descendants) from /proc over "
        "the window when every call was up.",
        "",
        TABLE_HEAD,
        *(level_row(lv) for lv in levels),
        "",
        "Loopback floor (the harness speaking Live to the peer directly, 100 calls, no gateway): inbound "
        f"p50 {p(baseline.inbound, 50)} / p99 {p(baseline.inbound, 99)} ms, outbound p50 "
        f"{p(baseline.outbound, 50)} / p99 {p(baseline.outbound, 99)} ms"
        + (
            f", `interrupted` p50 {p(baseline.barge_in, 50)} / p99 {p(baseline.barge_in, 99)} ms"
            if baseline.barge_in
            else ""
        )
        + " (one hop each way; the gateway path has two).",
        "",
    ]
    if alternatives:
        lines += [f"uvicorn WebSocket implementations at {args.compare_at} calls:", "", TABLE_HEAD]
        default = next((lv for lv in levels if lv.calls == args.compare_at), None)
        rows = ([default] if default else []) + alternatives
        lines += [level_row(lv).replace(f"| {lv.calls} |", f"| {lv.calls} ({lv.ws}) |", 1) for lv in rows]
        lines.append("")
    lines += [
        "| target | measured | |",
        "|---|---|---|",
        f"| >= {TARGET_CALLS_PER_CORE} real-time calls per core, no late frames | "
        f"{ms_per_call:.2f} ms CPU per call-second = {per_core:.0f} calls per core; "
        f"most calls held: {most.calls if most else 'none'} | "
        f"{verdict(per_core >= TARGET_CALLS_PER_CORE)} |",
        f"| <= 1 MB RSS per additional call | {slope / 2**10:.0f} KiB per call (slope of RSS vs calls) | "
        f"{verdict(slope <= TARGET_RSS_PER_CALL)} |",
    ]
    if at100 is not None:
        worst = max(np.percentile(at100.inbound, 99), np.percentile(at100.outbound, 99))
        lines.append(
            f"| gateway-added latency p99 <= 2 ms per frame at 100 calls | inbound {p(at100.inbound, 99)}, "
            f"outbound {p(at100.outbound, 99)} ms (floor {p(baseline.inbound, 99)} / "
            f"{p(baseline.outbound, 99)}) | {verdict(worst <= TARGET_LATENCY_P99_S)} |"
        )
    if barge:
        lines.append(
            f"| barge-in p99 <= 5 ms | p50 {p(barge, 50)}, p99 {p(barge, 99)} ms (levels held) | "
            f"{verdict(np.percentile(barge, 99) <= TARGET_BARGE_IN_P99_S * 1000 / 1000)} |"
        )
    if prof is not None:
        lines += ["", f"### Gateway profile at {args.profile_at} calls (py-spy, steady state)", ""]
        lines.append(hot_spots(prof))
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="10,100,200,300,400")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--baseline-duration", type=float, default=15.0)
    parser.add_argument("--profile-at", type=int, default=200)
    parser.add_argument("--compare-ws", default="websockets,wsproto", help="other uvicorn ws implementations")
    parser.add_argument("--compare-at", type=int, default=100)
    parser.add_argument("--stop-on-fail", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--quick", action="store_true", help="10 and 50 calls, 12 s: a smoke run")
    parser.add_argument(
        "--versus-naive",
        default=None,
        metavar="LEVELS",
        help="the gateway beside benchmarks/naive_bridge.py at these levels (e.g. 25,50,100), interleaved",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --versus-naive")
    parser.add_argument(
        "--server-side",
        action="store_true",
        help="--versus-naive also runs the gateway with BARGE_IN=server (no caller-side speech detector)",
    )
    parser.add_argument(
        "--no-handles",
        action="store_true",
        help="the scripted peer never sends a resumption handle (the gateway's worst case for memory)",
    )
    parser.add_argument(
        "--callback-side",
        action="store_true",
        help="--versus-naive also runs benchmarks/callback_bridge.py (the naive bridge's work, no layers)",
    )
    parser.add_argument(
        "--rate8k-side",
        action="store_true",
        help="--versus-naive also runs the gateway with LIVE_INPUT_RATE=8000 (Live resamples the caller)",
    )
    parser.add_argument(
        "--capacity",
        default=None,
        metavar="LEVELS",
        help="WEB_CONCURRENCY=1 and 2 side by side up these levels (e.g. 150,200,300) until neither holds",
    )
    parser.add_argument("--serve-ws", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.levels, args.duration, args.ramp, args.baseline_duration = "10,50", 12.0, 3.0, 6.0
        args.compare_ws, args.profile_at = "", 50
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve_ws:
        _serve_with(arguments.serve_ws, arguments.port)
    else:
        started = time.monotonic()
        _run(main(arguments))
        print(f"\n<!-- benchmark took {time.monotonic() - started:.0f} s -->")
