"""Turn-taking end to end: the caller simulator, a real gateway and the real local Live backend, with the
gateway's own turn detection and barge-in (the rules: tests/test_turns.py and tests/test_call_turns.py)."""

from __future__ import annotations

import pytest

from gateway.call.transcript import CUT
from gateway.devtools import turn_corpus as tc
from gateway.devtools.simulator import CallScript, place_call
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.server import running_gateway
from tests.support.gateway import settings_for

pytestmark = pytest.mark.e2e


def caller_line(seconds: float, *parts: tuple[float, str]) -> bytes:
    """What the caller's side of the line carries: noise, and sentences at the given times."""
    track = tc.line_noise(seconds, seed=3)
    for at, text in parts:
        said = tc.voice(text, agent=False, level_dbfs=-20)
        start = int(at * tc.RATE)
        track[start : start + said.size] += said
    return tc.phone_line(track)


async def test_the_gateway_marks_the_callers_turns_and_cuts_the_agent_off_when_talked_over():
    transcripts: list[tuple[str, str]] = []
    async with LocalLiveServer(options=LocalLiveOptions(record_connections=True)) as live:
        settings = settings_for(live.url(), TURN_DETECTION="local", BARGE_IN="local")
        async with running_gateway(
            settings, on_transcript=lambda _s, r, t: transcripts.append((r, t))
        ) as url:
            # The greeting is several seconds long: the caller talks over it, then asks something.
            audio = caller_line(6.5, (2.0, "Stop, stop, I already know that."), (4.8, "What time is it?"))
            result = await place_call(url, CallScript(audio, trailing_silence_s=1.0))
    record = live.connections[0]
    # Live's automatic detection was off: the gateway marked each of the caller's turns, and never sent
    # audioStreamEnd (the reference forbids it in this mode).
    assert record.activity and "audioStreamEnd" not in record.activity
    assert record.activity[::2] == ["activityStart"] * (len(record.activity) // 2)
    assert record.activity[1::2] == ["activityEnd"] * (len(record.activity) // 2)
    assert len(record.activity) >= 4
    # Talking over the greeting cleared the line, and the greeting's transcript keeps only what was heard.
    assert result.barge_ins and not result.unanswered_barge_ins
    greeting = next(text for role, text in transcripts if role == "agent")
    assert greeting.endswith(CUT) and not greeting.startswith(CUT)
