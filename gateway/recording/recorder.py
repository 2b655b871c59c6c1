"""One call's recording as it happens: the line's events placed on a `Timeline`, encoded off the loop.

`RecordingLine` stands between the `Call` and its line and tells the recorder what crosses it: caller
frames as they arrive, agent audio as it is queued, and each `clear`. That seam is where "what the caller
heard" is decided (the carrier plays what was queued, in order, until a clear), so the Call itself does not
change: with recording off it talks to its line directly.

The stereo frames the timeline hands over are batched (a second at a time) and written as FLAC by one
encoder thread per process, in order; nothing of the call is held in memory beyond the carrier's queue and
the batch being filled. FLAC, not Opus: about 0.2 ms of CPU per call-second against 9 ms for libopus at
phone rates (BENCHMARKS.md, "Recordings"), lossless, and every browser's <audio> plays and seeks it.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import structlog

from gateway.audio import Resampler
from gateway.call.line import CallerAudio, Ended, Line, LineAudio, LineEvent
from gateway.recording.timeline import Timeline

log = structlog.get_logger("gateway.recording")

BATCH_S = 1.0  # stereo audio handed to the encoder thread at a time
# How often the timeline is asked for what has become final: each ask costs a few numpy calls, so not on
# every 20 ms frame. What is handed over is final either way: this only says how long it waits in memory.
TAKE_EVERY_MS = 200.0
# One thread per process encodes every call's recording, in the order each call's batches were given.
_ENCODER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="recording-encoder")


class FlacWriter:
    """A FLAC file written a batch at a time (used on the encoder thread only)."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path, self.rate = path, rate
        self._file: soundfile.SoundFile | None = None

    def _open(self) -> soundfile.SoundFile:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = soundfile.SoundFile(
                self.path, "w", samplerate=self.rate, channels=2, format="FLAC", subtype="PCM_16"
            )
        return self._file

    def write(self, stereo: bytes) -> None:
        self._open().write(np.frombuffer(stereo, dtype="<i2").reshape(-1, 2))

    def close(self) -> None:
        self._open().close()  # a call with no audio still leaves a valid (empty) file


@dataclass(frozen=True)
class Recording:
    """What a call's record says about its recording part."""

    key: str
    url: str
    seconds: float


class Recorder:
    """The recording of one call's part on this instance. Fed on the event loop (microseconds per event);
    the encoding happens on the encoder thread."""

    def __init__(self, key: str, url: str, scratch: Path, audio: LineAudio, start_ms: float) -> None:
        self.key, self.url = key, url
        self.rate = max(audio.in_rate, audio.out_rate)
        self._timeline = Timeline(self.rate, start_ms)
        # A line whose two directions have different rates: the slower side is brought up to the faster.
        self._caller_up = Resampler(audio.in_rate, self.rate) if audio.in_rate != self.rate else None
        self._agent_up = Resampler(audio.out_rate, self.rate) if audio.out_rate != self.rate else None
        self._writer = FlacWriter(scratch, self.rate)
        self._batch = bytearray()
        self._batch_bytes = int(BATCH_S * self.rate) * 4
        self._written: concurrent.futures.Future[None] | None = None  # the latest batch given to the thread
        self._take_at_ms = start_ms + TAKE_EVERY_MS
        self.failed: BaseException | None = None

    def caller(self, pcm: bytes, now_ms: float) -> None:
        self._timeline.caller(pcm if self._caller_up is None else self._caller_up.process(pcm), now_ms)
        if now_ms >= self._take_at_ms:
            self._take_at_ms = now_ms + TAKE_EVERY_MS
            self._collect(self._timeline.take(now_ms))

    def agent(self, pcm: bytes, now_ms: float) -> None:
        self._timeline.agent(pcm if self._agent_up is None else self._agent_up.process(pcm), now_ms)

    def clear(self, now_ms: float) -> None:
        self._timeline.clear(now_ms)
        if self._agent_up is not None:
            self._agent_up.reset()

    def _collect(self, stereo: bytes) -> None:
        self._batch += stereo
        if len(self._batch) >= self._batch_bytes:
            self._encode(bytes(self._batch))
            self._batch.clear()

    def _encode(self, stereo: bytes) -> None:
        self._written = _ENCODER.submit(self._writer.write, stereo)
        self._written.add_done_callback(self._check)

    def _check(self, done: concurrent.futures.Future[None]) -> None:
        if (exc := done.exception()) is not None and self.failed is None:
            self.failed = exc

    def finish(self, now_ms: float) -> tuple[Recording, concurrent.futures.Future[None]]:
        """The line has ended: the rest goes to the encoder, then the file is closed. Returns what the record
        says (known at once) and the future of the closed file."""
        self._batch += self._timeline.finish(now_ms)
        if self._batch:
            self._encode(bytes(self._batch))
            self._batch.clear()
        closed = _ENCODER.submit(self._writer.close)
        return Recording(self.key, self.url, round(self._timeline.duration_ms / 1000, 3)), closed

    @property
    def memory_bytes(self) -> int:
        """What the recording holds of the call right now (the carrier's queue and the batch): for the
        benchmark's memory figure."""
        return len(self._batch) + int(self._timeline.agent_queued_ms * self.rate / 1000) * 2


def now_ms() -> float:
    return time.monotonic() * 1000


class RecordingLine:
    """A line that tells a `Recorder` what crosses it; everything else is the line's own."""

    def __init__(self, line: Line, recorder: Recorder, clock: Callable[[], float] = now_ms) -> None:
        self.line = line
        self.recorder = recorder
        self.audio = line.audio
        self._clock = clock
        self.ended_ms: float | None = None  # when the caller's side ended: nothing was heard after it

    @property
    def bad_messages(self) -> int:
        return self.line.bad_messages

    @bad_messages.setter
    def bad_messages(self, count: int) -> None:
        self.line.bad_messages = count

    async def receive(self) -> LineEvent:
        event = await self.line.receive()
        if isinstance(event, CallerAudio):
            self.recorder.caller(event.pcm, self._clock())
        elif isinstance(event, Ended) and self.ended_ms is None:
            self.ended_ms = self._clock()
        return event

    def finish(self) -> tuple[Recording, concurrent.futures.Future[None]]:
        """The call is over: its recording ends where the line did (or now, if we closed it)."""
        return self.recorder.finish(self.ended_ms if self.ended_ms is not None else self._clock())

    async def play(self, pcm: bytes) -> None:
        self.recorder.agent(pcm, self._clock())
        await self.line.play(pcm)

    async def clear(self) -> None:
        self.recorder.clear(self._clock())
        await self.line.clear()

    async def mark(self, name: str) -> None:
        await self.line.mark(name)

    async def transfer(self, target: str) -> bool:
        return await self.line.transfer(target)

    async def close(self, refusal: str | None = None) -> None:
        await self.line.close(refusal)

    def __getattr__(self, name: str) -> Any:  # what a carrier's line offers besides the `Line` protocol
        return getattr(self.line, name)
