"""Tunables of the local Live backend (defaults imitate the real service where it matters)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass
class LocalLiveOptions:
    """Knobs of the local backend: connection lifetime and faults to inject, pacing of reply audio, limits,
    and the worker pool."""

    goaway_after_s: float | None = None  # send goAway this long after a connection opens (None: never)
    goaway_time_left_s: float = 5.0  # ...and close it (1011) this much later
    drop_rate_per_s: float = 0.0  # abrupt connection drops (no close frame), mean rate per connection-second
    setup_delay_s: float = 0.0  # artificial delay before setupComplete (benchmarks of connect latency)
    audio_lead_s: float = 1.0  # how far ahead of real time reply audio is sent (the service runs ahead)
    chunk_ms: int = 80  # reply audio per serverContent message
    speaking_rate_wpm: int = 165
    handle_ttl_s: float = 7200.0  # resumption handles live about 2 hours, as on the service
    resume_grace_s: float = 1.0  # a resume waits this long for the old connection to finish closing
    max_frame_bytes: int = 4 * 1024 * 1024  # bigger frames are closed with 1009 by websockets
    setup_timeout_s: float = 30.0  # no setup by then: close
    tool_response_timeout_s: float = 60.0  # a turn waiting on a toolResponse completes anyway after this
    recognizers_preload: int = 1  # PocketSphinx decoders loaded at start (first ~2 s and 75 MB, then 26 MB)
    recognizers_limit: int = 4  # at most this many utterances are decoded at once; others queue
    worker_threads: int = 6  # threads for VAD, recognition and synthesis
    ssl_context: ssl.SSLContext | None = None  # serve wss:// (the SDK insists on TLS when given an API key)
    record_connections: bool = False  # keep a ConnectionRecord per connection in server.connections (tests)
    clock: Callable[[], datetime] = datetime.now  # the time the agent tells (tests fix it)
    # The Vertex path takes any `Authorization: Bearer <token>`, or only the tokens this accepts (a test's
    # token endpoint issued them).
    bearer_check: Callable[[str], bool] | None = None
