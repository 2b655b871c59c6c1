"""Prometheus metrics. Labels stay bounded: no call ids, numbers or free text as label values."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge


@dataclass(frozen=True)
class Metrics:
    active_calls: Gauge
    calls: Counter
    barge_ins: Counter
    live_reconnects: Counter


METRICS = Metrics(
    active_calls=Gauge("gateway_active_calls", "Calls in progress"),
    calls=Counter("gateway_calls", "Calls ended, by outcome", ["outcome"]),
    barge_ins=Counter("gateway_barge_ins", "Times the caller talked over the agent"),
    live_reconnects=Counter("gateway_live_reconnects", "Live connection switches, by reason", ["reason"]),
)
