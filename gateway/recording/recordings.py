"""What every call's recording shares: the mode per agent, the storage, the notice, stores in flight.

`RECORDING` (per agent too: `recording` in AGENTS_FILE) says who records a call:
- `gateway`: this service, in stereo, as the caller heard it (see gateway.recording.recorder);
- `twilio`: Twilio, from `<Start><Recording channels="dual">` in the webhook's answer; its recording status
  callback (`POST /twilio/recording`, signed) puts the recording's URL and duration in the call's record;
- `off`.

`RECORDING_NOTICE` is heard before the agent speaks on every recorded call: a text the agent says first (put
in front of its greeting), or a pre-rendered prompt (a WAV file) played on the line before the agent's
first words. A call moved here by a drain was told already, and is not told again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import re
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from starlette.responses import JSONResponse, Response

from gateway.audio import resample_block
from gateway.call.line import Line, Started
from gateway.call.summary import CallSummary
from gateway.logs import register_secret
from gateway.metrics import METRICS
from gateway.recording.notice import is_prompt_file, read_prompt
from gateway.recording.recorder import Recorder, RecordingLine, now_ms
from gateway.recording.retention import Retention
from gateway.recording.storage import Storage, open_storage, part_key, safe_call_sid

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.records import Records

log = structlog.get_logger("gateway.recording")

STORE_TIMEOUT_S = 30.0  # at shutdown, for recordings still being stored (an upload under way)
RECORDING_CALLBACK_PATH = "/twilio/recording"
_PART = re.compile(r"^[1-9][0-9]{0,3}$")


class Recordings:
    """Every call's recording on this instance."""

    def __init__(self, settings: Settings, records: Records) -> None:
        self.mode = settings.recording
        self.url = settings.recordings_url
        self.notice = settings.recording_notice
        self.retention_days = settings.recording_retention_days
        self.records = records
        self.storage: Storage | None = None  # opened at start-up, used or not: an agent may record
        self.prompt: tuple[bytes, int] | None = None  # RECORDING_NOTICE as a WAV prompt
        self._storing: set[asyncio.Task[None]] = set()
        self.retention: Retention | None = None

    def used(self, settings: Settings) -> bool:
        """Does anyone record: RECORDING, or an agent of AGENTS_FILE?"""
        agents = settings.agent_book
        every = (agents.default, *agents.by_number.values(), *agents.by_name.values())
        return self.mode != "off" or any(a.recording not in ("", "off") for a in every)

    async def start(self, stack: contextlib.AsyncExitStack, settings: Settings) -> None:
        register_secret(os.environ.get("AWS_SECRET_ACCESS_KEY"))  # boto3 reads it; no log line shows it
        register_secret(os.environ.get("AWS_SESSION_TOKEN"))
        self.storage = await asyncio.to_thread(open_storage, self.url)
        if is_prompt_file(self.notice):
            self.prompt = await asyncio.to_thread(read_prompt, self.notice)
        stack.push_async_callback(self.close)
        if self.retention_days:
            self.retention = Retention(self.storage, self.records, self.retention_days)
            self.retention.start()
            stack.push_async_callback(self.retention.stop)
        if self.used(settings):
            log.info(
                "recordings",
                mode=self.mode,
                stored=self.storage.where,
                notice="prompt" if self.prompt else ("text" if self.notice else "none"),
                retention_days=self.retention_days,  # 0: kept until deleted by hand
            )

    def mode_for(self, recording: str) -> str:
        """The agent's own mode ("" when its file does not say), else RECORDING."""
        return recording or self.mode

    def record(self, line: Line, start: Started, started_at: datetime) -> RecordingLine:
        """The line of a call this instance records: what crosses it goes to a new recording part."""
        assert self.storage is not None
        sid = start.call_sid
        if not safe_call_sid(sid):  # never a path: `GET /calls/{sid}/recording` finds none for it either
            sid = re.sub(r"[^A-Za-z0-9_-]", "_", sid)[:64] or "unknown"
        key = part_key(sid, started_at)
        recorder = Recorder(key, self.storage.url(key), self.storage.scratch(key), line.audio, now_ms())
        log.info("recording_started", recording=key)
        return RecordingLine(line, recorder)

    def notice_text(self) -> str:
        return "" if self.prompt is not None else self.notice

    def notice_audio(self, rate: int) -> bytes:
        """The pre-rendered notice at the line's rate (b"" when the notice is a text, or none)."""
        if self.prompt is None:
            return b""
        pcm, prompt_rate = self.prompt
        return pcm if prompt_rate == rate else resample_block(pcm, prompt_rate, rate)

    def call_ended(self, line: Line, summary: CallSummary) -> CallSummary:
        """The call's line has ended: its recording (if this instance made one) is finished and stored in the
        background; the record says where it will be and how long it is."""
        if not isinstance(line, RecordingLine):
            return summary
        recording, closed = line.finish()
        task = asyncio.get_running_loop().create_task(self._store(line.recorder, closed))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)
        return dataclasses.replace(summary, recording_url=recording.url, recording_s=recording.seconds)

    async def _store(self, recorder: Recorder, closed: concurrent.futures.Future[None]) -> None:
        assert self.storage is not None
        try:
            await asyncio.wrap_future(closed)
            if recorder.failed is not None:
                raise recorder.failed
            await self.storage.store(self.storage.scratch(recorder.key), recorder.key)
            log.info("recording_stored", recording=recorder.key, url=recorder.url)
            METRICS.recordings.labels(result="stored").inc()
        except Exception as exc:
            log.error("recording_not_stored", recording=recorder.key, error=str(exc) or type(exc).__name__)
            METRICS.recordings.labels(result="failed").inc()

    async def close(self) -> None:
        """At shutdown: recordings still being encoded or uploaded get `STORE_TIMEOUT_S` to finish."""
        if self._storing:
            _done, pending = await asyncio.wait(set(self._storing), timeout=STORE_TIMEOUT_S)
            for task in pending:
                log.error("recording_not_stored", reason="shutdown")
                task.cancel()

    async def stored(self) -> None:
        """Wait until every recording finished so far is stored (tests, the benchmark)."""
        while self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)

    async def response(self, call_sid: str, part: str | None) -> Response:
        """`GET /calls/{sid}/recording[?part=N]`: the recording in its stored format (FLAC)."""
        if part is not None and not _PART.match(part):
            return JSONResponse({"error": "part must be a number from 1"}, status_code=400)
        if self.storage is None or not safe_call_sid(call_sid):
            return JSONResponse({"error": "no recording of this call"}, status_code=404)
        try:
            keys = await self.storage.parts(call_sid)
            index = int(part or "1")
            if not keys:
                return JSONResponse({"error": "no recording of this call"}, status_code=404)
            if index > len(keys):
                message = f"this call's recording has {len(keys)} part(s)"
                return JSONResponse({"error": message}, status_code=404)
            response = await self.storage.response(keys[index - 1])
        except Exception as exc:  # the bucket (or the disk) cannot be read: say so, not a 500
            log.error("recording_unavailable", where=self.storage.where, error=str(exc) or type(exc).__name__)
            return JSONResponse(
                {"error": "the recordings' storage cannot be read now"},
                status_code=503,
                headers={"Retry-After": "10"},
            )
        response.headers["X-Recording-Parts"] = str(len(keys))
        return response
