"""What transparent resumption's bookkeeping costs on the caller's per-frame path (Vertex AI).

Per 20 ms caller frame the Call keeps the frame for replay (`Resumption.keep`); with transparent resumption it
also notes which client message the frame went out in (`frame_sent`), and each resumption handle then drops
the frames it covers (`consumed`). Measured here without sockets, interleaved in rounds (the machine's speed
drifts, and other work shares its 2 cores): the Developer API's bookkeeping (keep; a handle clears the buffer)
against Vertex's (keep + frame_sent; a handle drops exactly what it covers), same frames, same handles.
Run: python benchmarks/bench_resumption.py
"""

from __future__ import annotations

import statistics
import time

from machine import describe

from gateway.call.resumption import Resumption

FRAME = bytes(640)  # 20 ms at 16 kHz
FRAMES_PER_ROUND = 50_000
HANDLE_EVERY = 250  # a handle every 5 s of caller audio (the service sends one per turn)
ROUNDS = 7


def developer_round() -> float:
    r = Resumption()
    t0 = time.perf_counter_ns()
    for i in range(1, FRAMES_PER_ROUND + 1):
        r.keep(FRAME)
        if i % HANDLE_EVERY == 0:
            r.handle_update(f"h{i}", True, 0.0)
    return (time.perf_counter_ns() - t0) / FRAMES_PER_ROUND


def vertex_round() -> float:
    r = Resumption(transparent=True)
    t0 = time.perf_counter_ns()
    for i in range(1, FRAMES_PER_ROUND + 1):
        r.keep(FRAME)
        r.frame_sent(i, r.last_kept_seq)
        if i % HANDLE_EVERY == 0:
            r.handle_update(f"h{i}", True, 0.0, consumed_index=i - 15)  # 300 ms not yet consumed
    return (time.perf_counter_ns() - t0) / FRAMES_PER_ROUND


def main() -> None:
    print(f"Machine: {describe()}")
    developer, vertex, ratios = [], [], []
    for _ in range(ROUNDS):  # interleaved: each ratio is of two runs a few milliseconds apart
        d, v = developer_round(), vertex_round()
        developer.append(d)
        vertex.append(v)
        ratios.append(v / d)
    print(f"{FRAMES_PER_ROUND} frames a round, a handle every {HANDLE_EVERY} frames, {ROUNDS} rounds")
    print(f"developer (keep):              median {statistics.median(developer):.0f} ns per frame")
    print(f"vertex (keep + frame_sent):    median {statistics.median(vertex):.0f} ns per frame")
    spread = f"min {min(ratios):.2f}, max {max(ratios):.2f}"
    print(f"ratio vertex / developer:      median {statistics.median(ratios):.2f} ({spread})")


if __name__ == "__main__":
    main()
