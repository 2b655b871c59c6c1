"""A call on each of Vonage and Plivo, end to end: the caller simulator speaks the carrier's dialect (its
signed webhook, its signed or tokened upgrade, its media at 16 kHz), the gateway carries the call to the
local Live backend, and the carrier's REST stand-in checks our hang-up or transfer as the real API would."""

from __future__ import annotations

import asyncio
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway.devtools.dialects.plivo import PlivoDialect
from gateway.devtools.dialects.vonage import VonageDialect
from gateway.devtools.plivo_api import fake_plivo_api
from gateway.devtools.simulator import CallResult, CallScript, place_call
from gateway.devtools.vonage_api import fake_vonage_api
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.server import running_gateway
from gateway.vonage.signing import load_private_key
from tests.support.gateway import logged, settings_for
from tests.support.keys import rsa_private_pem

pytestmark = pytest.mark.e2e

NUMBER, TARGET = "+15005550001", "+15005550009"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
VONAGE_SECRET = "vonage-signature-secret-of-32-bytes-or-more"
PLIVO_ID, PLIVO_TOKEN = "MAXXXXXXXXXXXXXXXXXX", "plivo-auth-token-for-tests"


@pytest.fixture
async def live():
    async with LocalLiveServer(options=LocalLiveOptions()) as server:
        yield server


def agents(tmp_path: Path, greeting: str) -> str:
    path = tmp_path / "agents.toml"
    path.write_text(
        textwrap.dedent(f"""
            [agents.desk]
            numbers = ["{NUMBER}"]
            greeting = "{greeting}"
            tools = ["end_call", "transfer_call"]
            transfer_targets = ["{TARGET}"]
        """)
    )
    return str(path)


def waiting_call(seconds: float = 20.0) -> CallScript:
    """A caller who says nothing (at 16 kHz) and stays on the line until the gateway ends the call."""
    return CallScript(
        audio=bytes(3200), trailing_silence_s=seconds, hang_up=False, max_duration_s=seconds, rate=16000
    )


def ended(lines: list[dict], result: CallResult) -> dict:
    return [x for x in lines if x["event"] == "call_ended" and x.get("call_sid") == result.call_sid][-1]


def last_mark_echo(result: CallResult) -> str:
    return [e for e in result.events if e.kind == "mark_echo"][-1].details["name"]


async def test_a_vonage_call_in_wideband_is_transferred_through_the_voice_api(live, tmp_path, capsys):
    pem = load_private_key(rsa_private_pem())
    async with fake_vonage_api(APP_ID, pem) as (api_url, api):
        env = {
            "AGENTS_FILE": agents(tmp_path, "Transfer me to an operator."),
            "VONAGE_SIGNATURE_SECRET": VONAGE_SECRET,
            "VONAGE_APPLICATION_ID": APP_ID,
            "VONAGE_PRIVATE_KEY": pem,
            "VONAGE_API_BASE_URL": api_url,
        }
        async with running_gateway(settings_for(live.url(), **env)) as url:
            result = await place_call(url, waiting_call(), to=NUMBER, dialect=VonageDialect(VONAGE_SECRET))
    lines = logged(capsys)

    assert result.carrier == "vonage" and result.rate == 16000
    assert ended(lines, result)["outcome"] == "transferred" and result.closed_by == "gateway"
    ((uuid, body),) = api.updates  # the transfer, with a valid application JWT; no hang-up after it
    assert uuid == result.call_sid and body["action"] == "transfer"
    (connect,) = body["destination"]["ncco"]
    assert connect["endpoint"] == [{"type": "phone", "number": TARGET.lstrip("+")}]
    # "I will transfer you now." was heard to its end (its notify came back) before the call moved
    assert last_mark_echo(result).startswith("transfer-") and "clear" not in [e.kind for e in result.events]
    assert result.media_bytes_received / 16000 > 0.8
    assert result.bad_messages == 0  # every frame a whole 640-byte one, every command Vonage's


async def test_a_plivo_call_in_wideband_hangs_up_through_the_api_once_the_goodbye_is_heard(
    live, tmp_path, capsys
):
    async with fake_plivo_api(PLIVO_ID, PLIVO_TOKEN) as (api_url, api):
        env = {
            "AGENTS_FILE": agents(tmp_path, "Say goodbye to the caller."),
            "PLIVO_AUTH_ID": PLIVO_ID,
            "PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
            "PLIVO_API_BASE_URL": api_url,
        }
        async with running_gateway(settings_for(live.url(), **env)) as url:
            result = await place_call(url, waiting_call(), to=NUMBER, dialect=PlivoDialect(PLIVO_TOKEN))
    lines = logged(capsys)

    assert result.carrier == "plivo" and result.rate == 16000
    assert ended(lines, result)["outcome"] == "agent_hung_up" and result.closed_by == "gateway"
    assert api.hangups == [result.call_sid]  # our side ended the call through Plivo's API
    assert last_mark_echo(result).startswith("hang_up-")  # after the goodbye's checkpoint came back
    assert result.media_bytes_received / 16000 > 1.0 and result.bad_messages == 0


async def test_a_plivo_transfer_points_the_call_at_xml_that_dials_the_target(live, tmp_path):
    async with fake_plivo_api(PLIVO_ID, PLIVO_TOKEN) as (api_url, api):
        env = {
            "AGENTS_FILE": agents(tmp_path, "Transfer me to an operator."),
            "PLIVO_AUTH_ID": PLIVO_ID,
            "PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
            "PLIVO_API_BASE_URL": api_url,
        }
        settings = settings_for(live.url(), **env)
        async with running_gateway(settings) as url:
            result = await place_call(url, waiting_call(), to=NUMBER, dialect=PlivoDialect(PLIVO_TOKEN))
            (transfer,) = api.transfers
            await asyncio.wait_for(transfer.done.wait(), 10)
    assert transfer.call_uuid == result.call_sid and api.hangups == []
    assert transfer.status == 200  # our /plivo/transfer took Plivo's signature
    assert ET.fromstring(transfer.xml).findtext("Dial/Number") == TARGET
