"""Memory of a gateway of several processes (WEB_CONCURRENCY), from two source trees under the same load.

The supervisor imports every module (and Silero's weights) and forks the workers, which share those pages
until either writes to them. What each worker has copied for itself is its private memory; what the
machine pays for all of them is the sum of their proportional set sizes (PSS: a shared page counted once,
split between its sharers). RSS summed over processes counts every shared page once per process, so it
cannot show sharing at all.

For each tree, alternately (A B A B ...): a fresh gateway with `--processes` processes, `--calls` calls from
the load harness for `--duration` seconds, and /proc/PID/smaps_rollup of the supervisor and each worker read
near the end, while every call is up. Run from the tree whose harness you want (both gateways get the
same), e.g.:

    git worktree add /tmp/old HEAD~1 && (cd /tmp/old && python setup.py -q build_ext --inplace)
    python benchmarks/bench_fork_memory.py /tmp/old . --labels before,after

Prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from bench_compare import imported_gateway, source_tree
from bench_load import gateway_process
from machine import describe

from gateway.devtools.load import ChildProcessPeer, LoadOptions, _run, child_processes, run_load


@dataclass
class Memory:
    """KiB, from smaps_rollup."""

    pss: int
    private: int  # Private_Clean + Private_Dirty
    rss: int


def smaps(pid: int) -> Memory:
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[name] = int(parts[0])
    return Memory(fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"], fields["Rss"])


def workers_of(pid: int) -> list[int]:
    """The supervisor's forked workers: its children with its own command line (not a helper it spawned)."""

    def cmdline(p: int) -> bytes:
        with open(f"/proc/{p}/cmdline", "rb") as f:
            return f.read()

    return [child for child in child_processes(pid, descendants=False) if cmdline(child) == cmdline(pid)]


@dataclass
class Run:
    label: str
    supervisor: Memory
    workers: list[Memory]

    @property
    def pss(self) -> int:
        return self.supervisor.pss + sum(w.pss for w in self.workers)

    @property
    def rss(self) -> int:
        return self.supervisor.rss + sum(w.rss for w in self.workers)


async def run_tree(
    peer: ChildProcessPeer, label: str, tree: Path, processes: int, calls: int, duration: float
) -> Run:
    ramp = min(10.0, duration / 3)
    with source_tree(tree):
        async with gateway_process(peer.url, processes=processes) as (url, pid):
            imported_gateway(pid, tree)
            options = LoadOptions(url=url, calls=calls, duration_s=duration, ramp_s=ramp, gateway_pid=pid)
            load = asyncio.create_task(run_load(options, peer))
            await asyncio.sleep(ramp + 0.8 * (duration - ramp))  # every call up, most of the run behind
            workers = [smaps(child) for child in workers_of(pid)]
            supervisor = smaps(pid)
            await load
    return Run(label, supervisor, workers)


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def markdown(args: argparse.Namespace, runs: list[Run]) -> str:
    a, b = args.labels
    lines = [
        f"Machine: {describe()}. {args.processes} processes, {args.calls} calls for {args.duration:.0f} s, "
        f"{args.repeats} runs of each tree, alternating; read near the end of each run.",
        "",
        "| run | tree | supervisor PSS MiB | each worker: PSS / private MiB | all: PSS MiB | all: RSS MiB |",
        "|---:|---|---:|---|---:|---:|",
    ]
    for i, run in enumerate(runs, 1):
        workers = ", ".join(f"{mib(w.pss)} / {mib(w.private)}" for w in run.workers)
        lines.append(
            f"| {i} | {run.label} | {mib(run.supervisor.pss)} | {workers} | {mib(run.pss)} | {mib(run.rss)} |"
        )
    lines += ["", f"| figure | {a}: median | {b}: median | {b} - {a} |", "|---|---:|---:|---:|"]
    for name, get in (
        ("all processes' PSS, MiB", lambda r: r.pss),
        ("a worker's private memory, MiB", lambda r: statistics.mean(w.private for w in r.workers)),
    ):
        va = statistics.median(get(r) for r in runs if r.label == a)
        vb = statistics.median(get(r) for r in runs if r.label == b)
        lines.append(f"| {name} | {mib(va)} | {mib(vb)} | {mib(vb - va)} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    trees = [args.tree_a, args.tree_b]
    runs: list[Run] = []
    async with ChildProcessPeer() as peer:
        for _ in range(args.repeats):
            for label, tree in zip(args.labels, trees, strict=True):
                runs.append(await run_tree(peer, label, tree, args.processes, args.calls, args.duration))
                print(f"<!-- {label}: PSS {mib(runs[-1].pss)} MiB -->", file=sys.stderr, flush=True)
    print(markdown(args, runs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tree_a", type=lambda s: Path(s).resolve())
    parser.add_argument("tree_b", type=lambda s: Path(s).resolve())
    parser.add_argument("--labels", type=lambda s: s.split(","), default=["a", "b"])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=2)
    _run(main(parser.parse_args()))
