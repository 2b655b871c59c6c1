import pytest

from gateway.config import (
    DEFAULT_FAILURE_MESSAGE,
    DEFAULT_GREETING,
    ConfigError,
    load_database_url,
    load_settings,
    load_twilio_admin_settings,
)
from gateway.live.protocol import API_HOST, DEFAULT_MODEL, KNOWN_MODELS, LIVE_PATH, VOICES

GOOGLE = API_HOST + LIVE_PATH.format(version="v1alpha")


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
        # the OS takes a port modulo 65536: 99999 would listen on 34463
        ({"PORT": "99999"}, "PORT=99999 is not a TCP port: use 1 to 65535"),
        ({"PORT": "0"}, "PORT=0 is not a TCP port"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL='verbose' must be one of debug, info, warning, error"),
        ({"GEMINI_MODEL": "nonsense"}, f"GEMINI_MODEL='nonsense' is not a Live model.*{DEFAULT_MODEL}"),
        ({"GEMINI_MODEL": "nonsense"}, "GEMINI_MODEL_UNLISTED=true"),
        ({"GEMINI_LIVE_URL": "wss://generativelanguage.googleapis.com"}, "has no path.*BidiGenerateContent"),
        ({"GEMINI_LIVE_URL": "ws://127.0.0.1:8765/"}, "has no path.*live-local"),
        ({"GEMINI_LIVE_URL": "wss://proxy.example.com/live"}, "'/live'.*ending in BidiGenerateContent"),
        ({"GEMINI_LIVE_URL": GOOGLE.replace("v1alpha", "v1beta")}, "v1beta endpoint.*AGENT_PROACTIVE_AUDIO"),
        ({"AGENT_VOICE": "Nonsense"}, "AGENT_VOICE='Nonsense' is not a Live API voice.*Kore.*Zephyr"),
        ({"AGENT_VOICE": "puck"}, "did you mean 'Puck'"),
        ({"BARGE_IN": "sometimes"}, "BARGE_IN='sometimes' must be one of local, server"),
        ({"TURN_DETECTION": "client"}, "TURN_DETECTION='client' must be one of server, local"),
        ({"STALL_TIMEOUT_S": "0.2"}, "STALL_TIMEOUT_S=0.2 must be between 1 and 60"),
        ({"LIVE_QUIET_CHUNK_MS": "30"}, "LIVE_QUIET_CHUNK_MS=30 must be 20, 40, 60, 80 or 100"),
        ({"LIVE_SPEECH_CHUNK_MS": "50"}, "LIVE_SPEECH_CHUNK_MS=50 must be 20, 40, 60, 80 or 100"),
        (
            {"LIVE_SPEECH_CHUNK_MS": "60", "LIVE_QUIET_CHUNK_MS": "40"},
            "LIVE_SPEECH_CHUNK_MS=60 is more than LIVE_QUIET_CHUNK_MS=40",
        ),
    ],
)
def test_bad_settings_fail_with_a_message_that_says_what_works(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env, env_file=None)


def test_a_model_the_table_does_not_know_needs_an_explicit_opt_in():
    assert load_settings({"GEMINI_MODEL": "models/gemini-3.1-flash-live-preview"}, env_file=None)
    env = {"GEMINI_MODEL": "gemini-9-live-preview", "GEMINI_MODEL_UNLISTED": "true"}
    assert load_settings(env, env_file=None).live.model == "gemini-9-live-preview"
    for model in KNOWN_MODELS:  # every model the message offers is one start-up takes
        assert load_settings({"GEMINI_MODEL": model}, env_file=None).live.model == model


def test_live_urls_with_a_live_path_are_taken():
    token = {"TWILIO_AUTH_TOKEN": "tok3n-secret"}
    for url in (GOOGLE, "ws://127.0.0.1:8765" + LIVE_PATH.format(version="v1alpha")):
        assert load_settings({"GEMINI_LIVE_URL": url, **token}, env_file=None).live_url() == url
    v1beta = {"GEMINI_LIVE_URL": GOOGLE.replace("v1alpha", "v1beta"), **token}
    off = {"AGENT_PROACTIVE_AUDIO": "false", "AGENT_AFFECTIVE_DIALOG": "false"}
    assert load_settings({**v1beta, **off}, env_file=None)


def test_every_documented_voice_is_taken():
    assert len(VOICES) == 30
    for voice in VOICES:
        assert load_settings({"AGENT_VOICE": voice}, env_file=None).live.voice == voice


def test_commands_read_only_the_settings_they_use(tmp_path):
    # `gateway calls` and `gateway twilio` do not serve: a bad PORT (in the environment or .env) is not theirs
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=abc\nLOG_LEVEL=verbose\nDATABASE_URL=sqlite:///x.db\n")
    with pytest.raises(ConfigError, match=r"PORT|LOG_LEVEL"):
        load_settings({}, env_file=env_file)  # `gateway serve` refuses both
    assert load_database_url({}, env_file=env_file) == "sqlite:///x.db"
    admin = load_twilio_admin_settings({"TWILIO_AUTH_TOKEN": "tok3n-secret"}, env_file=env_file)
    assert admin.auth_token == "tok3n-secret" and "tok3n" not in repr(admin)
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_database_url({"DATABASE_URL": "mysql://x"}, env_file=None)
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        load_twilio_admin_settings({"PUBLIC_URL": "example.com"}, env_file=None)


def test_greeting_can_be_turned_off():
    assert load_settings({"AGENT_GREETING": "none"}, env_file=None).greeting == ""
    assert load_settings({"AGENT_GREETING": "Say hi"}, env_file=None).greeting == "Say hi"


def test_a_paid_model_without_twilio_signatures_needs_explicit_development_mode():
    key = {"GEMINI_API_KEY": "AIzaSECRETSECRETSECRETSECRET"}
    with pytest.raises(ConfigError, match="DEVELOPMENT_MODE=true"):
        load_settings(key, env_file=None)
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        load_settings(
            {"GEMINI_LIVE_URL": GOOGLE.replace("generativelanguage.googleapis", "proxy.example")},
            env_file=None,
        )
    assert load_settings({**key, "DEVELOPMENT_MODE": "true"}, env_file=None).development_mode
    signed = load_settings({**key, "TWILIO_AUTH_TOKEN": "tok3n-secret"}, env_file=None)
    assert not signed.development_mode
    # No key and no Live URL: the offline local backend answers and nothing paid is exposed (said loudly).
    assert load_settings({}, env_file=None).development_mode


@pytest.mark.parametrize(
    ("name", "field", "default"),
    [
        ("AGENT_GREETING", "greeting", DEFAULT_GREETING),
        ("CALL_FAILURE_MESSAGE", "failure_message", DEFAULT_FAILURE_MESSAGE),
    ],
)
def test_an_empty_text_setting_is_its_default_and_none_turns_it_off(name, field, default):
    """As every setting: empty is unset (a blank field of a deploy form must not silence the agent)."""
    assert default and getattr(load_settings({}, env_file=None), field) == default
    assert getattr(load_settings({name: ""}, env_file=None), field) == default
    assert getattr(load_settings({name: "  "}, env_file=None), field) == default
    for off in ("none", "off", "false", "None"):
        assert getattr(load_settings({name: off}, env_file=None), field) == ""
    assert getattr(load_settings({name: "Say hi."}, env_file=None), field) == "Say hi."


def test_caller_audio_goes_two_frames_to_a_message_in_speech_unless_the_quiet_chunk_is_smaller():
    assert (
        load_settings({}, env_file=None).live_speech_chunk_ms,
        load_settings({}, env_file=None).live_quiet_chunk_ms,
    ) == (40, 100)
    every = load_settings({"LIVE_QUIET_CHUNK_MS": "20"}, env_file=None)  # as before the speech chunk: valid
    assert (every.live_speech_chunk_ms, every.live_quiet_chunk_ms) == (20, 20)
    assert load_settings({"LIVE_SPEECH_CHUNK_MS": "20"}, env_file=None).live_speech_chunk_ms == 20
    assert load_settings({"LIVE_SPEECH_CHUNK_MS": ""}, env_file=None).live_speech_chunk_ms == 40


def test_the_chunk_choices_are_the_call_s():
    from gateway import config
    from gateway.call import caller_chunks

    assert config.CHUNK_CHOICES_MS == caller_chunks.CHUNK_CHOICES_MS
    assert config.SPEECH_CHUNK_MS == caller_chunks.SPEECH_CHUNK_MS
