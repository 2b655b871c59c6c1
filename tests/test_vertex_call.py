"""A call on Vertex AI, offline, end to end: service-account credentials against a local token endpoint, the
local backend's Vertex path (bearer token, the project's model path), and a connection switch with transparent
resumption, whose replay is exact: the new connection gets precisely the caller audio after the last client
message the handle covers, no frame the server already had and none missing."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from gateway.devtools.simulator import CallScript, place_call
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.server import running_gateway
from tests.support.gateway import logged, settings_for
from tests.support.google_oauth import google_credentials
from tests.support.local_live import caller_speech
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


async def test_a_vertex_call_switches_connections_and_replays_exactly_what_the_handle_lacks(tmp_path, capsys):
    async with google_credentials(tmp_path) as (key_file, endpoint):
        # Replies sent at once (audio_lead_s): the turn, and the handle after it, come early.
        options = LocalLiveOptions(record_connections=True, bearer_check=endpoint.accepts, audio_lead_s=60.0)
        async with LocalLiveServer(options=options) as live:
            settings = settings_for(
                live.vertex_url(),
                GEMINI_PLATFORM="vertex",
                GOOGLE_CLOUD_PROJECT="phone-line-1",
                GOOGLE_CLOUD_LOCATION="us-central1",
                GOOGLE_APPLICATION_CREDENTIALS=key_file,
                AGENT_GREETING="none",
                LIVE_INPUT_RATE="8000",  # no resampler on the way in: replayed frames are byte for byte
                LIVE_PREWARM_S="0",
                GEMINI_API_KEY="AIzaSyNotForVertex-0000000000000000000",  # left over: never sent
            )
            # Speech, then room noise: every 20 ms frame differs, so a frame replayed twice or missed shows.
            audio = caller_speech("what time is it", rate=8000, tail_s=30.0)
            async with running_gateway(settings) as url:
                call = asyncio.create_task(place_call(url, CallScript(audio=audio, trailing_silence_s=0.5)))
                # Once a handle covers some of the caller's audio (the agent has answered), the connection's
                # life ends: the gateway switches to a new one resuming from that handle.
                await wait_for(
                    lambda: live.connections and max(live.connections[0].consumed.values()) > 0, 30
                )
                live.go_away(1.0)
                # The new connection has had the replay (never more than the old one had) and more after it.
                await wait_for(
                    lambda: (
                        len(live.connections) > 1
                        and len(live.connections[1].audio) > len(live.connections[0].audio)
                    ),
                    30,
                )
                call.cancel()  # the caller hangs up
                with contextlib.suppress(asyncio.CancelledError):
                    await call

    first, second = live.connections[:2]
    assert first.authorization == second.authorization == "Bearer"
    lines = logged(capsys)
    assert any(line["event"] == "gemini_api_key_ignored" for line in lines)
    assert not [
        line for line in lines if "ya29." in json.dumps(line) or "AIzaSyNotForVertex" in json.dumps(line)
    ]
    assert endpoint.issued  # the token the connects carried came from the key file's token endpoint
    # The second connection resumed from a handle of the first that covered some of the caller's audio...
    assert second.resumed_from in first.consumed
    covered = first.consumed[second.resumed_from]
    offset = max((at for index, at in first.audio_at.items() if index <= covered), default=0)
    assert 0 < offset < len(first.audio)
    # ...and was sent exactly what followed it (then what the caller said during and after the switch).
    uncovered = bytes(first.audio[offset:])
    assert bytes(second.audio[: len(uncovered)]) == uncovered
    assert len(second.audio) > len(uncovered)
