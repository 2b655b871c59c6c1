"""Two gateway source trees under the same load, interleaved: the cost of a change, on a drifting machine.

This machine's speed drifts by 2-3x between hours, so figures from separate runs cannot be compared. This
runs bench_load's level (one fresh gateway process, the load harness, the scripted Live peer) alternately
from two source trees, A B A B ..., and reports each run and the B/A ratio of every adjacent pair: only
ratios measured side by side count.

Each gateway is started from its own tree (PYTHONPATH and working directory of the tree, so `python -m
gateway` imports that tree's code; checked before each run). The harness and the scripted peer are this
process's (the tree this script is run from), the same for both. `--env-a` / `--env-b` give either side's
gateway settings of its own (one tree under two settings: `. .` as the trees). Run, for example:

    git worktree add /tmp/old 01baaf1 && git worktree add /tmp/new 8e4a061
    for tree in /tmp/old /tmp/new; do (cd $tree && python setup.py -q build_ext --inplace); done
    cd /tmp/new && PYTHONPATH=/tmp/new python benchmarks/bench_compare.py /tmp/old /tmp/new --calls 50

(From a950e56 on, the install compiles the resampler's FIR, gateway/_fir.c: `build_ext --inplace` builds it
in a worktree, which nothing installed. Without it that tree's calls resample in numpy.)

Prints Markdown; each run's full report goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_load import gateway_process, holds
from machine import describe

from gateway.devtools.load import ChildProcessPeer, Figures, LoadOptions, _run, analyze, report, run_load


@dataclass
class Run:
    label: str
    tree: Path
    imported: str  # where the gateway process's `gateway` package comes from
    figures: Figures
    started: str


@contextlib.contextmanager
def source_tree(tree: Path) -> Iterator[None]:
    """Processes started inside import the gateway from `tree`: `python -m` puts the working directory
    first on sys.path (before PYTHONPATH, before the editable install), so both are set."""
    cwd, pythonpath = os.getcwd(), os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree)
    os.chdir(tree)
    try:
        yield
    finally:
        os.chdir(cwd)
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath


def imported_gateway(pid: int, tree: Path) -> str:
    """Where the gateway process `pid` imports `gateway` from: its working directory and PYTHONPATH must be
    the tree's, and the same interpreter started there must resolve `gateway` inside the tree."""
    if Path(os.readlink(f"/proc/{pid}/cwd")).resolve() != tree:
        raise RuntimeError(f"gateway {pid} does not run in {tree}")
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    if f"PYTHONPATH={tree}".encode() not in environ:
        raise RuntimeError(f"gateway {pid} does not have PYTHONPATH={tree}")
    probe = [sys.executable, "-c", "import gateway.app, gateway; print(gateway.__file__)"]
    where = subprocess.run(probe, cwd=tree, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree):
        raise RuntimeError(f"{tree}: `gateway` resolves to {where}")
    return where


async def run_tree(
    peer: ChildProcessPeer,
    label: str,
    tree: Path,
    calls: int,
    duration: float,
    ramp: float,
    env: dict[str, str] | None = None,
) -> Run:
    started = time.strftime("%H:%M:%S")
    with source_tree(tree):
        async with gateway_process(peer.url, extra_env=env) as (url, pid):
            imported = imported_gateway(pid, tree)
            options = LoadOptions(url=url, calls=calls, duration_s=duration, ramp_s=ramp, gateway_pid=pid)
            run = await run_load(options, peer)
    figures = analyze(run)
    print(f"<!-- {label} ({tree}, {started}):\n{report(figures)}\n-->", file=sys.stderr, flush=True)
    return Run(label, tree, imported, figures, started)


# --- Markdown -------------------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 3) -> str:
    """Median (min .. max)."""
    if not values:
        return "n/a"
    mid, lo, hi = statistics.median(values), min(values), max(values)
    return f"{mid:.{digits}f} ({lo:.{digits}f} .. {hi:.{digits}f})"


def markdown(args: argparse.Namespace, runs: list[Run]) -> str:
    a, b = args.labels
    settings = "".join(
        f" --env-{side} {name}={value}"
        for side, env in (("a", args.env_a), ("b", args.env_b))
        for name, value in env.items()
    )
    lines = [
        f"`python benchmarks/bench_compare.py {args.a} {args.b} --calls {args.calls} --duration "
        f"{args.duration:g} --ramp {args.ramp:g} --repeats {args.repeats}{settings}`: {a} and {b} "
        "alternately, a fresh gateway per run, the same harness and scripted peer.",
        "",
        f"Machine: {describe('uvicorn', 'websockets', 'starlette', 'uvloop', 'numpy')}.",
        "",
        "| run | tree | started | calls held | gateway CPU | ms CPU per call-s | RSS idle / steady MiB "
        "| KiB per call | late in / out | harness / peer CPU | held |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for i, r in enumerate(runs, 1):
        f = r.figures
        lines.append(
            f"| {i} | {r.label} | {r.started} | {f.steady_calls:.1f} | {f.gateway_cpu_pct:.1f}% | "
            f"{f.gateway_ms_per_call_s:.3f} | {f.gateway_rss_idle / 2**20:.1f} / "
            f"{f.gateway_rss_steady / 2**20:.1f} | {f.rss_per_call / 2**10:.0f} | "
            f"{f.late_inbound} / {f.late_outbound} | {f.harness_cpu_pct:.0f}% / {f.peer_cpu_pct:.0f}% | "
            f"{'yes' if holds(f) else 'no'} |"
        )
    pairs = [(x, y) for x, y in zip(runs[::2], runs[1::2], strict=False)]
    cpu = {lab: [r.figures.gateway_ms_per_call_s for r in runs if r.label == lab] for lab in (a, b)}
    mem = {lab: [r.figures.rss_per_call / 2**10 for r in runs if r.label == lab] for lab in (a, b)}
    cpu_ratios = [y.figures.gateway_ms_per_call_s / x.figures.gateway_ms_per_call_s for x, y in pairs]
    mem_ratios = [y.figures.rss_per_call / x.figures.rss_per_call for x, y in pairs]
    lines += [
        "",
        f"| figure | {a}: median (min .. max) | {b}: median (min .. max) "
        f"| {b}/{a} of adjacent pairs: median (min .. max) |",
        "|---|---:|---:|---:|",
        f"| ms CPU per call-second | {spread(cpu[a])} | {spread(cpu[b])} | {spread(cpu_ratios)} |",
        f"| KiB RSS per call | {spread(mem[a], 0)} | {spread(mem[b], 0)} | {spread(mem_ratios)} |",
        "",
        f"`gateway` imported from: {a} {runs[0].imported}; {b} {runs[1].imported if len(runs) > 1 else '-'}.",
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    sides = list(zip(args.labels, (args.a, args.b), (args.env_a, args.env_b), strict=True))
    runs: list[Run] = []
    async with ChildProcessPeer() as peer:
        for _ in range(args.repeats):
            for label, tree, env in sides:
                runs.append(await run_tree(peer, label, tree, args.calls, args.duration, args.ramp, env))
    print(markdown(args, runs))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", help="the first source tree (the old one)")
    parser.add_argument("b", help="the second source tree (the new one)")
    parser.add_argument("--labels", default="old,new", help="names of the two trees in the report")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="length of each call, seconds")
    parser.add_argument("--ramp", type=float, default=2.5, help="start the calls over this many seconds")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tree")
    for side in ("a", "b"):
        parser.add_argument(
            f"--env-{side}",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"a setting for {side}'s gateway (repeatable): one tree under two settings, for example",
        )
    args = parser.parse_args()
    args.labels = args.labels.split(",")
    if len(args.labels) != 2 or args.labels[0] == args.labels[1]:
        parser.error("--labels takes two different names")
    for side in ("env_a", "env_b"):
        pairs = [item.partition("=") for item in getattr(args, side)]
        if any(not name or not eq for name, eq, _ in pairs):
            parser.error(f"--{side.replace('_', '-')} takes NAME=VALUE")
        setattr(args, side, {name: value for name, _, value in pairs})
    args.a, args.b = Path(args.a).resolve(), Path(args.b).resolve()
    return args


if __name__ == "__main__":
    started = time.monotonic()
    _run(main(parse_args()))
    print(f"\n<!-- benchmark took {time.monotonic() - started:.0f} s -->")
