"""Recordings end to end: the caller simulator, a real gateway recording the call (RECORDING=gateway) and
the real local Live backend; the recording is fetched through `GET /calls/{sid}/recording` and compared with
what the simulated caller sent and heard."""

from __future__ import annotations

import io
from datetime import datetime

import httpx
import numpy as np
import pytest
import soundfile

from gateway.call.transcript import CUT
from gateway.devtools import turn_corpus as tc
from gateway.devtools.simulator import CallScript, place_call
from gateway.local_live import LocalLiveServer
from gateway.server import running_gateway
from tests.support.gateway import logged, settings_for
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

TOKEN = "recordings-test-token"
NOTICE = "This call is recorded for quality and training, and kept for thirty days at most."
FRAME = 160  # 20 ms at 8 kHz


def loud(pcm: np.ndarray, threshold_dbfs: float = -40.0) -> np.ndarray:
    """Per 20 ms frame: is anything said there?"""
    frames = pcm[: pcm.size // FRAME * FRAME].astype(float).reshape(-1, FRAME)
    rms = np.sqrt((frames**2).mean(axis=1)) + 1e-9
    return 20 * np.log10(rms / 32768) > threshold_dbfs


def agreement(a: np.ndarray, b: np.ndarray, shift_frames: int = 5) -> float:
    """The share of frames where both say the same (someone speaking or not), allowing a few frames of
    offset between the two timelines."""
    n = min(a.size, b.size)
    best = 0.0
    for shift in range(-shift_frames, shift_frames + 1):
        x, y = a[max(0, shift) : n + min(0, shift)], b[max(0, -shift) : n - max(0, shift)]
        best = max(best, float((x == y).mean()))
    return best


async def test_the_recording_is_the_call_as_the_caller_heard_it_barge_in_cut_included(tmp_path, capsys):
    transcripts: list[tuple[str, str]] = []
    async with LocalLiveServer() as live:
        settings = settings_for(
            live.url(),
            RECORDING="gateway",
            RECORDINGS_URL=f"file://{tmp_path}",
            RECORDING_NOTICE=NOTICE,
            CALLS_API_TOKEN=TOKEN,
        )
        async with running_gateway(
            settings, on_transcript=lambda _s, r, t: transcripts.append((r, t))
        ) as url:
            # The notice is several seconds long: the caller talks over it.
            audio = tc.phone_line(tc.line_noise(5.0, seed=3))
            said = tc.phone_line(tc.voice("Stop, stop, I already know that.", agent=False, level_dbfs=-20))
            track = np.frombuffer(audio, "<i2").copy()
            start = int(2.5 * 8000)
            track[start : start + len(said) // 2] += np.frombuffer(said, "<i2")[: track.size - start]
            result = await place_call(url, CallScript(track.tobytes(), trailing_silence_s=1.0))
            await wait_for(lambda: list(tmp_path.glob("*/*.flac")))  # stored once the call has ended
            async with httpx.AsyncClient(base_url=url) as client:
                path = f"/calls/{result.call_sid}/recording"
                refused = await client.get(path)
                assert refused.status_code == 401  # no bearer token: no recording
                auth = {"Authorization": f"Bearer {TOKEN}"}
                record = (await client.get(f"/calls/{result.call_sid}", headers=auth)).json()
                response = await client.get(path, headers=auth)
                ranged = await client.get(path, headers={**auth, "Range": "bytes=100-1099"})

    # The agent said the notice first, in its own voice, and was cut off by the caller.
    agent_lines = [text for role, text in transcripts if role == "agent"]
    assert agent_lines[0].startswith("This call is recorded") and agent_lines[0].endswith(CUT)
    assert result.barge_ins

    # Served in its stored format, seekable: the browser's <audio> asks for ranges.
    assert response.status_code == 200 and response.headers["content-type"] == "audio/flac"
    assert ranged.status_code == 206 and ranged.content == response.content[100:1100]
    assert record["recording_url"].startswith("file://") and record["recording_parts"] == 1
    stereo, rate = soundfile.read(io.BytesIO(response.content), dtype="int16")
    assert rate == 8000 and stereo.shape[1] == 2
    seconds = stereo.shape[0] / rate
    assert record["recording_s"] == pytest.approx(seconds, abs=0.01)
    assert seconds == pytest.approx(result.duration_s, abs=0.1)  # as long as the call

    # Caller left, as sent; agent right, as heard (both timelines start with the stream, give or take ms).
    caller, agent = loud(stereo[:, 0]), loud(stereo[:, 1])
    sent, heard = loud(np.frombuffer(result.sent, "<i2")), loud(np.frombuffer(result.heard, "<i2"))
    assert caller.sum() > 50 and agent.sum() > 50
    assert agreement(caller, sent) > 0.95
    assert agreement(agent, heard) > 0.95
    # The cut is where the gateway cleared the line: the notice is heard up to it, not a moment after. (On
    # the recording's own clock, which starts with it: the caller's clock in the same process may lag.)
    lines = logged(capsys)
    began = next(e["timestamp"] for e in lines if e["event"] == "recording_started")
    cleared = next(e["timestamp"] for e in lines if e["event"] == "barge_in")
    clear_at = (datetime.fromisoformat(cleared) - datetime.fromisoformat(began)).total_seconds()
    frame = round(clear_at * 50)
    assert agent[frame - 15 : frame - 1].mean() > 0.5  # speaking just before the clear
    assert not agent[frame + 1 : frame + 25].any()  # silence after it, though the notice had seconds left
