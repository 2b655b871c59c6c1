"""The model capability table and the start-up rules built on it (docs/live-models.md)."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_settings
from gateway.live import protocol as lp


def settings(**env: str):
    return load_settings({"DEVELOPMENT_MODE": "true", **env}, env_file=None)


VERTEX = {"GEMINI_PLATFORM": "vertex", "GOOGLE_CLOUD_PROJECT": "p1", "GOOGLE_CLOUD_LOCATION": "us-central1"}


@pytest.mark.parametrize("platform", lp.PLATFORMS)
def test_the_default_model_takes_proactive_audio_and_affective_dialog_on_its_platform(platform):
    caps = lp.model_capabilities(lp.DEFAULT_MODELS[platform], platform)
    assert caps.known and caps.proactive_audio == "optional" and caps.affective_dialog
    env = VERTEX if platform == "vertex" else {}
    live = settings(**env).live
    assert live.model == lp.DEFAULT_MODELS[platform]
    setup = lp.build_setup(live)["setup"]
    assert setup["proactivity"] == {"proactiveAudio": True}
    assert setup["generationConfig"]["enableAffectiveDialog"] is True


def test_38_live_takes_its_own_defaults_and_refuses_what_it_cannot_take():
    live = settings(GEMINI_MODEL="gemini-3.8-live").live
    assert live.proactive_audio and not live.affective_dialog  # proactive always; affective removed
    setup = lp.build_setup(live)["setup"]
    assert "proactivity" not in setup and "enableAffectiveDialog" not in setup["generationConfig"]
    with pytest.raises(
        ConfigError, match=r"does not take affective dialog.*AGENT_AFFECTIVE_DIALOG=false.*2.5"
    ):
        settings(GEMINI_MODEL="gemini-3.8-live", AGENT_AFFECTIVE_DIALOG="true")
    with pytest.raises(ConfigError, match="always uses proactive audio"):
        settings(GEMINI_MODEL="gemini-3.8-live", AGENT_PROACTIVE_AUDIO="false")
    with pytest.raises(ConfigError, match=r"no thinking level.*gemini-3.8-live-extended-thinking"):
        settings(GEMINI_MODEL="gemini-3.8-live", LIVE_THINKING_LEVEL="high")


def test_38_live_on_vertex_has_affective_dialog_always_on():
    live = settings(**VERTEX, GEMINI_MODEL="gemini-3.8-live").live
    assert live.affective_dialog and live.proactive_audio
    assert "enableAffectiveDialog" not in lp.build_setup(live)["setup"]["generationConfig"]  # on by default
    with pytest.raises(ConfigError, match=r"always uses affective dialog.*gemini-live-2.5"):
        settings(**VERTEX, GEMINI_MODEL="gemini-3.8-live", AGENT_AFFECTIVE_DIALOG="false")


def test_thinking_goes_where_the_model_takes_it():
    live = settings(GEMINI_MODEL="gemini-3.8-live-extended-thinking", LIVE_THINKING_LEVEL="Medium").live
    assert lp.build_setup(live)["setup"]["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "MEDIUM"}
    live = settings(LIVE_THINKING_BUDGET="1024").live
    assert lp.build_setup(live)["setup"]["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}
    assert "thinkingConfig" not in lp.build_setup(settings().live)["setup"]["generationConfig"]
    with pytest.raises(ConfigError, match="no thinking budget; it takes LIVE_THINKING_LEVEL"):
        settings(GEMINI_MODEL="gemini-3.8-live-extended-thinking", LIVE_THINKING_BUDGET="100")
    with pytest.raises(ConfigError, match="no thinking level; it takes LIVE_THINKING_BUDGET"):
        settings(LIVE_THINKING_LEVEL="low")
    with pytest.raises(ConfigError, match="LIVE_THINKING_LEVEL='huge' must be one of"):
        settings(GEMINI_MODEL="gemini-3.8-live-extended-thinking", LIVE_THINKING_LEVEL="huge")


def test_a_model_name_of_the_other_platform_is_refused_with_this_platforms_names():
    with pytest.raises(
        ConfigError, match=r"a model name of the Gemini Developer API.*gemini-live-2.5-flash-native"
    ):
        settings(**VERTEX, GEMINI_MODEL="gemini-2.5-flash-native-audio-preview-12-2025")
    with pytest.raises(ConfigError, match=r"a model name of Vertex AI.*gemini-2.5-flash-native"):
        settings(GEMINI_MODEL="gemini-live-2.5-flash-native-audio")
    with pytest.raises(ConfigError, match="not a Live model this gateway knows on vertex"):
        settings(**VERTEX, GEMINI_MODEL="gemini-9-live")


@pytest.mark.parametrize("model", ["gemini-live-2.5-flash-preview", "gemini-2.0-flash-live-001"])
def test_retired_half_cascade_models_are_refused_with_the_replacement(model):
    with pytest.raises(ConfigError, match=r"shut down on 2025-12-09; use gemini-2.5-flash-native-audio"):
        settings(GEMINI_MODEL=model)


def test_vertex_needs_project_location_and_a_usable_key_file(tmp_path):
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        settings(GEMINI_PLATFORM="vertex")
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_LOCATION"):
        settings(GEMINI_PLATFORM="vertex", GOOGLE_CLOUD_PROJECT="p1")
    with pytest.raises(ConfigError, match="GEMINI_PLATFORM='azure' must be developer"):
        settings(GEMINI_PLATFORM="azure")
    bad = tmp_path / "key.json"
    bad.write_text('{"type": "service_account", "client_email": "a@b"}')
    with pytest.raises(
        ConfigError, match=r"GOOGLE_APPLICATION_CREDENTIALS: .* without private_key, token_uri"
    ):
        settings(**VERTEX, GOOGLE_APPLICATION_CREDENTIALS=str(bad))
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):  # a paid model behind it: signatures needed
        load_settings(VERTEX, env_file=None)


def test_vertex_endpoint_model_path_and_transparent_resumption():
    s = settings(**VERTEX)
    assert s.live_url() == (
        "wss://us-central1-aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/"
        "BidiGenerateContent"
    )
    assert not s.uses_local_backend
    setup = lp.build_setup(s.live, "h1")["setup"]
    assert (
        setup["model"]
        == "projects/p1/locations/us-central1/publishers/google/models/" + lp.DEFAULT_MODELS["vertex"]
    )
    assert setup["sessionResumption"] == {"handle": "h1", "transparent": True}
    assert (
        lp.build_setup(settings(**VERTEX, LIVE_TRANSPARENT_RESUMPTION="false").live)["setup"][
            "sessionResumption"
        ]
        == {}
    )
    with pytest.raises(ConfigError, match="Vertex AI only"):
        settings(LIVE_TRANSPARENT_RESUMPTION="true")
    assert lp.vertex_url("global").startswith("wss://aiplatform.googleapis.com/")


def test_tool_behavior_is_spelled_out_where_the_model_takes_it_and_checked():
    tools = ({"name": "a"}, {"name": "b", "behavior": "NON_BLOCKING"})
    on_38 = lp.LiveConfig(model="gemini-3.8-live", affective_dialog=False, tools=tools)
    decls = lp.build_setup(on_38)["setup"]["tools"][0]["functionDeclarations"]
    assert [d["behavior"] for d in decls] == ["NON_BLOCKING", "NON_BLOCKING"]  # 3.8's default is non-blocking
    assert on_38.tool_behavior("a") == "NON_BLOCKING"
    on_25 = lp.LiveConfig(tools=tools)
    decls = lp.build_setup(on_25)["setup"]["tools"][0]["functionDeclarations"]
    assert [d["behavior"] for d in decls] == ["BLOCKING", "NON_BLOCKING"]
    on_31 = lp.LiveConfig(
        model="gemini-3.1-flash-live-preview", proactive_audio=False, affective_dialog=False, tools=tools[:1]
    )
    assert "behavior" not in lp.build_setup(on_31)["setup"]["tools"][0]["functionDeclarations"][0]
    assert on_31.tool_behavior("a") == "BLOCKING"
    with pytest.raises(lp.LiveConfigError, match="synchronously only: make it blocking, or use one of"):
        lp.LiveConfig(
            model="gemini-3.1-flash-live-preview", proactive_audio=False, affective_dialog=False, tools=tools
        ).validate()
    with pytest.raises(lp.LiveConfigError, match="asynchronously only: make it non_blocking"):
        lp.LiveConfig(
            model="gemini-3.8-live-extended-thinking",
            affective_dialog=False,
            tools=({"name": "c", "behavior": "BLOCKING"},),
        ).validate()


def test_every_listed_model_starts_up_with_its_defaults():
    for platform in lp.PLATFORMS:
        for model in lp.MODELS_BY_PLATFORM[platform]:
            env = VERTEX if platform == "vertex" else {}
            live = settings(**env, GEMINI_MODEL=model).live
            assert live.model == model and live.validate().known
