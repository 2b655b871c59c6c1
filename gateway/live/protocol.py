"""Gemini Live protocol core: build client messages, parse server messages. No I/O.

Follows Google's Live API WebSockets reference (https://ai.google.dev/api/live). The server's parser is
protobuf JSON, so we send camelCase and accept both spellings back; the server sends JSON in binary frames, so
parsing takes bytes or str.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import pybase64

from gateway.wire import ProtocolError, base64_text, json_value

DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
API_HOST = "wss://generativelanguage.googleapis.com"
LIVE_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"

# Where the Live API is served: the Gemini Developer API (an API key) or Vertex AI, now also called the Gemini
# Enterprise Agent Platform (OAuth bearer tokens, a project and a location). Model names, and what a model
# takes, differ between the two (docs/live-models.md).
Platform = Literal["developer", "vertex"]
PLATFORMS: tuple[Platform, ...] = ("developer", "vertex")
# The default per platform: one that takes both proactive audio and affective dialog there (and lets either be
# turned off), with the immediate barge-in the gateway's playout is built around.
DEFAULT_MODELS: dict[Platform, str] = {
    "developer": DEFAULT_MODEL,
    "vertex": "gemini-live-2.5-flash-native-audio",
}
VERTEX_HOST = "wss://{location}-aiplatform.googleapis.com"
VERTEX_GLOBAL_HOST = "wss://aiplatform.googleapis.com"  # location "global"
VERTEX_PATH = "/ws/google.cloud.aiplatform.{version}.LlmBidiService/BidiGenerateContent"
VERTEX_API_VERSION = "v1beta1"  # what google-genai dials for Live on Vertex


def vertex_url(location: str, version: str = VERTEX_API_VERSION) -> str:
    host = VERTEX_GLOBAL_HOST if location == "global" else VERTEX_HOST.format(location=location)
    return host + VERTEX_PATH.format(version=version)


class LiveProtocolError(ValueError):
    """A server message we cannot understand."""


class LiveConfigError(ValueError):
    """A setting the chosen model or the Live API cannot take; says what would work."""


# --- model capabilities ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelCapabilities:
    """What a Live model family accepts, so `build_setup` leaves out the fields it would reject (`known` is
    False for a model not in the table: everything configured is sent and the server decides)."""

    family: str
    affective_dialog: bool
    proactive_audio: Literal["optional", "always", "no"]
    native_audio: bool
    # 3.x models take clientContent only to seed history; mid-session it is a 1007 close.
    client_content_mid_session: bool = True
    known: bool = True
    # On without a field, and cannot be turned off (3.8 Live on Vertex: "default-enabled").
    affective_always: bool = False
    # `generationConfig.thinkingConfig`: none, `thinkingBudget` (2.5 native audio) or `thinkingLevel` (3.x).
    thinking: Literal["none", "budget", "level"] = "none"
    # Which function `behavior` the model takes: synchronous only (the field is never sent), both, or
    # asynchronous only; and what it does for a declaration that says nothing.
    tool_behaviors: Literal["blocking", "both", "non_blocking"] = "blocking"
    default_behavior: Literal["BLOCKING", "NON_BLOCKING"] = "BLOCKING"
    # `historyConfig.initialHistoryInClientContent`: history seeded with clientContent before the first turn.
    history_in_client_content: bool = False
    platform: Platform = "developer"
    retired: str = ""  # shut down: since when, and what to use instead

    @property
    def non_blocking_tools(self) -> bool:
        return self.tool_behaviors != "blocking"


_NATIVE = ModelCapabilities(
    "gemini-2.5 native audio", True, "optional", True, thinking="budget", tool_behaviors="both"
)
_HALF_CASCADE = ModelCapabilities(
    "half-cascade", False, "no", False, retired="shut down on 2025-12-09; use " + DEFAULT_MODEL
)
_LIVE_31 = ModelCapabilities(
    "gemini-3.1 live",
    False,
    "no",
    True,
    client_content_mid_session=False,
    thinking="level",
    history_in_client_content=True,
)
# 3.8 Live, Developer API (model page, "Migrating from Gemini 3.1 Flash Live", September 2026): affective
# dialog removed, proactive audio always on, no thinking configuration, tools NON_BLOCKING by default,
# clientContent with roles through the whole session.
_LIVE_38 = ModelCapabilities(
    "gemini-3.8 live",
    False,
    "always",
    True,
    thinking="none",
    tool_behaviors="both",
    default_behavior="NON_BLOCKING",
)
_LIVE_38_THINKING = ModelCapabilities(
    "gemini-3.8 live extended thinking",
    False,
    "always",
    True,
    thinking="level",
    tool_behaviors="non_blocking",
    default_behavior="NON_BLOCKING",
)
_CAPABILITIES: tuple[tuple[re.Pattern[str], ModelCapabilities], ...] = (
    (re.compile(r"gemini-2\.5-flash-native-audio-"), _NATIVE),
    (re.compile(r"gemini-2\.5-flash-preview-native-audio-dialog"), _NATIVE),
    (re.compile(r"gemini-2\.5-flash-exp-native-audio-thinking-dialog"), _NATIVE),
    (re.compile(r"gemini-live-2\.5-flash-preview$|gemini-2\.0-flash-live-001"), _HALF_CASCADE),
    (re.compile(r"gemini-3\.1-flash-live"), _LIVE_31),
    (re.compile(r"gemini-3\.8-live-extended-thinking"), _LIVE_38_THINKING),
    (re.compile(r"gemini-3\.8-live$"), _LIVE_38),
)
# Vertex AI names its models differently (a Developer API name there is a 1008 close), and 3.8 Live differs:
# its Vertex guide has affective dialog and proactive audio on by default (the Developer API removed affective
# dialog). Only what the Vertex model pages list is here.
_VERTEX_CAPABILITIES: tuple[tuple[re.Pattern[str], ModelCapabilities], ...] = (
    (
        re.compile(r"gemini-live-2\.5-flash-native-audio$|gemini-live-2\.5-flash-preview-native-audio-"),
        dataclasses.replace(_NATIVE, platform="vertex"),
    ),
    (
        re.compile(r"gemini-3\.8-live$"),
        dataclasses.replace(_LIVE_38, affective_always=True, platform="vertex"),
    ),
)


# Models the table above covers, by name (the local backend serves the same ones): what start-up suggests
# when GEMINI_MODEL is not one of them.
KNOWN_MODELS = (
    "gemini-2.5-flash-native-audio-preview-12-2025",
    "gemini-2.5-flash-native-audio-preview-09-2025",
    "gemini-2.5-flash-native-audio-latest",
    "gemini-2.5-flash-exp-native-audio-thinking-dialog",
    "gemini-3.1-flash-live-preview",
    "gemini-3.8-live",
    "gemini-3.8-live-extended-thinking",
)
KNOWN_VERTEX_MODELS = (
    "gemini-live-2.5-flash-native-audio",
    "gemini-live-2.5-flash-preview-native-audio-09-2025",
    "gemini-3.8-live",
)
MODELS_BY_PLATFORM: dict[Platform, tuple[str, ...]] = {
    "developer": KNOWN_MODELS,
    "vertex": KNOWN_VERTEX_MODELS,
}


def model_id(model: str) -> str:
    """The bare model id of any spelling: `models/x`, `publishers/google/models/x`, a full Vertex path."""
    return model.rsplit("/", 1)[-1]


def model_capabilities(model: str, platform: Platform = "developer") -> ModelCapabilities:
    name = model_id(model) if platform == "vertex" else model.removeprefix("models/")
    for pattern, caps in _VERTEX_CAPABILITIES if platform == "vertex" else _CAPABILITIES:
        if pattern.match(name):
            return caps
    # Unknown: send what was configured and let the server decide (the caller is warned).
    return ModelCapabilities(
        "unknown",
        True,
        "optional",
        True,
        known=False,
        thinking="level",
        tool_behaviors="both",
        platform=platform,
    )


def check_model(model: str, platform: Platform, *, unlisted_ok: bool = False) -> ModelCapabilities:
    """The model's capabilities on `platform`, or a LiveConfigError saying what would work: a retired model, a
    name of the other platform (a 1008 close), or an unknown one (unless `unlisted_ok`)."""
    caps = model_capabilities(model, platform)
    listed = ", ".join(MODELS_BY_PLATFORM[platform])
    if caps.retired:
        raise LiveConfigError(f"GEMINI_MODEL={model!r} was {caps.retired}")
    if caps.known:
        return caps
    other: Platform = "vertex" if platform == "developer" else "developer"
    if model_capabilities(model, other).known:
        where = {"developer": "the Gemini Developer API", "vertex": "Vertex AI"}
        raise LiveConfigError(
            f"GEMINI_MODEL={model!r} is a model name of {where[other]}, not of {where[platform]} "
            f"(GEMINI_PLATFORM={platform}); use one of: {listed} (the default is {DEFAULT_MODELS[platform]})"
        )
    if not unlisted_ok:
        raise LiveConfigError(
            f"GEMINI_MODEL={model!r} is not a Live model this gateway knows on {platform}; use one of: "
            f"{listed} (the default is {DEFAULT_MODELS[platform]}). For a Live model newer than this "
            "release, also set GEMINI_MODEL_UNLISTED=true: every configured field is then sent as it is"
        )
    return caps


def models_with(platform: Platform, test: Callable[[ModelCapabilities], bool]) -> str:
    """The listed models of `platform` whose capabilities pass `test`, for an error message."""
    names = [m for m in MODELS_BY_PLATFORM[platform] if test(model_capabilities(m, platform))]
    return ", ".join(names) or "none on this platform"


# BCP-47 codes the Live API takes; those marked * in the reference are not offered with native audio.
LANGUAGES = frozenset(
    "de-DE en-AU en-GB en-IN en-US es-US fr-FR hi-IN pt-BR ar-XA es-ES fr-CA id-ID it-IT ja-JP tr-TR vi-VN "
    "bn-IN gu-IN kn-IN mr-IN ml-IN ta-IN te-IN nl-NL ko-KR cmn-CN pl-PL ru-RU th-TH".split()
)
NOT_NATIVE_AUDIO_LANGUAGES = frozenset("en-AU en-GB es-ES fr-CA gu-IN kn-IN ml-IN cmn-CN".split())


def check_language(language: str, caps: ModelCapabilities) -> None:
    if language not in LANGUAGES:
        raise LiveConfigError(
            f"AGENT_LANGUAGE={language!r} is not a Live API language; "
            f"use one of: {', '.join(sorted(LANGUAGES))}"
        )
    if caps.native_audio and language in NOT_NATIVE_AUDIO_LANGUAGES:
        ok = sorted(LANGUAGES - NOT_NATIVE_AUDIO_LANGUAGES)
        raise LiveConfigError(
            f"AGENT_LANGUAGE={language!r} is not offered with native-audio models ({caps.family}); "
            f"use one of: {', '.join(ok)}, or a half-cascade model"
        )


# The prebuilt voices (`speechConfig.voiceConfig.prebuiltVoiceConfig.voiceName`): the 30 Chirp 3 HD voices
# Google's Live API configuration page lists ("Specify a response voice",
# https://firebase.google.com/docs/ai-logic/live-api/configuration; demos at
# https://cloud.google.com/text-to-speech/docs/chirp3-hd). Names are case-sensitive.
VOICES = frozenset(
    "Zephyr Kore Orus Autonoe Umbriel Erinome Laomedeia Schedar Achird Sadachbia "
    "Puck Fenrir Aoede Enceladus Algieba Algenib Achernar Gacrux Zubenelgenubi Sadaltager "
    "Charon Leda Callirrhoe Iapetus Despina Rasalgethi Alnilam Pulcherrima Vindemiatrix Sulafat".split()
)


def check_voice(voice: str) -> None:
    if voice in VOICES:
        return
    same = [v for v in VOICES if v.lower() == voice.strip().lower()]
    hint = f"did you mean {same[0]!r}? " if same else ""
    raise LiveConfigError(
        f"AGENT_VOICE={voice!r} is not a Live API voice; {hint}use one of: {', '.join(sorted(VOICES))}"
    )


# --- setup ----------------------------------------------------------------------------------------------

START_SENSITIVITY = {"high": "START_SENSITIVITY_HIGH", "low": "START_SENSITIVITY_LOW"}
END_SENSITIVITY = {"high": "END_SENSITIVITY_HIGH", "low": "END_SENSITIVITY_LOW"}


@dataclass(frozen=True)
class LiveConfig:
    """What the agent is: the inputs to `setup`."""

    model: str = DEFAULT_MODEL
    voice: str = "Kore"
    language: str = "en-US"
    instructions: str = ""
    proactive_audio: bool = True
    affective_dialog: bool = True
    input_transcription: bool = True
    output_transcription: bool = True
    vad_start_sensitivity: str = "high"
    vad_end_sensitivity: str = "low"
    vad_prefix_padding_ms: int = 20
    vad_silence_ms: int = 500
    compression_trigger_tokens: int = 25600
    compression_target_tokens: int = 12800
    tools: tuple[dict[str, Any], ...] = ()
    temperature: float | None = None
    # TURN_DETECTION: "server" (Live's automatic activity detection) or "local" (it is disabled in the setup,
    # and the gateway marks the caller's speech with activityStart/activityEnd; see gateway.call.turns).
    turn_detection: str = "server"
    # Where Live is served, and on Vertex the project and location the model path names.
    platform: Platform = "developer"
    project: str = ""
    location: str = ""
    # `thinkingConfig`: a level ("low", "medium", "high") for models that take thinkingLevel, a budget in
    # tokens (-1 dynamic, 0 off) for those that take thinkingBudget; unset: the model's own default.
    thinking_level: str = ""
    thinking_budget: int | None = None
    # Vertex only: the server then says which client message each handle covers
    # (`lastConsumedClientMessageIndex`), so a switch replays exactly what it lacks.
    transparent_resumption: bool = False

    @property
    def caps(self) -> ModelCapabilities:
        return model_capabilities(self.model, self.platform)

    def model_path(self) -> str:
        """The `setup.model` value: `models/{id}` on the Developer API; on Vertex the full resource name
        `projects/{p}/locations/{l}/publishers/google/models/{id}` (as google-genai builds it)."""
        if self.platform == "vertex":
            if self.model.startswith("projects/"):
                return self.model
            where = f"projects/{self.project}/locations/{self.location}"
            return f"{where}/publishers/google/models/{model_id(self.model)}"
        return self.model if self.model.startswith("models/") else f"models/{self.model}"

    def validate(self) -> ModelCapabilities:
        """Check everything that can be checked before dialling; returns the model's capabilities."""
        caps = model_capabilities(self.model, self.platform)
        self._check_platform_features(caps)
        check_language(self.language, caps)
        check_voice(self.voice)
        if self.vad_start_sensitivity not in START_SENSITIVITY:
            raise LiveConfigError(f"VAD start sensitivity must be one of {sorted(START_SENSITIVITY)}")
        if self.vad_end_sensitivity not in END_SENSITIVITY:
            raise LiveConfigError(f"VAD end sensitivity must be one of {sorted(END_SENSITIVITY)}")
        if not 0 < self.compression_target_tokens < self.compression_trigger_tokens:
            raise LiveConfigError(
                "context window compression needs 0 < LIVE_COMPRESSION_TARGET_TOKENS < "
                "LIVE_COMPRESSION_TRIGGER_TOKENS (defaults 12800 and 25600)"
            )
        if self.turn_detection not in ("server", "local"):
            raise LiveConfigError(f"TURN_DETECTION={self.turn_detection!r} must be server or local")
        if caps.proactive_audio == "always" and not self.proactive_audio:
            raise LiveConfigError(f"{self.model} always uses proactive audio; it cannot be turned off")
        return caps

    def _check_platform_features(self, caps: ModelCapabilities) -> None:
        """A setting this model cannot take on this platform is an error naming what would work (sent anyway,
        it would be a 1007 close on the first call)."""
        where = f"{self.model} on {self.platform}"
        if caps.proactive_audio == "no" and self.proactive_audio:
            ok = models_with(self.platform, lambda c: c.proactive_audio != "no")
            raise LiveConfigError(
                f"{where} does not take proactive audio: set AGENT_PROACTIVE_AUDIO=false, or use one of: {ok}"
            )
        if self.affective_dialog and not (caps.affective_dialog or caps.affective_always):
            ok = models_with(self.platform, lambda c: c.affective_dialog or c.affective_always)
            raise LiveConfigError(
                f"{where} does not take affective dialog: set AGENT_AFFECTIVE_DIALOG=false, "
                f"or use one of: {ok}"
            )
        if caps.affective_always and not self.affective_dialog:
            ok = models_with(self.platform, lambda c: c.affective_dialog)
            raise LiveConfigError(f"{where} always uses affective dialog; to turn it off use one of: {ok}")
        if self.thinking_level:
            if self.thinking_level not in THINKING_LEVELS:
                raise LiveConfigError(
                    f"LIVE_THINKING_LEVEL={self.thinking_level!r} must be one of {', '.join(THINKING_LEVELS)}"
                )
            if caps.thinking != "level":
                hint = "; it takes LIVE_THINKING_BUDGET" if caps.thinking == "budget" else ""
                ok = models_with(self.platform, lambda c: c.thinking == "level")
                raise LiveConfigError(
                    f"{where} takes no thinking level{hint}: unset LIVE_THINKING_LEVEL, or use one of: {ok}"
                )
        if self.thinking_budget is not None:
            if self.thinking_budget < -1:
                raise LiveConfigError(
                    f"LIVE_THINKING_BUDGET={self.thinking_budget} must be -1 (dynamic), 0 (off) or a number "
                    "of tokens"
                )
            if caps.thinking != "budget":
                hint = "; it takes LIVE_THINKING_LEVEL" if caps.thinking == "level" else ""
                ok = models_with(self.platform, lambda c: c.thinking == "budget")
                raise LiveConfigError(
                    f"{where} takes no thinking budget{hint}: unset LIVE_THINKING_BUDGET, or use one of: {ok}"
                )
        if self.transparent_resumption and self.platform != "vertex":
            raise LiveConfigError(
                "transparent session resumption (LIVE_TRANSPARENT_RESUMPTION) is offered on Vertex AI only: "
                "set GEMINI_PLATFORM=vertex, or leave it off"
            )
        if (
            self.platform == "vertex"
            and not (self.project and self.location)
            and not self.model.startswith("projects/")
        ):
            raise LiveConfigError("Vertex AI needs GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION")
        for decl in self.tools:
            behavior = decl.get("behavior")
            name = decl.get("name", "?")
            if behavior not in (None, "BLOCKING", "NON_BLOCKING"):
                raise LiveConfigError(f"tool {name}: behavior must be blocking or non_blocking")
            if behavior == "NON_BLOCKING" and caps.tool_behaviors == "blocking":
                ok = models_with(self.platform, lambda c: c.non_blocking_tools)
                raise LiveConfigError(
                    f"tool {name} is non_blocking, and {where} calls functions synchronously only: "
                    f"make it blocking, or use one of: {ok}"
                )
            if behavior == "BLOCKING" and caps.tool_behaviors == "non_blocking":
                ok = models_with(self.platform, lambda c: c.tool_behaviors != "non_blocking")
                raise LiveConfigError(
                    f"tool {name} is blocking, and {where} calls functions asynchronously only: "
                    f"make it non_blocking, or use one of: {ok}"
                )

    def tool_behavior(self, name: str) -> Literal["BLOCKING", "NON_BLOCKING"]:
        """How the model runs the tool called `name`: as declared, else the model's default."""
        caps = self.caps
        if caps.tool_behaviors == "blocking":
            return "BLOCKING"
        for decl in self.tools:
            if decl.get("name") == name and decl.get("behavior") in ("BLOCKING", "NON_BLOCKING"):
                return decl["behavior"]  # type: ignore[no-any-return]
        return caps.default_behavior


THINKING_LEVELS = ("minimal", "low", "medium", "high")
# FunctionResponse.scheduling for a non-blocking tool's answer: speak it at once (interrupting), once the
# agent is idle, or add it to the context without a word.
SCHEDULINGS = {"interrupt": "INTERRUPT", "when_idle": "WHEN_IDLE", "silent": "SILENT"}


def build_setup(config: LiveConfig, resumption_handle: str | None = None) -> dict[str, Any]:
    """The `setup` message for this config, leaving out every field the model would reject."""
    caps = model_capabilities(config.model, config.platform)
    model = config.model_path()
    generation: dict[str, Any] = {
        "responseModalities": ["AUDIO"],
        "speechConfig": {
            "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": config.voice}},
            "languageCode": config.language,
        },
    }
    if config.temperature is not None:
        generation["temperature"] = config.temperature
    if config.affective_dialog and caps.affective_dialog:
        generation["enableAffectiveDialog"] = True
    if thinking := _thinking_config(config, caps):
        generation["thinkingConfig"] = thinking
    setup: dict[str, Any] = {"model": model, "generationConfig": generation}
    if config.instructions:
        setup["systemInstruction"] = {"parts": [{"text": config.instructions}]}
    if config.tools:
        setup["tools"] = [{"functionDeclarations": [_declaration(d, caps) for d in config.tools]}]
    setup["realtimeInputConfig"] = {
        "automaticActivityDetection": {
            "disabled": False,
            "startOfSpeechSensitivity": START_SENSITIVITY[config.vad_start_sensitivity],
            "endOfSpeechSensitivity": END_SENSITIVITY[config.vad_end_sensitivity],
            "prefixPaddingMs": config.vad_prefix_padding_ms,
            "silenceDurationMs": config.vad_silence_ms,
        },
        "activityHandling": "START_OF_ACTIVITY_INTERRUPTS",
    }
    if config.turn_detection == "local":  # the gateway sends activityStart/activityEnd instead
        setup["realtimeInputConfig"]["automaticActivityDetection"] = {"disabled": True}
    if config.input_transcription:
        setup["inputAudioTranscription"] = {}
    if config.output_transcription:
        setup["outputAudioTranscription"] = {}
    setup["sessionResumption"] = {"handle": resumption_handle} if resumption_handle else {}
    if config.transparent_resumption and config.platform == "vertex":
        setup["sessionResumption"]["transparent"] = True
    setup["contextWindowCompression"] = {
        "triggerTokens": config.compression_trigger_tokens,
        "slidingWindow": {"targetTokens": config.compression_target_tokens},
    }
    if caps.proactive_audio == "optional" and config.proactive_audio:
        setup["proactivity"] = {"proactiveAudio": True}
    return {"setup": setup}


def _thinking_config(config: LiveConfig, caps: ModelCapabilities) -> dict[str, Any]:
    if config.thinking_level and caps.thinking == "level":
        return {"thinkingLevel": config.thinking_level.upper()}
    if config.thinking_budget is not None and caps.thinking == "budget":
        return {"thinkingBudget": config.thinking_budget}
    return {}


def _declaration(decl: dict[str, Any], caps: ModelCapabilities) -> dict[str, Any]:
    """A function declaration as this model takes it: `behavior` always spelled out for a model that takes the
    field (3.8 changed the default to NON_BLOCKING, so an unstated one would change with the model), and
    never sent to one that calls functions synchronously only."""
    out = {k: v for k, v in decl.items() if k != "behavior"}
    if caps.non_blocking_tools:
        out["behavior"] = decl.get("behavior") or caps.default_behavior
    return out


# --- client messages ------------------------------------------------------------------------------------


def audio_message(pcm: bytes, rate: int) -> str:
    data = base64_text(pcm)
    # Hand-built: 50 of these a second per call, and json.dumps of the base64 string costs more than this.
    return f'{{"realtimeInput":{{"audio":{{"data":"{data}","mimeType":"audio/pcm;rate={rate}"}}}}}}'


def audio_stream_end_message() -> str:
    """The caller's audio paused (automatic activity detection only: never sent with it disabled)."""
    return '{"realtimeInput":{"audioStreamEnd":true}}'


def activity_start_message() -> str:
    """The caller started speaking (automatic activity detection disabled): Live interrupts the agent."""
    return '{"realtimeInput":{"activityStart":{}}}'


def activity_end_message() -> str:
    """The caller's turn is over (automatic activity detection disabled): Live answers it."""
    return '{"realtimeInput":{"activityEnd":{}}}'


def text_input_message(text: str) -> str:
    return json.dumps({"realtimeInput": {"text": text}})


def client_turn_message(text: str, turn_complete: bool = True) -> str:
    return json.dumps(
        {
            "clientContent": {
                "turns": [{"role": "user", "parts": [{"text": text}]}],
                "turnComplete": turn_complete,
            }
        }
    )


def tool_response_message(responses: list[dict[str, Any]]) -> str:
    return json.dumps({"toolResponse": {"functionResponses": responses}})


# --- server messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupComplete:
    """`setupComplete`: the session is set up and takes input."""


@dataclass(slots=True)  # not frozen: the hot path, and frozen __init__ costs a setattr per field
class AgentAudio:
    """A chunk of the agent's speech (`modelTurn` `inlineData`): PCM16LE mono at `rate`, 24 kHz from Live."""

    pcm: bytes
    rate: int = 24000


@dataclass(frozen=True, slots=True)
class AgentText:
    """A text part of the agent's turn (thought parts are left out)."""

    text: str


@dataclass(frozen=True, slots=True)
class InputTranscript:
    """`inputTranscription`: a piece of what Live heard the caller say (no fixed order relative to audio)."""

    text: str


@dataclass(frozen=True, slots=True)
class OutputTranscript:
    """`outputTranscription`: a piece of what the agent is saying."""

    text: str


@dataclass(frozen=True, slots=True)
class Interrupted:
    """`interrupted`: the caller talked over the agent; Live dropped the rest of the turn, whose
    `turnComplete` follows. Playout must be cleared at once."""


@dataclass(frozen=True, slots=True)
class GenerationComplete:
    """`generationComplete`: the model has finished generating the turn (its audio may still be playing out).
    Not sent for an interrupted turn."""


@dataclass(frozen=True, slots=True)
class TurnComplete:
    """`turnComplete`: the agent's turn is over (after `interrupted` too). `reason` is `turnCompleteReason`
    when the server gives one (NEED_MORE_INPUT; or a refusal: RESPONSE_REJECTED, PROHIBITED_INPUT_CONTENT,
    MALFORMED_FUNCTION_CALL, ...)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class InterimInputTranscript:
    """`interimInputTranscription`: a low-latency, provisional transcription while the caller speaks (not
    for the record: the final `inputTranscription` follows); early evidence that the caller is talking."""

    text: str


@dataclass(frozen=True, slots=True)
class WaitingForInput:
    """`waitingForInput`: the model is not generating because it expects the caller to go on talking."""


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """One function call of a `toolCall`: answer it with a `toolResponse` carrying its `id`."""

    id: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """`toolCall`: the function calls the model wants answered, possibly several at once."""

    calls: tuple[FunctionCall, ...]


@dataclass(frozen=True, slots=True)
class ToolCallCancellation:
    """`toolCallCancellation`: the calls with these ids were cancelled (by an interruption); their answers are
    no longer wanted."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GoAway:
    """`goAway`: the server will close this connection in `time_left_s`; switch to a new one before then with
    the latest resumable handle."""

    time_left_s: float


@dataclass(frozen=True, slots=True)
class ResumptionUpdate:
    """`sessionResumptionUpdate`: a new handle to resume the session from, usable when `resumable`."""

    handle: str
    resumable: bool
    # Transparent resumption (Vertex AI): the last client message of this connection the handle covers.
    consumed_index: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """`usageMetadata`: the tokens one message reports (the call adds them up); `by_modality` is keyed
    `prompt_<modality>` and `response_<modality>`."""

    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0
    by_modality: dict[str, int] = field(default_factory=dict)


LiveEvent = (
    SetupComplete
    | AgentAudio
    | AgentText
    | InputTranscript
    | OutputTranscript
    | Interrupted
    | GenerationComplete
    | TurnComplete
    | InterimInputTranscript
    | WaitingForInput
    | ToolCall
    | ToolCallCancellation
    | GoAway
    | ResumptionUpdate
    | Usage
)


@cache
def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _get(obj: dict[str, Any], camel: str) -> Any:
    """A field by its camelCase name, or its snake_case twin (protobuf JSON accepts both)."""
    value = obj.get(camel)
    if value is None:
        value = obj.get(_snake(camel))
    return value


def _decode_b64(data: str) -> bytes:
    padded = data + "=" * (-len(data) % 4)
    altchars = b"-_" if ("-" in data or "_" in data) else None
    if altchars is None:  # the standard alphabet; pybase64 warns about a mixed one, which the stdlib reads
        try:
            return pybase64.b64decode(padded, validate=True)  # SIMD: audio, 25 a second
        except (binascii.Error, ValueError):
            pass  # the stricter of the two: the standard library has the last word
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise LiveProtocolError("inlineData is not valid base64") from None


def parse_duration(value: Any) -> float:
    """protobuf Duration JSON ("50s", "1.5s") or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            pass
    if isinstance(value, dict):  # {"seconds": 50, "nanos": 0}, as some encoders write it
        return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    raise LiveProtocolError(f"bad duration {value!r}")


def _rate(mime: str) -> int:
    match = re.search(r"rate=(\d+)", mime)
    return int(match.group(1)) if match else 24000


def _usage(meta: dict[str, Any]) -> Usage:
    by_modality: dict[str, int] = {}
    for key in ("promptTokensDetails", "responseTokensDetails", "candidatesTokensDetails"):
        for item in _get(meta, key) or ():
            direction = "prompt" if key.startswith("prompt") else "response"
            name = f"{direction}_{str(item.get('modality', 'unknown')).lower()}"
            by_modality[name] = by_modality.get(name, 0) + int(_get(item, "tokenCount") or 0)
    response = _get(meta, "responseTokenCount")
    if response is None:  # Vertex says candidatesTokenCount
        response = _get(meta, "candidatesTokenCount")
    return Usage(
        prompt_tokens=int(_get(meta, "promptTokenCount") or 0),
        response_tokens=int(response or 0),
        total_tokens=int(_get(meta, "totalTokenCount") or 0),
        by_modality=by_modality,
    )


def _server_content(content: dict[str, Any]) -> list[LiveEvent]:
    events: list[LiveEvent] = []
    if _get(content, "interrupted"):
        events.append(Interrupted())
    turn = _get(content, "modelTurn")
    if isinstance(turn, dict):
        for part in turn.get("parts") or ():
            inline = _get(part, "inlineData")
            if isinstance(inline, dict):
                mime = str(_get(inline, "mimeType") or "")
                if mime.startswith("audio/"):
                    events.append(AgentAudio(_decode_b64(str(inline.get("data") or "")), _rate(mime)))
            elif part.get("text") and not part.get("thought"):
                events.append(AgentText(str(part["text"])))
    for key, kind in (("inputTranscription", InputTranscript), ("outputTranscription", OutputTranscript)):
        transcript = _get(content, key)
        if isinstance(transcript, dict) and transcript.get("text"):
            events.append(kind(str(transcript["text"])))
    interim = _get(content, "interimInputTranscription")
    if isinstance(interim, dict) and interim.get("text"):
        events.append(InterimInputTranscript(str(interim["text"])))
    if _get(content, "waitingForInput"):
        events.append(WaitingForInput())
    if _get(content, "generationComplete"):
        events.append(GenerationComplete())
    if _get(content, "turnComplete"):
        reason = str(_get(content, "turnCompleteReason") or "")
        events.append(TurnComplete("" if reason == "TURN_COMPLETE_REASON_UNSPECIFIED" else reason))
    return events


def parse_server_message(data: str | bytes) -> list[LiveEvent]:
    """One server message -> the events it carries, in the order the gateway should act on them."""
    try:
        msg = json_value(data)
    except ProtocolError:
        raise LiveProtocolError("malformed JSON from Live") from None
    if not isinstance(msg, dict):
        raise LiveProtocolError("Live message is not an object")
    try:
        events: list[LiveEvent] = []
        if _get(msg, "setupComplete") is not None:
            events.append(SetupComplete())
        content = _get(msg, "serverContent")
        if isinstance(content, dict):
            events.extend(_server_content(content))
        tool_call = _get(msg, "toolCall")
        if isinstance(tool_call, dict):
            calls = tuple(
                FunctionCall(str(c.get("id", "")), str(c.get("name", "")), dict(c.get("args") or {}))
                for c in _get(tool_call, "functionCalls") or ()
            )
            events.append(ToolCall(calls))
        cancellation = _get(msg, "toolCallCancellation")
        if isinstance(cancellation, dict):
            events.append(ToolCallCancellation(tuple(str(i) for i in cancellation.get("ids") or ())))
        go_away = _get(msg, "goAway")
        if isinstance(go_away, dict):
            events.append(GoAway(parse_duration(_get(go_away, "timeLeft") or 0)))
        update = _get(msg, "sessionResumptionUpdate")
        if isinstance(update, dict):
            consumed = _get(update, "lastConsumedClientMessageIndex")  # int64: a string in protobuf JSON
            events.append(
                ResumptionUpdate(
                    str(_get(update, "newHandle") or ""),
                    bool(update.get("resumable")),
                    int(consumed) if consumed is not None else None,
                )
            )
        meta = _get(msg, "usageMetadata")
        if isinstance(meta, dict):
            events.append(_usage(meta))
    except (AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, LiveProtocolError):
            raise
        raise LiveProtocolError(f"malformed Live message: {exc}") from None
    return events
