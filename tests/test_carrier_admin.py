"""`gateway telnyx configure` and `gateway signalwire configure`, run in-process against the carriers' REST
stand-ins (each speaks its carrier's wire format)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.cli import main
from gateway.devtools.plivo_api import fake_plivo_api
from gateway.devtools.signalwire_api import fake_signalwire_api
from gateway.devtools.telnyx_api import fake_telnyx_api
from gateway.devtools.vonage_api import fake_vonage_api
from gateway.vonage.signing import load_private_key
from tests.support.keys import rsa_private_pem

KEY = "KEY-admin-test"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("PUBLIC_URL", "TELNYX_API_KEY", "TELNYX_PUBLIC_KEY", "TELNYX_API_BASE_URL",
                 "SIGNALWIRE_PROJECT_ID", "SIGNALWIRE_API_TOKEN", "SIGNALWIRE_SPACE_URL",
                 "VONAGE_APPLICATION_ID", "VONAGE_API_KEY", "VONAGE_API_SECRET", "VONAGE_API_BASE_URL",
                 "PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "PLIVO_API_BASE_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def gateway(*args: str) -> int:
    return await asyncio.to_thread(main, list(args))


async def test_telnyx_configure_makes_a_texml_application_and_assigns_the_number_to_it(env, capsys):
    async with fake_telnyx_api(KEY) as (api_url, api):
        number = api.add_number("+15550001111", connection_id="old-connection")
        other = api.add_number("+15550002222", connection_id="elsewhere")
        env.setenv("TELNYX_API_BASE_URL", api_url)
        assert await gateway("telnyx", "configure", "--number", "+15550001111") == 2  # no key
        assert "TELNYX_API_KEY" in capsys.readouterr().err
        env.setenv("TELNYX_API_KEY", KEY)
        assert await gateway("telnyx", "configure", "--number", "+15550001111") == 2  # no URL
        assert "PUBLIC_URL" in capsys.readouterr().err
        env.setenv("PUBLIC_URL", "https://voice.example.com")

        assert await gateway("telnyx", "configure", "--number", "+15550001111") == 0
        first = capsys.readouterr()
        assert (
            await gateway(
                "telnyx", "configure", "--number", "+15550001111", "--url", "https://v2.example.com"
            )
            == 0
        )
        second = capsys.readouterr()
        assert await gateway("telnyx", "configure", "--number", "+15559999999") == 2
        unknown = capsys.readouterr()
        env.setenv("TELNYX_API_KEY", "KEY-wrong")
        assert await gateway("telnyx", "configure", "--number", "+15550001111") == 1
        wrong = capsys.readouterr()

    (application,) = api.applications  # created once, then updated
    assert application["friendly_name"] == "gemini-gateway" and application["voice_method"] == "post"
    assert application["voice_url"] == "https://v2.example.com/telnyx/voice"
    assert number["connection_id"] == application["id"] and other["connection_id"] == "elsewhere"
    assert "created: voice_url POST https://voice.example.com/telnyx/voice" in first.out
    assert f"+15550001111: connection old-connection -> {application['id']}" in first.out
    assert "TELNYX_PUBLIC_KEY" in first.err  # the service needs it to refuse unsigned webhooks
    assert "updated" in second.out
    assert "+15559999999 is not a number of this Telnyx account" in unknown.err
    assert "Telnyx refused TELNYX_API_KEY (HTTP 401" in wrong.err and "KEY-wrong" not in wrong.err


async def test_signalwire_configure_points_the_numbers_voice_webhook_through_the_compatibility_api(
    env, capsys
):
    async with fake_signalwire_api("proj-1", "PT-token") as (space_url, api):
        number = api.add_number("+15550001111", voice_url="https://old.example.com/voice")
        env.setenv("SIGNALWIRE_PROJECT_ID", "proj-1")
        env.setenv("SIGNALWIRE_API_TOKEN", "PT-token")
        assert await gateway("signalwire", "configure", "--number", "+15550001111") == 2  # no space
        assert "SIGNALWIRE_SPACE_URL" in capsys.readouterr().err
        env.setenv("SIGNALWIRE_SPACE_URL", space_url)
        env.setenv("PUBLIC_URL", "https://voice.example.com")
        assert await gateway("signalwire", "configure", "--number", "+15550001111") == 0
        done = capsys.readouterr()
        assert await gateway("signalwire", "configure", "--number", "+15559999999") == 2
        unknown = capsys.readouterr()

    ((sid, form),) = api.number_updates
    assert sid == number["sid"]
    assert form == {"VoiceUrl": "https://voice.example.com/signalwire/voice", "VoiceMethod": "POST"}
    assert (
        "voice_url: https://old.example.com/voice -> https://voice.example.com/signalwire/voice" in done.out
    )
    assert "+15559999999 is not a number of this account" in unknown.err


async def test_vonage_configure_points_the_application_signed_and_links_the_number(env, capsys):
    application_id = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
    async with fake_vonage_api(application_id, load_private_key(rsa_private_pem())) as (api_url, api):
        api.add_number("447700900000")
        env.setenv("VONAGE_API_BASE_URL", api_url)
        env.setenv("PUBLIC_URL", "https://voice.example.com")
        assert await gateway("vonage", "configure", "--number", "447700900000") == 2  # no credentials
        assert "VONAGE_APPLICATION_ID, VONAGE_API_KEY, VONAGE_API_SECRET" in capsys.readouterr().err
        env.setenv("VONAGE_APPLICATION_ID", application_id)
        env.setenv("VONAGE_API_KEY", api.api_key)
        env.setenv("VONAGE_API_SECRET", api.api_secret)
        assert await gateway("vonage", "configure", "--number", "+447700900000") == 0
        done = capsys.readouterr()
        assert await gateway("vonage", "configure", "--number", "447700900999") == 2
        unknown = capsys.readouterr()
        env.setenv("VONAGE_API_SECRET", "wrong-secret")
        assert await gateway("vonage", "configure", "--number", "447700900000") == 1
        wrong = capsys.readouterr()

    voice = api.application["capabilities"]["voice"]
    assert voice["webhooks"]["answer_url"] == {
        "address": "https://voice.example.com/vonage/answer",
        "http_method": "POST",
    }
    assert voice["webhooks"]["event_url"]["address"] == "https://voice.example.com/vonage/event"
    assert voice["webhooks"]["fallback_answer_url"] == voice["webhooks"]["answer_url"]  # asked while we drain
    assert voice["signed_callbacks"] is True  # Vonage then signs the webhooks and the media upgrade
    assert api.numbers[0]["app_id"] == application_id
    assert (
        "answer_url: GET https://example.com/answer -> POST https://voice.example.com/vonage/answer"
        in done.out
    )
    assert "447700900999 is not a number of this account" in unknown.err
    assert "Vonage refused the credentials" in wrong.err and "wrong-secret" not in wrong.err


async def test_plivo_configure_makes_the_application_once_and_attaches_the_number(env, capsys):
    async with fake_plivo_api("MAXXXXXXXXXXXXXXXXXX", "plivo-token") as (api_url, api):
        api.add_number("14155550123")
        env.setenv("PLIVO_API_BASE_URL", api_url)
        assert await gateway("plivo", "configure", "--number", "+14155550123") == 2  # no credentials
        assert "PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN" in capsys.readouterr().err
        env.setenv("PLIVO_AUTH_ID", "MAXXXXXXXXXXXXXXXXXX")
        env.setenv("PLIVO_AUTH_TOKEN", "plivo-token")
        env.setenv("PUBLIC_URL", "https://voice.example.com")
        assert await gateway("plivo", "configure", "--number", "+14155550123") == 0
        first = capsys.readouterr()
        assert await gateway("plivo", "configure", "--number", "14155550123") == 0  # the same application
        assert await gateway("plivo", "configure", "--number", "+14155559999") == 2
        unknown = capsys.readouterr()

    (application,) = api.applications.values()
    assert application["answer_url"] == "https://voice.example.com/plivo/answer"
    assert application["answer_method"] == "POST"
    assert api.numbers["14155550123"]["app_id"] == application["app_id"]
    assert "made" in first.out
    assert "+14155559999 is not a number of this account" in unknown.err
