"""Every carrier end to end: the caller simulator speaks the carrier's dialect (its signed webhook, its media
stream at its rate), the gateway carries the call on the local backend, and the carrier's REST stand-in
takes the transfer. One call per carrier; the carrier's own rules are unit-tested in its test module."""

from __future__ import annotations

import asyncio
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway.devtools.dialects.telnyx import new_key_pair
from gateway.devtools.plivo_api import fake_plivo_api
from gateway.devtools.signalwire_api import fake_signalwire_api
from gateway.devtools.simulator import CallResult, CallScript, dialect_for, place_call
from gateway.devtools.telnyx_api import fake_telnyx_api
from gateway.devtools.vonage_api import fake_vonage_api
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.server import running_gateway
from gateway.vonage.signing import load_private_key
from tests.support.gateway import logged, settings_for
from tests.support.keys import rsa_private_pem

pytestmark = pytest.mark.e2e

NUMBER = "+15005550001"  # the simulator's default called number: AGENTS_FILE gives it the transfer desk
TARGET = "+15005550009"
AGENTS = f"""
    [agents.desk]
    numbers = ["{NUMBER}"]
    greeting = "Transfer me to an operator."
    tools = ["end_call", "transfer_call"]
    transfer_targets = ["{TARGET}"]
"""


@pytest.fixture
async def live():
    async with LocalLiveServer(options=LocalLiveOptions()) as server:
        yield server


def agents_file(tmp_path: Path, agents: str = AGENTS) -> str:
    path = tmp_path / "agents.toml"
    path.write_text(textwrap.dedent(agents))
    return str(path)


def caller(rate: int, seconds: float = 8.0) -> CallScript:
    """A caller who says nothing and stays on the line until the gateway ends the call (keys are the lines'
    unit tests': a key pressed here would interrupt the agent's turn, and with it the transfer)."""
    silence = bytes(int(0.1 * rate) * 2)
    return CallScript(
        audio=silence, rate=rate, trailing_silence_s=seconds, hang_up=False,
        max_duration_s=seconds,
    )  # fmt: skip


def share_above(pcm: bytes, rate: int, hz: float) -> float:
    """The share of the audio's energy above `hz`: none can be there on an 8 kHz line."""
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    return float(power[freqs > hz].sum() / power.sum())


async def written_record(url: str, call_sid: str, token: str) -> dict:
    """The call's record, once written (off the audio path, just after the call)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient() as client, asyncio.timeout(10):
        while True:
            response = await client.get(f"{url}/calls/{call_sid}", headers=headers)
            if response.status_code != 404:
                return response.json()
            await asyncio.sleep(0.05)


def ended(lines: list[dict], result: CallResult) -> dict:
    return [x for x in lines if x["event"] == "call_ended" and x.get("call_sid") == result.call_sid][-1]


async def test_a_telnyx_call_is_wideband_signed_keyed_and_transferred_through_texml_rest(
    live, tmp_path, capsys
):
    private, public = new_key_pair()
    async with fake_telnyx_api("KEY-telnyx-test") as (api_url, api):
        settings = settings_for(
            live.url(),
            AGENTS_FILE=agents_file(tmp_path),
            TELNYX_PUBLIC_KEY=public,
            TELNYX_API_KEY="KEY-telnyx-test",
            TELNYX_API_BASE_URL=api_url,
            CALLS_API_TOKEN="calls-api-token",
        )
        async with running_gateway(settings) as url:
            result = await place_call(url, caller(16000), dialect=dialect_for("telnyx", private))
            record = await written_record(url, result.call_sid, "calls-api-token")
    lines = logged(capsys)

    # The agent said "I will transfer you now." at 16 kHz, with what a phone line would cut off above 4 kHz.
    assert result.rate == 16000 and result.media_bytes_received / 16000 > 0.8
    assert share_above(result.heard, 16000, 4000) > 0.01
    assert result.bad_messages == 0
    # Then the call moved through Telnyx's TeXML REST API, once the words had been heard (a mark echoed).
    ((account, call_sid, form),) = api.updates
    assert call_sid == result.call_sid and account  # the webhook's AccountSid, carried in the stream URL
    assert f"<Dial>{TARGET}</Dial>" in form["Texml"]
    assert [e for e in result.events if e.kind == "mark_echo"][-1].details["name"].startswith("transfer-")
    summary = ended(lines, result)
    assert summary["outcome"] == "transferred" and result.closed_by == "gateway"
    # The record says which carrier carried it, and who called whom, from Telnyx's start.
    assert record["carrier"] == "telnyx" and record["to_number"] == NUMBER
    assert record["stream_sid"] == result.stream_sid
    assert "KEY-telnyx-test" not in capsys.readouterr().err + str(lines)


async def test_a_signalwire_call_is_signed_bearer_checked_and_transferred_through_its_rest_api(
    live, tmp_path, capsys
):
    project, token, signing_key = "b7f1c3a0-6d0e-4f6c-9d1e-000000000001", "PT-secret", "PSK-signing"
    async with fake_signalwire_api(project, token) as (space_url, api):
        settings = settings_for(
            live.url(),
            AGENTS_FILE=agents_file(tmp_path),
            SIGNALWIRE_PROJECT_ID=project,
            SIGNALWIRE_API_TOKEN=token,
            SIGNALWIRE_SPACE_URL=space_url,
            SIGNALWIRE_SIGNING_KEY=signing_key,
        )
        async with running_gateway(settings) as url:
            result = await place_call(url, caller(8000), dialect=dialect_for("signalwire", signing_key))
    lines = logged(capsys)

    assert result.rate == 8000 and result.media_bytes_received / 8000 > 0.8 and result.bad_messages == 0
    ((call_sid, form),) = api.updates
    assert call_sid == result.call_sid and f"<Dial>{TARGET}</Dial>" in form["Twiml"]
    assert ended(lines, result)["outcome"] == "transferred"


async def test_on_the_wideband_line_the_gateway_hears_the_caller_at_16_khz_and_cuts_the_agent_off():
    """Telnyx's 16 kHz line feeds the gateway's own detector and Live with no resampling: talking over the
    greeting clears the line (Telnyx's `clear`), and each of the caller's turns is marked."""
    from gateway.devtools import turn_corpus as tc

    track = tc.line_noise(6.5, seed=3)
    for at, text in ((2.0, "Stop, stop, I already know that."), (4.8, "What time is it?")):
        said = tc.voice(text, agent=False, level_dbfs=-20)
        track[int(at * tc.RATE) : int(at * tc.RATE) + said.size] += said
    async with LocalLiveServer(options=LocalLiveOptions(record_connections=True)) as live:
        settings = settings_for(live.url(), TURN_DETECTION="local", BARGE_IN="local")
        async with running_gateway(settings) as url:
            script = CallScript(tc.phone_line(track), rate=tc.RATE, trailing_silence_s=1.0)
            result = await place_call(url, script, dialect=dialect_for("telnyx"))
    record = live.connections[0]
    assert result.rate == 16000 and result.barge_ins and not result.unanswered_barge_ins
    assert "clear" in [e.kind for e in result.events]
    assert record.activity[::2] == ["activityStart"] * (len(record.activity) // 2)
    assert len(record.activity) >= 4


def last_mark_echo(result: CallResult) -> str:
    return [e for e in result.events if e.kind == "mark_echo"][-1].details["name"]


async def test_a_vonage_call_is_wideband_jwt_signed_and_transferred_through_the_voice_api(
    live, tmp_path, capsys
):
    secret, application_id = (
        "vonage-signature-secret-of-32-bytes-or-more",
        "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    )
    pem = load_private_key(rsa_private_pem())
    async with fake_vonage_api(application_id, pem) as (api_url, api):
        settings = settings_for(
            live.url(),
            AGENTS_FILE=agents_file(tmp_path),
            VONAGE_SIGNATURE_SECRET=secret,
            VONAGE_APPLICATION_ID=application_id,
            VONAGE_PRIVATE_KEY=pem,
            VONAGE_API_BASE_URL=api_url,
        )
        async with running_gateway(settings) as url:
            result = await place_call(url, caller(16000), dialect=dialect_for("vonage", secret))
    lines = logged(capsys)

    # "I will transfer you now." at 16 kHz, in whole 640-byte frames (the simulator counts any other bad)
    assert result.rate == 16000 and result.media_bytes_received / 16000 > 0.8 and result.bad_messages == 0
    assert share_above(result.heard, 16000, 4000) > 0.01
    # then the Voice API (its stand-in checks the RS256 application JWT), once Vonage's notify said it played
    ((uuid, body),) = api.updates  # the transfer, and no hang-up after it
    assert uuid == result.call_sid and body["action"] == "transfer"
    assert body["destination"]["ncco"][0]["endpoint"] == [{"type": "phone", "number": TARGET.lstrip("+")}]
    assert last_mark_echo(result).startswith("transfer-")
    assert ended(lines, result)["outcome"] == "transferred" and result.closed_by == "gateway"
    assert secret not in str(lines) and "PRIVATE KEY" not in str(lines) and "Bearer" not in str(lines)


GOODBYE_AGENTS = AGENTS.replace("Transfer me to an operator.", "Say goodbye to the caller.")


@pytest.mark.parametrize("ending", ["transfer", "goodbye"])
async def test_a_plivo_call_is_wideband_v3_signed_and_ended_through_its_api(live, tmp_path, capsys, ending):
    auth_id, token = "MAXXXXXXXXXXXXXXXXXX", "plivo-auth-token-for-tests"
    async with fake_plivo_api(auth_id, token) as (api_url, api):
        agents = AGENTS if ending == "transfer" else GOODBYE_AGENTS
        settings = settings_for(
            live.url(),
            AGENTS_FILE=agents_file(tmp_path, agents),
            PLIVO_AUTH_ID=auth_id,
            PLIVO_AUTH_TOKEN=token,
            PLIVO_API_BASE_URL=api_url,
        )
        async with running_gateway(settings) as url:
            result = await place_call(url, caller(16000), dialect=dialect_for("plivo", token))
            if ending == "transfer":  # Plivo then asks our transfer URL, signed, what to do with the caller
                (transfer,) = api.transfers
                await asyncio.wait_for(transfer.done.wait(), 10)
    lines = logged(capsys)

    assert result.rate == 16000 and result.media_bytes_received / 16000 > 0.8 and result.bad_messages == 0
    assert share_above(result.heard, 16000, 4000) > 0.01
    assert result.closed_by == "gateway"
    if ending == "transfer":
        assert transfer.call_uuid == result.call_sid and api.hangups == []
        assert transfer.status == 200 and ET.fromstring(transfer.xml).findtext("Dial/Number") == TARGET
        assert last_mark_echo(result).startswith("transfer-")
        assert ended(lines, result)["outcome"] == "transferred"
    else:  # end_call: our side hangs up through Plivo's API once the goodbye's checkpoint came back
        assert api.hangups == [result.call_sid] and api.transfers == []
        assert last_mark_echo(result).startswith("hang_up-")
        assert ended(lines, result)["outcome"] == "agent_hung_up"
    assert token not in str(lines)
