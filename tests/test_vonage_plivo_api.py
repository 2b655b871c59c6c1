"""Call control and number set-up against the Vonage and Plivo stand-ins, which check what the real APIs
check: the application JWT (Vonage), basic auth (Plivo), and Plivo's signed fetch of a transfer's XML."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from gateway.devtools.plivo_api import fake_plivo_api
from gateway.devtools.vonage_api import fake_vonage_api
from gateway.plivo import admin as plivo_admin
from gateway.plivo.rest import PlivoApiError, PlivoControl
from gateway.vonage import admin as vonage_admin
from gateway.vonage.rest import VonageControl
from gateway.vonage.signing import ApplicationJwt, load_private_key
from tests.support.keys import rsa_private_pem

pytestmark = pytest.mark.e2e  # real sockets on loopback (the stand-ins), as tests/test_twilio_admin.py

APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"


async def test_vonage_hang_up_and_transfer_carry_a_valid_application_jwt():
    pem = load_private_key(rsa_private_pem())
    async with fake_vonage_api(APP_ID, pem) as (url, api):
        control = VonageControl(ApplicationJwt(APP_ID, pem), base_url=url)
        try:
            assert await control.transfer("call-1", "+15550003333", "447700900000")
            assert await control.hang_up("call-2")
            assert not await control.hang_up("call-2")  # over already: not an error
        finally:
            await control.close()
        (transfer, destination), (hang_up, body) = api.updates
        assert (transfer, hang_up, body) == ("call-1", "call-2", {"action": "hangup"})
        ncco = destination["destination"]["ncco"]
        assert ncco[0]["endpoint"] == [{"type": "phone", "number": "15550003333"}]
        # a key that is not the application's is refused as Vonage refuses it
        other = VonageControl(ApplicationJwt(APP_ID, load_private_key(_another_key())), base_url=url)
        try:
            with pytest.raises(RuntimeError, match="401"):
                await other.hang_up("call-3")
        finally:
            await other.close()
        assert api.refused and "call-3" not in api.ended


async def test_plivo_hang_up_and_transfer_and_plivo_fetches_the_transfer_xml_signed():
    async with fake_plivo_api(AUTH_ID, "plivo-token") as (url, api):
        control = PlivoControl(AUTH_ID, "plivo-token", base_url=url)
        try:
            assert await control.hang_up("call-1")
            assert not await control.hang_up("call-1")
            assert await control.transfer("call-2", url + "/nowhere")  # the XML fetch fails: Plivo's problem
            wrong = PlivoControl(AUTH_ID, "not-the-token", base_url=url)
            with pytest.raises(PlivoApiError, match="401"):
                await wrong.hang_up("call-3")
            await wrong.close()
        finally:
            await control.close()
        assert api.hangups == ["call-1"]
        await asyncio.wait_for(api.transfers[0].done.wait(), 5)
        assert api.transfers[0].status == 404


def _another_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_gateway_vonage_configure_points_the_application_and_links_the_number(monkeypatch, capsys):
    pem = load_private_key(rsa_private_pem())
    async with fake_vonage_api(APP_ID, pem) as (url, api):
        api.add_number("447700900000")
        monkeypatch.setenv("VONAGE_APPLICATION_ID", APP_ID)
        monkeypatch.setenv("VONAGE_API_KEY", api.api_key)
        monkeypatch.setenv("VONAGE_API_SECRET", api.api_secret)
        args = argparse.Namespace(api_base_url=url, url="https://voice.example.com", number="+447700900000")
        assert await asyncio.to_thread(vonage_admin.run_vonage_command, args) == 0
        voice = api.application["capabilities"]["voice"]
        assert voice["webhooks"]["answer_url"] == {
            "address": "https://voice.example.com/vonage/answer",
            "http_method": "POST",
        }
        assert voice["webhooks"]["event_url"]["address"] == "https://voice.example.com/vonage/event"
        assert voice["signed_callbacks"] is True
        assert api.numbers[0]["app_id"] == APP_ID
        out = capsys.readouterr().out
        assert (
            "answer_url: GET https://example.com/answer -> POST https://voice.example.com/vonage/answer"
            in out
        )
        monkeypatch.setenv("VONAGE_API_SECRET", "wrong")
        with pytest.raises(vonage_admin.AdminError, match="VONAGE_API_KEY and VONAGE_API_SECRET"):
            await asyncio.to_thread(vonage_admin.run_vonage_command, args)
        assert "wrong" not in str(api.refused)


async def test_gateway_plivo_configure_makes_the_application_once_and_attaches_the_number(
    monkeypatch, capsys
):
    async with fake_plivo_api(AUTH_ID, "plivo-token") as (url, api):
        api.add_number("14155550123")
        monkeypatch.setenv("PLIVO_AUTH_ID", AUTH_ID)
        monkeypatch.setenv("PLIVO_AUTH_TOKEN", "plivo-token")
        args = argparse.Namespace(
            api_base_url=url, url="https://voice.example.com", number="+14155550123", app_name="gateway"
        )
        assert await asyncio.to_thread(plivo_admin.run_plivo_command, args) == 0
        assert (
            await asyncio.to_thread(plivo_admin.run_plivo_command, args) == 0
        )  # again: the same application
        (app,) = api.applications.values()
        assert (
            app["answer_url"] == "https://voice.example.com/plivo/answer" and app["answer_method"] == "POST"
        )
        assert api.numbers["14155550123"]["app_id"] == app["app_id"]
        assert "made" in capsys.readouterr().out
        missing = argparse.Namespace(**{**vars(args), "number": "+14155559999"})
        with pytest.raises(plivo_admin.AdminError, match="404"):
            await asyncio.to_thread(plivo_admin.run_plivo_command, missing)
