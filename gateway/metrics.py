"""Prometheus metrics. Labels stay bounded: no call ids, numbers or free text as label values."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from gateway.audio import audioop

# Seconds. Live set-up is a TLS handshake plus a model load (hundreds of ms to seconds); a voice reply
# is judged in tenths of a second, so the latency buckets are finer below two seconds.
CONNECT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 15.0)
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
# Live reports these modalities; anything else is counted as "other" so a new value cannot grow the series.
MODALITIES = frozenset({"text", "audio", "image", "video", "document"})


@dataclass(frozen=True)
class Metrics:
    """The service's Prometheus metrics, one object (`METRICS`) for the process."""

    active_calls: Gauge
    calls: Counter
    barge_ins: Counter
    live_switches: Counter
    live_connect: Histogram
    first_agent_audio: Histogram
    response_latency: Histogram
    frames_dropped: Counter
    tokens: Counter
    records_dropped: Counter
    records_waiting: Gauge
    records_store_up: Gauge
    draining: Gauge
    calls_moved: Counter
    outbound_calls: Counter
    answered_by: Counter
    barge_in_guarded: Counter
    stalls: Counter
    stall_recoveries: Counter
    prewarm: Counter
    cost: Counter
    recordings: Counter

    def count_tokens(self, by_modality: dict[str, int]) -> None:
        """Keys as `gateway.live.protocol.Usage` has them: `prompt_audio`, `response_text`, ..."""
        for key, count in by_modality.items():
            direction, _, modality = key.partition("_")
            self.tokens.labels(
                direction=direction if direction in ("prompt", "response") else "other",
                modality=modality if modality in MODALITIES else "other",
            ).inc(count)


METRICS = Metrics(
    # multiprocess_mode: how processes' values add up under WEB_CONCURRENCY (ignored in one process).
    active_calls=Gauge("gateway_active_calls", "Calls in progress", multiprocess_mode="livesum"),
    calls=Counter("gateway_calls", "Calls ended, by outcome", ["outcome"]),
    barge_ins=Counter(
        "gateway_barge_ins",
        "Times the caller talked over the agent and the line was cleared, by who detected it: the gateway's "
        "own detector (local) or Live (server)",
        ["source"],
    ),
    live_switches=Counter("gateway_live_switches", "Live connection switches, by reason", ["reason"]),
    live_connect=Histogram(
        "gateway_live_connect_seconds",
        "Opening a Live connection: WebSocket handshake and setup until setupComplete",
        ["resumed"],
        buckets=CONNECT_BUCKETS,
    ),
    first_agent_audio=Histogram(
        "gateway_first_agent_audio_seconds",
        "From the media stream's opening to the first agent audio sent to the caller",
        buckets=CONNECT_BUCKETS,
    ),
    response_latency=Histogram(
        "gateway_response_latency_seconds",
        "From the end of the caller's speech to the first agent audio of the answer",
        buckets=LATENCY_BUCKETS,
    ),
    frames_dropped=Counter(
        "gateway_frames_dropped",
        "Audio frames not delivered: caller audio past the hold limit during a Live switch (caller), "
        "agent audio of an interrupted turn (agent)",
        ["direction"],
    ),
    tokens=Counter(
        "gateway_tokens", "Live tokens used, by direction and modality", ["direction", "modality"]
    ),
    records_dropped=Counter(
        "gateway_records_dropped",
        "Call records or transcript lines not stored: no room left to keep them while the database was away "
        "(queue_full, spool_full, shutdown), refused by a database that answers (write_failed), or not "
        "readable in the spool (unreadable)",
        ["reason"],
    ),
    records_waiting=Gauge(
        "gateway_records_waiting",
        "Call records and transcript lines waiting for the database (memory and disk)",
        multiprocess_mode="livesum",
    ),
    records_store_up=Gauge(
        "gateway_records_store_up",
        "1 while the records database answers; 0 while it is down",
        multiprocess_mode="livemin",
    ),
    draining=Gauge(
        "gateway_draining", "1 while this instance drains (takes no new calls)", multiprocess_mode="livemax"
    ),
    calls_moved=Counter(
        "gateway_calls_moved", "Calls moved to another instance at shutdown, by result", ["result"]
    ),
    outbound_calls=Counter(
        "gateway_outbound_calls", "POST /calls: placed, or the HTTP status it was refused with", ["result"]
    ),
    answered_by=Counter(
        "gateway_answered_by", "Outbound calls by who answered (person, machine, fax)", ["verdict"]
    ),
    barge_in_guarded=Counter(
        "gateway_barge_in_guarded",
        "Sounds on the caller's side that a guard kept from counting as speech: the agent's echo, or what "
        "the speech model did not confirm (music, noise)",
    ),
    stalls=Counter(
        "gateway_stalls",
        "Steps the stall watchdog took when the agent left the caller's turn unanswered: nudge, switch "
        "(a new Live connection), give_up (apology and hang-up)",
        ["step"],
    ),
    stall_recoveries=Counter(
        "gateway_stall_recoveries", "Stalls after which the agent answered (after a nudge or a switch)"
    ),
    prewarm=Counter(
        "gateway_prewarm",
        "Pre-warmed Live sessions by what became of them: taken by their call's stream, or discarded "
        "(no_stream: the stream never came here, e.g. it went to another process or instance)",
        ["result"],
    ),
    cost=Counter(
        "gateway_cost_usd",
        "Estimated cost of the calls' Live tokens, in US dollars (LIVE_PRICES), counted when each call ends",
    ),
    recordings=Counter(
        "gateway_recordings",
        "Recording parts (RECORDING=gateway): stored, not stored (failed), deleted by retention",
        ["result"],
    ),
)


class SpeechEnd:
    """When the caller last made a sound, from the line's PCM frames themselves (Live's VAD is not visible
    to us): the response latency runs from there to the agent's first audio. Under 1 us per 20 ms frame."""

    THRESHOLD = 1000  # peak of PCM16; line noise and comfort noise stay well below, speech well above

    def __init__(self) -> None:
        self.last_voice: float | None = None

    def frame(self, pcm: bytes) -> bool:
        """True when the frame is loud enough to be the caller's voice."""
        if audioop.max(pcm, 2) > self.THRESHOLD:
            self.last_voice = time.monotonic()
            return True
        return False

    def answered(self) -> float | None:
        """The agent started answering: observe the latency once per caller utterance, and return it."""
        if self.last_voice is None:
            return None
        latency = time.monotonic() - self.last_voice
        METRICS.response_latency.observe(latency)
        self.last_voice = None
        return latency
