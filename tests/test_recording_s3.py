"""Recordings in S3-compatible object storage (RECORDINGS_URL=s3://bucket/prefix), against a local
S3-compatible server (moto's, started here): stored at the end of each part, one object per part of a call
moved by a drain, served by a presigned link that answers Range requests, deleted by retention."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import boto3
import httpx
import numpy as np
import pytest
import soundfile

from gateway.app import create_app
from gateway.call.line import CallerAudio, Ended
from gateway.call.outcome import Outcome
from gateway.call.summary import CallSummary
from gateway.recording.recorder import RecordingLine
from gateway.recording.retention import Retention
from gateway.server import running_gateway
from tests.support.call_doubles import STARTED, MemoryLine
from tests.support.gateway import settings_for
from tests.support.processes import free_port

pytestmark = pytest.mark.e2e

BUCKET = "gateway-recordings"
TOKEN = "api"


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    """A local S3-compatible server for this module's tests."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.TransportError):
                httpx.get(url + "/moto-api/", timeout=1.0)
                break
            assert server.poll() is None, "moto's server exited"
            time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def s3(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3's usual environment pointed at the local server, and an empty bucket."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    return s3_url


def summary(started_at: datetime) -> CallSummary:
    return CallSummary(STARTED.call_sid, "", "", "", "", "m", started_at, started_at, Outcome.MOVED)


async def record_part(gateway, started_at: datetime, seconds: float, level: int) -> RecordingLine:
    """One instance's part of a call: `seconds` of caller audio at `level`, and an agent reply."""
    memory = MemoryLine()
    line = gateway.recordings.record(memory, STARTED, started_at)
    memory.put(*[CallerAudio(np.full(160, level, "<i2").tobytes()) for _ in range(int(seconds * 50))])
    memory.put(Ended("stop"))
    await line.play(np.full(800, level, "<i2").tobytes())
    while not isinstance(await line.receive(), Ended):
        pass
    gateway.recordings.call_ended(line, summary(started_at))
    await gateway.recordings.stored()
    return line


@contextlib.asynccontextmanager
async def gateway_on(s3_url: str) -> AsyncIterator[tuple[str, object]]:
    settings = settings_for(
        "ws://127.0.0.1:9/unused",
        RECORDING="gateway",
        RECORDINGS_URL=f"s3://{BUCKET}/calls",
        CALLS_API_TOKEN=TOKEN,
    )
    app = create_app(settings)
    async with running_gateway(settings, app=app) as url:
        yield url, app.state.gateway


async def test_a_moved_calls_parts_are_stored_in_the_bucket_and_served_by_a_presigned_link(s3):
    t0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    async with gateway_on(s3) as (url, gateway):
        await record_part(gateway, t0, 2.0, 1000)  # the instance the call started on
        await record_part(gateway, t0 + timedelta(seconds=30), 1.0, 2000)  # the one a drain moved it to
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert keys == [
            f"calls/{STARTED.call_sid}/20261130T120000000000Z.flac",
            f"calls/{STARTED.call_sid}/20261130T120030000000Z.flac",
        ]
        async with httpx.AsyncClient(base_url=url) as client:
            path = f"/calls/{STARTED.call_sid}/recording"
            assert (await client.get(path)).status_code == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            second = await client.get(path + "?part=2", headers=auth)
            assert second.status_code == 307 and second.headers["x-recording-parts"] == "2"
            link = second.headers["location"]
            assert link.startswith(s3) and "Signature" in link  # presigned, short-lived
            whole = await client.get(link)
            ranged = await client.get(link, headers={"Range": "bytes=10-59"})
            first = await client.get((await client.get(path, headers=auth)).headers["location"])
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/flac"
    assert ranged.status_code == 206 and ranged.content == whole.content[10:60]
    for response, seconds, level in ((first, 2.0, 1000), (whole, 1.0, 2000)):
        stereo, rate = soundfile.read(io.BytesIO(response.content), dtype="int16")
        assert stereo.shape == (int(seconds * rate), 2)
        assert (stereo[:, 0] == level).all()  # the caller's side, left
        agent = np.flatnonzero(stereo[:, 1])  # the agent's 100 ms reply, right, played when it was queued
        assert agent.size == 800 and agent[0] < 80 and (stereo[agent, 1] == level).all()


class StubRecords:
    def __init__(self) -> None:
        self.cleared: list[str] = []

    async def clear_recording(self, call_sid: str) -> None:
        self.cleared.append(call_sid)


async def test_retention_deletes_old_recordings_from_the_bucket(s3):
    t0 = datetime.now(UTC)
    async with gateway_on(s3) as (_url, gateway):
        await record_part(gateway, t0, 0.5, 500)
        storage = gateway.recordings.storage
        records = StubRecords()
        today = Retention(storage, records, days=7)  # type: ignore[arg-type]
        assert await today.sweep() == []
        week_later = t0 + timedelta(days=7, minutes=1)
        in_a_week = Retention(storage, records, days=7, clock=lambda: week_later)  # type: ignore[arg-type]
        deleted = await in_a_week.sweep()
        assert deleted == [f"{STARTED.call_sid}/{t0:%Y%m%dT%H%M%S%fZ}.flac"]
        assert records.cleared == [STARTED.call_sid]
        assert await storage.parts(STARTED.call_sid) == []


async def test_a_store_that_cannot_be_read_is_a_503_not_a_crash(s3):
    settings = settings_for(
        "ws://127.0.0.1:9/unused", RECORDINGS_URL="s3://no-such-bucket/calls", CALLS_API_TOKEN=TOKEN
    )
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        response = await client.get(f"/calls/{STARTED.call_sid}/recording", headers=auth)
    assert response.status_code == 503 and response.headers["retry-after"] == "10"
