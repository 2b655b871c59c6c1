"""The carriers' settings: checked at start-up with a one-line error naming the variable; and which carrier
takes unsigned requests (none, once any carrier's signing secret is set)."""

from __future__ import annotations

import base64

import pytest

from gateway.config import ConfigError, load_settings

PUBLIC_KEY = base64.b64encode(bytes(32)).decode()
PAID = {"GEMINI_API_KEY": "AIzaSECRETSECRETSECRETSECRET"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TELNYX_PUBLIC_KEY": "not-a-key"}, "TELNYX_PUBLIC_KEY"),
        ({"TELNYX_PUBLIC_KEY": base64.b64encode(bytes(31)).decode()}, "TELNYX_PUBLIC_KEY"),
        ({"TELNYX_API_BASE_URL": "ftp://api.example"}, "TELNYX_API_BASE_URL"),
        ({"SIGNALWIRE_PROJECT_ID": "p"}, "SIGNALWIRE_API_TOKEN"),
        ({"SIGNALWIRE_API_TOKEN": "t"}, "SIGNALWIRE_PROJECT_ID"),
        ({"SIGNALWIRE_PROJECT_ID": "p", "SIGNALWIRE_API_TOKEN": "t"}, "SIGNALWIRE_SPACE_URL"),
        ({"SIGNALWIRE_SPACE_URL": "ftp://x.signalwire.com"}, "SIGNALWIRE_SPACE_URL"),
    ],
)
def test_a_bad_carrier_setting_stops_start_up_naming_it(env: dict[str, str], variable: str):
    with pytest.raises(ConfigError, match=variable):
        load_settings(env, env_file=None)


def test_carrier_settings_are_read_and_secrets_kept_out_of_repr():
    settings = load_settings(
        {
            "TELNYX_PUBLIC_KEY": PUBLIC_KEY,
            "TELNYX_API_KEY": "KEY-secret",
            "SIGNALWIRE_PROJECT_ID": "proj",
            "SIGNALWIRE_API_TOKEN": "PT-secret",
            "SIGNALWIRE_SPACE_URL": "example.signalwire.com/",
            "SIGNALWIRE_SIGNING_KEY": "PSK-secret",
        },
        env_file=None,
    )
    assert settings.signalwire_space_url == "https://example.signalwire.com"
    assert settings.telnyx_public_key == PUBLIC_KEY and settings.telnyx_api_base_url is None
    assert set(settings.carrier_secrets) == {"KEY-secret", "PT-secret", "PSK-secret"}
    assert not any(secret in repr(settings) for secret in settings.carrier_secrets)
    assert settings.stream_token_secret == "KEY-secret"  # alike on every instance, never the public key


def test_any_carriers_signing_secret_takes_the_gateway_out_of_development_mode():
    with pytest.raises(ConfigError, match="DEVELOPMENT_MODE"):
        load_settings(PAID, env_file=None)
    for secret in ({"TELNYX_PUBLIC_KEY": PUBLIC_KEY}, {"SIGNALWIRE_SIGNING_KEY": "PSK"}):
        settings = load_settings({**PAID, **secret}, env_file=None)
        assert settings.signs_requests and not settings.development_mode
    assert not load_settings({}, env_file=None).signs_requests  # the local backend: unsigned, said loudly
