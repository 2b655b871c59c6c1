"""The Prometheus metrics move as a simulated call goes through its story."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gateway.devtools.simulator import CallScript, place_call
from gateway.server import running_gateway
from tests.support.audio import agent_tone, caller_tone
from tests.support.gateway import settings_for
from tests.support.live_peer import LivePeer, PeerSession

pytestmark = pytest.mark.e2e

WATCHED = {
    "active": ("gateway_active_calls", {}),
    "ended": ("gateway_calls_total", {"outcome": "caller_hung_up"}),
    "connects": ("gateway_live_connect_seconds_count", {"resumed": "false"}),
    "resumed_connects": ("gateway_live_connect_seconds_count", {"resumed": "true"}),
    "first_audio": ("gateway_first_agent_audio_seconds_count", {}),
    "responses": ("gateway_response_latency_seconds_count", {}),
    "response_s": ("gateway_response_latency_seconds_sum", {}),
    "barge_ins": ("gateway_barge_ins_total", {"source": "server"}),
    "switches": ("gateway_live_switches_total", {"reason": "connection_lost"}),
    "agent_dropped": ("gateway_frames_dropped_total", {"direction": "agent"}),
    "audio_tokens": ("gateway_tokens_total", {"direction": "response", "modality": "audio"}),
}


def sample() -> dict[str, float]:
    return {k: REGISTRY.get_sample_value(name, labels) or 0.0 for k, (name, labels) in WATCHED.items()}


CALLER_S = 0.4


async def script(session: PeerSession) -> None:
    if session.setup["sessionResumption"].get("handle"):
        return  # the resumed connection listens to the end of the call
    await session.wait_audio(int(CALLER_S * 16000 * 2))  # the caller has spoken
    await asyncio.sleep(0.4)  # ... and stopped: the answer comes after a pause
    await session.send_audio(agent_tone(1.0))
    await session.send(
        {
            "serverContent": {"interrupted": True},
            "usageMetadata": {
                "promptTokenCount": 5,
                "responseTokenCount": 25,
                "totalTokenCount": 30,
                "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 25}],
            },
        }
    )
    await session.send_audio(agent_tone(0.2))  # late audio of the interrupted turn: dropped
    await session.send({"serverContent": {"turnComplete": True}})
    await session.send({"sessionResumptionUpdate": {"newHandle": "h-1", "resumable": True}})
    await asyncio.sleep(0.2)
    await session.ws.close(1011, "internal error")


async def test_metrics_move_during_a_simulated_call():
    before = sample()
    async with LivePeer(script) as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            audio = caller_tone(CALLER_S)
            call = asyncio.create_task(place_call(url, CallScript(audio=audio, trailing_silence_s=3.0)))
            async with httpx.AsyncClient() as client:
                async with asyncio.timeout(10):
                    while sample()["active"] == before["active"]:
                        await asyncio.sleep(0.01)
                during = sample()
                await call
                scraped = (await client.get(url + "/metrics")).text
    after = sample()
    delta = {k: after[k] - before[k] for k in after}

    assert during["active"] == before["active"] + 1 and after["active"] == before["active"]
    assert delta["ended"] == 1
    assert delta["connects"] == 1 and delta["resumed_connects"] == 1 and delta["switches"] == 1
    assert delta["first_audio"] == 1
    # from the end of the caller's tone to the agent's first audio: the peer's pause and a bit
    assert delta["responses"] == 1 and 0.3 < delta["response_s"] < 3.0
    assert delta["barge_ins"] == 1 and delta["agent_dropped"] >= 1
    assert delta["audio_tokens"] == 25

    # the endpoint exposes them, and no label carries a call id
    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    for name in (
        "gateway_response_latency_seconds",
        "gateway_live_connect_seconds",
        "gateway_tokens",
        "gateway_live_switches",
        "gateway_calls_moved",
    ):
        assert name in families
    for family in families.values():
        for s in family.samples:
            assert not any(str(v).startswith(("CA", "MZ")) for v in s.labels.values()), s
