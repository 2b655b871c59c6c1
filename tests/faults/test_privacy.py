"""Personal data in logs (issue 12, scenario 10).

Before: every `call_started` line held the caller's number in clear, and each utterance's words sat in an
INFO `transcript` line. Now numbers are masked unless LOG_PII=true, keys pressed too, and the words of a
call are only in its record (`GET /calls/{sid}`), never in a log line.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from gateway.config import ConfigError, load_settings
from gateway.devtools.simulator import CallScript, place_call
from gateway.logs import configure_logging, mask_personal_data
from gateway.server import running_gateway
from tests.support.audio import agent_tone, caller_tone
from tests.support.gateway import logged, settings_for
from tests.support.live_peer import LivePeer, PeerSession

CALLER, CALLED = "+15551230067", "+15559870012"
HEARD = "My name is Ada Lovelace and my account is 4417"
SAID = "Thank you Ada, your parcel leaves on Tuesday."
API_TOKEN = "privacy-test-calls-token"


async def talk(session: PeerSession) -> None:
    await session.send({"serverContent": {"inputTranscription": {"text": HEARD}}})
    await session.send_audio(agent_tone(0.4))
    await session.send({"serverContent": {"outputTranscription": {"text": SAID}}})
    await session.send({"serverContent": {"turnComplete": True}})


def leaks(line: str) -> list[str]:
    """What of the caller's identity or words a raw log line gives away."""
    secrets = [CALLER, CALLER[1:], CALLER[2:], CALLED, CALLED[1:], HEARD, SAID, "Lovelace", "Tuesday"]
    return [s for s in secrets if s in line]


async def one_call(sid: str) -> dict:
    async with LivePeer(talk) as peer:
        settings = settings_for(peer.url, AGENT_GREETING="none", CALLS_API_TOKEN=API_TOKEN)
        async with running_gateway(settings) as url:
            await place_call(
                url,
                CallScript(audio=caller_tone(0.5), trailing_silence_s=1.5, dtmf=[(0.3, "7")]),
                call_sid=sid,
                from_=CALLER,
                to=CALLED,
            )
            async with httpx.AsyncClient() as client, asyncio.timeout(10):
                while (record := await client.get(
                    f"{url}/calls/{sid}", headers={"Authorization": f"Bearer {API_TOKEN}"}
                )).status_code == 404:  # fmt: skip
                    await asyncio.sleep(0.05)
    return record.json()


async def test_no_log_line_of_a_call_holds_the_callers_number_or_words(capsys):
    capsys.readouterr()
    record = await one_call("CAprivacy1")
    raw = capsys.readouterr().err.splitlines()

    # The figure: log lines of the whole call that give away the number or the words. Bound: none.
    leaking = [line for line in raw if leaks(line)]
    assert len(raw) > 8 and leaking == [], leaking
    # ... and the operator still has what they need: who called, masked; each utterance, without words.
    lines = [x for x in map(json.loads, raw) if x.get("call_sid") == "CAprivacy1"]
    started = next(x for x in lines if x["event"] == "call_started")
    assert started["caller"] == "+*********67" and started["called"] == "+*********12"
    spoken = [(x["role"], x["chars"]) for x in lines if x["event"] == "transcript"]
    assert spoken == [("caller", len(HEARD)), ("agent", len(SAID))]
    assert all("text" not in x for x in lines if x["event"] == "transcript")
    assert [x["digit"] for x in lines if x["event"] == "dtmf"] == ["*"]
    # The record keeps the words and the numbers (behind CALLS_API_TOKEN).
    assert (record["from_number"], record["to_number"]) == (CALLER, CALLED)
    assert [(t["role"], t["text"]) for t in record["transcript"]] == [("caller", HEARD), ("agent", SAID)]


async def test_log_pii_shows_numbers_but_never_the_words(capsys):
    configure_logging("json", "info", show_pii=True)
    try:
        capsys.readouterr()
        await one_call("CAprivacy2")
        lines = logged(capsys)
    finally:
        configure_logging("json", "info")
    started = next(x for x in lines if x["event"] == "call_started")
    assert (started["caller"], started["called"]) == (CALLER, CALLED)
    assert [x["digit"] for x in lines if x["event"] == "dtmf"] == ["7"]
    assert not [x for x in lines if HEARD in str(x) or SAID in str(x)]


def test_the_setting_and_the_masks():
    assert load_settings({}, env_file=None).log_pii is False
    assert load_settings({"LOG_PII": "true"}, env_file=None).log_pii is True
    with pytest.raises(ConfigError, match="LOG_PII"):
        load_settings({"LOG_PII": "sometimes"}, env_file=None)
    masked = mask_personal_data(
        None,
        "info",
        {
            "event": "local_live.speech_ended",
            "text": HEARD,  # the local backend's recogniser
            "error": f"Twilio refused: number {CALLER} is not verified",
            "params": {"From": CALLER, "To": "client:alice", "Body": "From=%2B15551230067"},
            "caller": "anonymous",
        },
    )
    assert masked["text"] == f"[{len(HEARD)} chars]" and masked["caller"] == "anonymous"
    assert masked["error"] == "Twilio refused: number +*********67 is not verified"
    assert masked["params"] == {"From": "+*********67", "To": "[masked]", "Body": "From=%2B*********67"}
