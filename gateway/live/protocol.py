"""Gemini Live protocol core: build client messages, parse server messages. No I/O.

Follows Google's Live API WebSockets reference (https://ai.google.dev/api/live). The server's parser is
protobuf JSON, so we send camelCase and accept both spellings back; the server sends JSON in binary frames, so
parsing takes bytes or str.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
API_HOST = "wss://generativelanguage.googleapis.com"
LIVE_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"


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


_NATIVE = ModelCapabilities("gemini-2.5 native audio", True, "optional", True)
_CAPABILITIES: tuple[tuple[re.Pattern[str], ModelCapabilities], ...] = (
    (re.compile(r"gemini-2\.5-flash-native-audio-"), _NATIVE),
    (re.compile(r"gemini-2\.5-flash-preview-native-audio-dialog"), _NATIVE),
    (re.compile(r"gemini-2\.5-flash-exp-native-audio-thinking-dialog"), _NATIVE),
    (
        re.compile(r"gemini-live-2\.5-flash-preview|gemini-2\.0-flash-live-001"),
        ModelCapabilities("half-cascade", False, "no", False),
    ),
    (
        re.compile(r"gemini-3\.1-flash-live"),
        ModelCapabilities("gemini-3.1 live", False, "no", True, client_content_mid_session=False),
    ),
    (
        re.compile(r"gemini-3\.8-live"),
        ModelCapabilities("gemini-3.8 live", False, "always", True, client_content_mid_session=False),
    ),
)


# Models the table above covers, by name (the local backend serves the same ones): what start-up suggests
# when GEMINI_MODEL is not one of them.
KNOWN_MODELS = (
    "gemini-2.5-flash-native-audio-preview-12-2025",
    "gemini-2.5-flash-native-audio-preview-09-2025",
    "gemini-2.5-flash-native-audio-latest",
    "gemini-live-2.5-flash-preview",
    "gemini-2.0-flash-live-001",
    "gemini-3.1-flash-live-preview",
    "gemini-3.8-live",
)


def model_capabilities(model: str) -> ModelCapabilities:
    name = model.removeprefix("models/")
    for pattern, caps in _CAPABILITIES:
        if pattern.match(name):
            return caps
    # Unknown: send what was configured and let the server decide (the caller is warned).
    return ModelCapabilities("unknown", True, "optional", True, known=False)


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

    def validate(self) -> ModelCapabilities:
        """Check everything that can be checked before dialling; returns the model's capabilities."""
        caps = model_capabilities(self.model)
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


def build_setup(config: LiveConfig, resumption_handle: str | None = None) -> dict[str, Any]:
    """The `setup` message for this config, leaving out every field the model would reject."""
    caps = model_capabilities(config.model)
    model = config.model if config.model.startswith("models/") else f"models/{config.model}"
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
    setup: dict[str, Any] = {"model": model, "generationConfig": generation}
    if config.instructions:
        setup["systemInstruction"] = {"parts": [{"text": config.instructions}]}
    if config.tools:
        setup["tools"] = [{"functionDeclarations": list(config.tools)}]
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
    setup["contextWindowCompression"] = {
        "triggerTokens": config.compression_trigger_tokens,
        "slidingWindow": {"targetTokens": config.compression_target_tokens},
    }
    if caps.proactive_audio == "optional" and config.proactive_audio:
        setup["proactivity"] = {"proactiveAudio": True}
    return {"setup": setup}


# --- client messages ------------------------------------------------------------------------------------


def audio_message(pcm: bytes, rate: int) -> str:
    data = base64.b64encode(pcm).decode("ascii")
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
    """`turnComplete`: the agent's turn is over (after `interrupted` too)."""


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
    try:
        return base64.b64decode(
            data + "=" * (-len(data) % 4),
            altchars=b"-_" if ("-" in data or "_" in data) else None,
            validate=True,
        )
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
    if _get(content, "generationComplete"):
        events.append(GenerationComplete())
    if _get(content, "turnComplete"):
        events.append(TurnComplete())
    return events


def parse_server_message(data: str | bytes) -> list[LiveEvent]:
    """One server message -> the events it carries, in the order the gateway should act on them."""
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
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
            events.append(
                ResumptionUpdate(str(_get(update, "newHandle") or ""), bool(update.get("resumable")))
            )
        meta = _get(msg, "usageMetadata")
        if isinstance(meta, dict):
            events.append(_usage(meta))
    except (AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, LiveProtocolError):
            raise
        raise LiveProtocolError(f"malformed Live message: {exc}") from None
    return events
