import pytest
from twilio.base.exceptions import TwilioRestException

from gateway.twilio.rest import CallControl
from tests.support.twilio_api import fake_twilio_api

ACCOUNT, TOKEN = "AC" + "1" * 32, "rest-token-123"


async def test_transfer_and_hang_up_update_the_call_with_twiml():
    async with fake_twilio_api(ACCOUNT, TOKEN) as (url, api):
        control = CallControl(ACCOUNT, TOKEN, base_url=url)
        try:
            assert await control.transfer("CA1", "+15551234567")
            assert await control.hang_up("CA2")
        finally:
            await control.close()
    (sid1, form1), (sid2, form2) = api.updates
    assert sid1 == "CA1" and "<Dial>+15551234567</Dial>" in form1["Twiml"]
    assert sid2 == "CA2" and "<Hangup />" in form2["Twiml"]


async def test_a_call_that_already_ended_is_not_an_error_but_bad_credentials_are():
    async with fake_twilio_api(ACCOUNT, TOKEN) as (url, api):
        api.ended.add("CAgone")
        control = CallControl(ACCOUNT, TOKEN, base_url=url)
        wrong = CallControl(ACCOUNT, "wrong", base_url=url)
        try:
            assert await control.hang_up("CAgone") is False
            with pytest.raises(TwilioRestException):
                await wrong.hang_up("CA1")
        finally:
            await control.close()
            await wrong.close()
