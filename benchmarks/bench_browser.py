"""Response latency heard in the browser: the console's softphone in phone vs wideband mode, local backend.

One gateway process (`gateway serve`, the local backend, no greeting) and one headless Chromium (Debian's, via
Playwright) whose microphone is a WAV made with espeak-ng: a second of silence, "What time is it?", then four
seconds of silence while the agent answers, looped. Calls alternate between the two line qualities (phone,
wideband, phone, ...), so a drifting machine moves both alike; each call is held for `--turns` answered
turns, then hung up.

Per turn the page measures, in its own audio clock, the caller's last loud microphone sample to the agent's
first sample played (plus the audio output's latency): the response as a person at the browser hears it.
The gateway's own figure for the same turn (the caller's last loud frame at the gateway to the agent's first
audio sent) and the page's path figures (microphone to gateway, gateway to speaker) come with it.

    python benchmarks/bench_browser.py [--rounds 4] [--turns 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: processes, the browser

from tests.support.softphone import caller_wav, chromium, gateway_serving

PASSWORD = "benchmark console password"
CALLER = [(1.0, "What time is it?"), (4.0, "")]
QUALITIES = ("phone", "wideband")
ROWS = """() => [...document.querySelectorAll('#turns tr')]
    .map(row => [...row.cells].map(cell => cell.dataset.ms))"""
HEARD = """(turns) => [...document.querySelectorAll('#turns tr')]
    .filter(row => row.cells[2].dataset.ms).length >= turns"""
Turns = list[tuple[float, float]]  # each turn's (gateway, heard in the page) response latency, ms
PATH = """() => ['#mic-to-gateway', '#gateway-to-speaker', '#rtt']
    .map(id => Number(document.querySelector(id).dataset.ms))"""


def one_call(browser: Any, url: str, quality: str, turns: int) -> tuple[Turns, list[float]]:
    """A call of `turns` answered turns: each turn's (gateway, heard) latency in ms, and the path figures."""
    context = browser.new_context(base_url=url)
    try:
        context.request.post("/console/login", form={"password": PASSWORD}, max_redirects=0)
        page = context.new_page()
        page.goto("/console/phone")
        page.check(f"input[name=quality][value={quality}]")
        page.get_by_role("button", name="Call", exact=True).click()
        page.wait_for_selector("#phone[data-state=in-call]", timeout=15000)
        page.wait_for_function(HEARD, arg=turns, timeout=20000 * turns)
        rows = [(float(g), float(h)) for _, g, h in page.evaluate(ROWS) if g and h][:turns]
        path = page.evaluate(PATH)
        page.get_by_role("button", name="Hang up", exact=True).click()
        page.wait_for_selector("#phone[data-state=ended]", timeout=10000)
        return rows, path
    finally:
        context.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4, help="calls per quality (alternating)")
    parser.add_argument("--turns", type=int, default=3, help="answered turns per call")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    turns: dict[str, Turns] = {q: [] for q in QUALITIES}
    paths: dict[str, list[list[float]]] = {q: [] for q in QUALITIES}
    paired: list[float] = []  # per round: median heard latency, wideband / phone
    with (
        gateway_serving(tmp, CONSOLE_PASSWORD=PASSWORD, AGENT_GREETING="none", LOG_LEVEL="warning") as url,
        chromium(caller_wav(tmp / "caller.wav", CALLER)) as browser,
    ):
        one_call(browser, url, "phone", 1)  # warm-up: the page's modules, the backend's models
        for round_ in range(args.rounds):
            medians = {}
            for quality in QUALITIES if round_ % 2 == 0 else reversed(QUALITIES):
                rows, path = one_call(browser, url, quality, args.turns)
                turns[quality] += rows
                paths[quality].append(path)
                medians[quality] = statistics.median(h for _, h in rows)
                heard = [round(h) for _, h in rows]
                print(f"round {round_ + 1} {quality:8s} heard {heard} ms", flush=True)
            paired.append(medians["wideband"] / medians["phone"])

    print(f"\n{args.rounds} calls per quality, {args.turns} turns each, alternating\n")
    print(
        "| line quality | heard in the page p50 | p90 | gateway p50 | mic -> gateway | gateway -> speaker |"
    )
    print("|---|---|---|---|---|---|")
    for quality in QUALITIES:
        gateway = [g for g, _ in turns[quality]]
        heard = [h for _, h in turns[quality]]
        mic = statistics.median(p[0] for p in paths[quality])
        speaker = statistics.median(p[1] for p in paths[quality])
        print(
            f"| {quality} | {statistics.median(heard):.0f} ms | {percentile(heard, 0.9):.0f} ms | "
            f"{statistics.median(gateway):.0f} ms | {mic:.0f} ms | {speaker:.0f} ms |"
        )
    print(
        f"\nwideband / phone, heard latency, per round (paired medians): "
        f"{', '.join(f'{x:.2f}' for x in paired)}; median {statistics.median(paired):.2f}"
    )


if __name__ == "__main__":
    main()
