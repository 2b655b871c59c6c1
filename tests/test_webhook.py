import xml.etree.ElementTree as ET

import httpx
import pytest
from twilio.request_validator import RequestValidator

from gateway.server import running_gateway
from tests.support.gateway import logged, settings_for

LIVE = "ws://127.0.0.1:9/unused"
FORM = {
    "CallSid": "CA123",
    "AccountSid": "AC1",
    "From": "+15551230000",
    "To": "+15559870000",
    "CallStatus": "ringing",
    "Direction": "inbound",
}


async def post_voice(
    env: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[str, httpx.Response]:
    async with running_gateway(settings_for(LIVE, **env)) as url:
        async with httpx.AsyncClient() as client:
            return url, await client.post(url + "/twilio/voice", data=FORM, headers=headers or {})


@pytest.mark.parametrize(
    ("public_url", "stream_url"),
    [
        ("https://gw.example.com", "wss://gw.example.com/twilio/media"),
        ("http://gw.example.com:8080", "ws://gw.example.com:8080/twilio/media"),
        ("https://example.com/voice-gw/", "wss://example.com/voice-gw/twilio/media"),
    ],
)
async def test_twiml_connects_a_stream_with_parameters_then_hangs_up(public_url, stream_url):
    _, response = await post_voice({"PUBLIC_URL": public_url})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)
    assert [child.tag for child in root] == ["Connect", "Hangup"]
    stream = root.find("Connect/Stream")
    assert stream is not None and stream.get("url") == stream_url
    assert "?" not in stream.get("url")
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    token = params.pop("token")  # the per-call stream token (tests/test_security.py checks what it does)
    assert token.count(".") == 2
    assert params == {"From": FORM["From"], "To": FORM["To"]}


async def test_without_public_url_the_host_comes_from_the_request():
    url, response = await post_voice({})
    stream = ET.fromstring(response.text).find("Connect/Stream")
    assert stream.get("url") == url.replace("http://", "ws://") + "/twilio/media"


async def test_signature_is_checked_against_public_url_not_the_request():
    token, public = "secret-token-42", "https://gw.example.com"
    signature = RequestValidator(token).compute_signature(public + "/twilio/voice", FORM)
    env = {"PUBLIC_URL": public, "TWILIO_AUTH_TOKEN": token}
    assert (await post_voice(env, {"X-Twilio-Signature": signature}))[1].status_code == 200
    assert (await post_voice(env, {"X-Twilio-Signature": "bad"}))[1].status_code == 403
    assert (await post_voice(env))[1].status_code == 403


async def test_a_rejected_signature_is_logged_with_the_url_it_was_checked_against(capsys):
    env = {"PUBLIC_URL": "https://old-host.example.com", "TWILIO_AUTH_TOKEN": "secret-token-42"}
    capsys.readouterr()
    assert (await post_voice(env, {"X-Twilio-Signature": "bad"}))[1].status_code == 403
    (rejected,) = [e for e in logged(capsys) if e["event"] == "webhook_signature_rejected"]
    assert rejected["url"] == "https://old-host.example.com/twilio/voice"
    assert "PUBLIC_URL" in rejected["hint"] and "secret-token-42" not in str(rejected)


async def test_health_metrics_and_status_callback():
    async with running_gateway(settings_for(LIVE)) as url:
        async with httpx.AsyncClient() as client:
            assert (await client.get(url + "/healthz")).json() == {"status": "ok", "active_calls": 0}
            metrics = await client.get(url + "/metrics")
            assert "gateway_active_calls" in metrics.text
            status = await client.post(
                url + "/twilio/status", data={"CallSid": "CA1", "CallStatus": "completed"}
            )
            assert status.status_code == 204


async def test_the_amd_callback_is_signed_like_the_webhook(capsys):
    """Twilio's answering-machine result steers an outbound call (a machine -> hang up or a voicemail): an
    unsigned or mis-signed one is refused and logged, and a signed one taken."""
    token, public = "secret-token-42", "https://gw.example.com"
    form = {"CallSid": "CA123", "AccountSid": "AC1", "AnsweredBy": "machine_end_beep"}
    signature = RequestValidator(token).compute_signature(public + "/twilio/amd", form)
    settings = settings_for(LIVE, PUBLIC_URL=public, TWILIO_AUTH_TOKEN=token)
    capsys.readouterr()
    async with running_gateway(settings) as url:
        async with httpx.AsyncClient() as client:
            for headers in ({}, {"X-Twilio-Signature": "bad"}):
                refused = await client.post(url + "/twilio/amd", data=form, headers=headers)
                assert refused.status_code == 403
            signed = await client.post(
                url + "/twilio/amd", data=form, headers={"X-Twilio-Signature": signature}
            )
            assert signed.status_code == 204
    events = [e["event"] for e in logged(capsys)]
    assert events.count("amd_signature_rejected") == 2
    assert events.count("amd_result") == 1
