"""Call control and number set-up against the Vonage and Plivo stand-ins, which check what the real APIs
check: the application JWT (Vonage), basic auth (Plivo), and Plivo's signed fetch of a transfer's XML."""

from __future__ import annotations

import asyncio

import pytest

from gateway.devtools.plivo_api import fake_plivo_api
from gateway.devtools.vonage_api import fake_vonage_api
from gateway.plivo.rest import PlivoApiError, PlivoControl
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
