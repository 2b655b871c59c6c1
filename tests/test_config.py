import pytest

from gateway.config import ConfigError, load_settings


def test_defaults_use_the_local_backend_and_the_native_audio_model():
    s = load_settings({}, env_file=None)
    assert s.uses_local_backend
    assert s.port == 8080 and s.live_input_rate == 16000
    assert "native-audio" in s.live.model
    assert s.live_url().startswith("wss://generativelanguage.googleapis.com/ws/")
    assert "v1alpha" in s.live_url()


def test_key_never_goes_into_the_url():
    s = load_settings(
        {"GEMINI_API_KEY": "AIzaSECRETSECRETSECRETSECRET", "TWILIO_AUTH_TOKEN": "tok3n-secret"}, env_file=None
    )
    assert not s.uses_local_backend
    assert "AIza" not in s.live_url()
    assert "AIza" not in repr(s)


def test_env_file_is_read_and_environment_wins(tmp_path):
    env = tmp_path / ".env"
    env.write_text("PORT=9000\nAGENT_VOICE=Puck\n")
    s = load_settings({"PORT": "9100"}, env_file=env)
    assert s.port == 9100 and s.live.voice == "Puck"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENT_LANGUAGE": "en-GB"}, "not offered with native-audio"),
        ({"AGENT_LANGUAGE": "klingon"}, "en-US"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PUBLIC_URL": "example.com"}, "PUBLIC_URL"),
        ({"GEMINI_LIVE_URL": "http://x"}, "ws://"),
        ({"LIVE_INPUT_RATE": "44100"}, "16000"),
        ({"GEMINI_API_VERSION": "v1beta"}, "v1alpha"),
        ({"LIVE_VAD_START_SENSITIVITY": "medium"}, "sensitivity"),
        ({"MAX_CONCURRENT_CALLS": "0"}, "at least 1"),
        ({"MAX_CALL_DURATION_S": "-5"}, "positive"),
        ({"MEDIA_IDLE_TIMEOUT_S": "soon"}, "MEDIA_IDLE_TIMEOUT_S"),
        ({"MAX_MESSAGE_BYTES": "100"}, "4096"),
    ],
)
def test_bad_settings_fail_with_a_message_that_says_what_works(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env, env_file=None)


def test_greeting_can_be_turned_off():
    assert load_settings({"AGENT_GREETING": "none"}, env_file=None).greeting == ""
    assert load_settings({"AGENT_GREETING": "Say hi"}, env_file=None).greeting == "Say hi"


def test_a_paid_model_without_twilio_signatures_needs_explicit_development_mode():
    key = {"GEMINI_API_KEY": "AIzaSECRETSECRETSECRETSECRET"}
    with pytest.raises(ConfigError, match="DEVELOPMENT_MODE=true"):
        load_settings(key, env_file=None)
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        load_settings({"GEMINI_LIVE_URL": "wss://proxy.example.com/live"}, env_file=None)
    assert load_settings({**key, "DEVELOPMENT_MODE": "true"}, env_file=None).development_mode
    signed = load_settings({**key, "TWILIO_AUTH_TOKEN": "tok3n-secret"}, env_file=None)
    assert not signed.development_mode
    # No key and no Live URL: the offline local backend answers and nothing paid is exposed (said loudly).
    assert load_settings({}, env_file=None).development_mode
