"""Server side of the Live protocol as pure functions: parse, validate and build messages, no I/O.

The real service parses client JSON as protobuf JSON, so field names are accepted in camelCase and in
snake_case at every level the schema knows, and unknown fields are errors (close 1007). Free-form
subtrees (function arguments and responses, JSON schemas) are protobuf ``Struct`` values: their keys are
data, never renamed and never validated.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

CLOSE_INVALID = 1007  # invalid payload: bad setup, unknown field, malformed JSON
CLOSE_POLICY = 1008  # model not found, resumption handle not found
CLOSE_INTERNAL = 1011  # deadline after goAway, resume while the old connection is open, internal errors

PATH_TEMPLATE = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
VERSIONS = ("v1alpha", "v1beta")
PATHS = {PATH_TEMPLATE.format(version=v): v for v in VERSIONS}
# Vertex AI's Live path (google-genai dials v1beta1); its "version" here is "vertex": the setup takes the
# Vertex-only fields (sessionResumption.transparent, explicitVadSignal) and the Vertex model names.
VERTEX_PATH_TEMPLATE = "/ws/google.cloud.aiplatform.{version}.LlmBidiService/BidiGenerateContent"
VERTEX = "vertex"
PATHS.update({VERTEX_PATH_TEMPLATE.format(version=v): VERTEX for v in ("v1beta1", "v1")})

OUTPUT_RATE = 24000
INPUT_RATE = 16000
OUTPUT_MIME = f"audio/pcm;rate={OUTPUT_RATE}"


class ProtocolError(Exception):
    """The session must be closed with ``code`` and ``reason`` (what the real service would do)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = truncate_reason(reason)


def truncate_reason(reason: str) -> str:
    """A close reason must fit in 123 bytes of UTF-8 (RFC 6455 control frame limit)."""
    data = reason.encode()
    if len(data) <= 123:
        return reason
    return data[:120].decode(errors="ignore") + "..."


# ---------------------------------------------------------------------------------------------------------
# Models and what they accept (see the capability table in the reference)


@dataclass(frozen=True, slots=True)
class ModelCaps:
    """What a model accepts in `setup` and after it, as the service enforces it (the capability table)."""

    name: str
    affective_dialog: bool  # may send generationConfig.enableAffectiveDialog
    proactivity: str  # "yes": optional, "no": field rejected, "always": on, proactiveAudio false rejected
    audio_only: bool
    media_chunks: bool  # deprecated realtimeInput.mediaChunks still accepted
    client_content_mid_session: bool
    # thinkingConfig form taken ("none", "budget", "level"), function `behavior`s taken ("blocking":
    # synchronous only, "both", "non_blocking": asynchronous only), and the default for an unstated one.
    thinking: str = "none"
    tool_behaviors: str = "blocking"
    default_behavior: str = "BLOCKING"


_NATIVE_AUDIO = (
    "gemini-2.5-flash-native-audio-preview-09-2025",
    "gemini-2.5-flash-native-audio-preview-12-2025",
    "gemini-2.5-flash-native-audio-latest",
    "gemini-2.5-flash-preview-native-audio-dialog",
    "gemini-2.5-flash-exp-native-audio-thinking-dialog",
)
_HALF_CASCADE = ("gemini-live-2.5-flash-preview", "gemini-2.0-flash-live-001")

MODELS: dict[str, ModelCaps] = {
    **{n: ModelCaps(n, True, "yes", True, True, True) for n in _NATIVE_AUDIO},
    **{n: ModelCaps(n, False, "no", False, True, True) for n in _HALF_CASCADE},
    "gemini-3.1-flash-live-preview": ModelCaps(
        "gemini-3.1-flash-live-preview", False, "no", False, False, False
    ),
    "gemini-3.8-live": ModelCaps("gemini-3.8-live", False, "always", True, False, True),
}
# The same families as the gateway's table (gateway/live/protocol.py, docs/live-models.md): thinking, function
# behaviours, and the 3.8 extended-thinking model. (The retired half-cascade names are still served here: the
# local backend's own tests of what a model without proactive audio refuses use them.)
for _name in _NATIVE_AUDIO:
    MODELS[_name] = dataclasses.replace(MODELS[_name], thinking="budget", tool_behaviors="both")
MODELS["gemini-3.1-flash-live-preview"] = dataclasses.replace(
    MODELS["gemini-3.1-flash-live-preview"], thinking="level"
)
MODELS["gemini-3.8-live"] = dataclasses.replace(
    MODELS["gemini-3.8-live"], tool_behaviors="both", default_behavior="NON_BLOCKING"
)
MODELS["gemini-3.8-live-extended-thinking"] = dataclasses.replace(
    MODELS["gemini-3.8-live"],
    name="gemini-3.8-live-extended-thinking",
    thinking="level",
    tool_behaviors="non_blocking",
)
DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"


# Vertex AI's names for the same families (a Developer API name there is a 1008, as on the service).
VERTEX_MODELS: dict[str, ModelCaps] = {
    "gemini-live-2.5-flash-native-audio": dataclasses.replace(
        MODELS[DEFAULT_MODEL], name="gemini-live-2.5-flash-native-audio"
    ),
    "gemini-live-2.5-flash-preview-native-audio-09-2025": dataclasses.replace(
        MODELS[DEFAULT_MODEL], name="gemini-live-2.5-flash-preview-native-audio-09-2025"
    ),
    "gemini-3.8-live": dataclasses.replace(MODELS["gemini-3.8-live"], affective_dialog=True),
}


def lookup_model(model: str, version: str) -> ModelCaps:
    if version == VERTEX:  # projects/P/locations/L/publishers/google/models/ID (or a shorter form)
        vertex = VERTEX_MODELS.get(model.rsplit("/", 1)[-1])
        if vertex is None:
            raise ProtocolError(
                CLOSE_POLICY,
                f"Publisher model {model} is not found or not supported for BidiGenerateContent.",
            )
        return vertex
    name = model.removeprefix("models/")
    caps = MODELS.get(name)
    if caps is None:
        raise ProtocolError(
            CLOSE_POLICY,
            f"models/{name} is not found for API version {version}, or is not supported for "
            "bidiGenerateContent.",
        )
    return caps


# ---------------------------------------------------------------------------------------------------------
# Schemas. A dict maps camelCase field names to the schema of their value; ``None`` is a scalar or a
# free-form value (not walked). A list field uses the schema of its items.

_BLOB = {"mimeType": None, "data": None, "displayName": None}
_PART = {
    "text": None,
    "inlineData": _BLOB,
    "fileData": {"mimeType": None, "fileUri": None, "displayName": None},
    "functionCall": {"id": None, "name": None, "args": None},
    "functionResponse": {
        "id": None,
        "name": None,
        "response": None,
        "willContinue": None,
        "scheduling": None,
    },
    "thought": None,
    "thoughtSignature": None,
    "executableCode": None,
    "codeExecutionResult": None,
    "videoMetadata": None,
    "mediaResolution": None,
}
_CONTENT = {"role": None, "parts": _PART}
_TRANSCRIPTION = {"languageCodes": None}
_SPEECH = {
    "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": None}},
    "languageCode": None,
    "multiSpeakerVoiceConfig": None,
}
_GENERATION = {
    "candidateCount": None,
    "maxOutputTokens": None,
    "temperature": None,
    "topP": None,
    "topK": None,
    "presencePenalty": None,
    "frequencyPenalty": None,
    "responseModalities": None,
    "speechConfig": _SPEECH,
    "mediaResolution": None,
    "seed": None,
    "thinkingConfig": {"includeThoughts": None, "thinkingBudget": None, "thinkingLevel": None},
    "enableAffectiveDialog": None,
    "stopSequences": None,
    "responseMimeType": None,
    "responseLogprobs": None,
    "logprobs": None,
}
_FUNCTION_DECLARATION = {
    "name": None,
    "description": None,
    "parameters": None,
    "parametersJsonSchema": None,
    "response": None,
    "responseJsonSchema": None,
    "behavior": None,
}
_TOOL = {
    "functionDeclarations": _FUNCTION_DECLARATION,
    "googleSearch": None,
    "googleSearchRetrieval": None,
    "codeExecution": None,
    "urlContext": None,
}
_SETUP = {
    "model": None,
    "generationConfig": _GENERATION,
    "systemInstruction": _CONTENT,
    "tools": _TOOL,
    "realtimeInputConfig": {
        "automaticActivityDetection": {
            "disabled": None,
            "startOfSpeechSensitivity": None,
            "endOfSpeechSensitivity": None,
            "prefixPaddingMs": None,
            "silenceDurationMs": None,
        },
        "activityHandling": None,
        "turnCoverage": None,
    },
    "sessionResumption": {"handle": None, "transparent": None},
    "contextWindowCompression": {"triggerTokens": None, "slidingWindow": {"targetTokens": None}},
    "inputAudioTranscription": _TRANSCRIPTION,
    "outputAudioTranscription": _TRANSCRIPTION,
    "proactivity": {"proactiveAudio": None},
    "historyConfig": {"initialHistoryInClientContent": None},
}
# v1beta does not know the preview fields (the real service answers "Unknown name ...").
_SETUP_V1BETA = {
    **{k: v for k, v in _SETUP.items() if k != "proactivity"},
    "generationConfig": {k: v for k, v in _GENERATION.items() if k != "enableAffectiveDialog"},
}
# Vertex takes what v1alpha does plus its own fields; `transparent` is Vertex-only (google-genai refuses it
# for the Developer API), so the Developer API schemas leave it out.
_SETUP_VERTEX = {**_SETUP, "explicitVadSignal": None}
_SETUP = {**_SETUP, "sessionResumption": {"handle": None}}
_SETUP_V1BETA = {**_SETUP_V1BETA, "sessionResumption": {"handle": None}}
_REALTIME_INPUT = {
    "mediaChunks": _BLOB,
    "audio": _BLOB,
    "video": _BLOB,
    "audioStreamEnd": None,
    "activityStart": {},
    "activityEnd": {},
    "text": None,
}
_CLIENT_CONTENT = {"turns": _CONTENT, "turnComplete": None}
_TOOL_RESPONSE = {
    "functionResponses": {
        "id": None,
        "name": None,
        "response": None,
        "willContinue": None,
        "scheduling": None,
        "parts": None,
    }
}
_MESSAGES: dict[str, dict[str, Any]] = {
    "clientContent": _CLIENT_CONTENT,
    "realtimeInput": _REALTIME_INPUT,
    "toolResponse": _TOOL_RESPONSE,
}

_SNAKE = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), name)


def snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def normalize(value: Any, schema: dict[str, Any] | None, path: str) -> Any:
    """Rename snake_case keys to camelCase where the schema knows the field; reject unknown fields."""
    if schema is None:
        return value
    if isinstance(value, list):
        return [normalize(item, schema, path) for item in value]
    if not isinstance(value, dict):
        raise ProtocolError(CLOSE_INVALID, f"Invalid JSON payload received. Invalid value at '{path}'.")
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = camel(key)
        if name not in schema:
            raise ProtocolError(
                CLOSE_INVALID,
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field.",
            )
        out[name] = normalize(item, schema[name], f"{path}.{snake(name)}")
    return out


def decode_json(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(CLOSE_INVALID, f"Invalid JSON payload received. {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(CLOSE_INVALID, "Invalid JSON payload received. Expected an object.")
    if len(message) != 1:
        raise ProtocolError(
            CLOSE_INVALID,
            "Invalid JSON payload received. A message must have exactly one of setup, clientContent, "
            f"realtimeInput, toolResponse (got {len(message)} fields).",
        )
    return message


def decode_b64(data: Any, path: str) -> bytes:
    """Standard or URL-safe base64, padded or not (protobuf JSON accepts all four)."""
    if not isinstance(data, str):
        raise ProtocolError(CLOSE_INVALID, f"Invalid value at '{path}' (TYPE_BYTES).")
    text = data.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            CLOSE_INVALID, f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed."
        ) from None


def encode_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------------------------------------
# setup


@dataclass(slots=True)
class VadSettings:
    """`realtimeInputConfig` of the setup: automatic activity detection and how speech interrupts."""

    disabled: bool = False
    start_sensitivity: str = "START_SENSITIVITY_HIGH"
    end_sensitivity: str = "END_SENSITIVITY_HIGH"
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    interrupts: bool = True  # activityHandling START_OF_ACTIVITY_INTERRUPTS (default) or NO_INTERRUPTION


@dataclass(slots=True)
class FunctionDecl:
    """A function the client declared in `setup.tools`."""

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    behavior: str = "BLOCKING"  # as the model runs it: declared, or the model's default


@dataclass(slots=True)
class SessionConfig:
    """A validated `setup`: everything the session needs to behave as the service would."""

    model: ModelCaps
    version: str
    modality: str = "AUDIO"
    voice_name: str | None = None
    language_code: str | None = None
    system_instruction: str = ""
    functions: list[FunctionDecl] = field(default_factory=list)
    vad: VadSettings = field(default_factory=VadSettings)
    input_transcription: bool = False
    output_transcription: bool = False
    resumption: bool = False
    resume_handle: str | None = None
    proactive_audio: bool = False
    affective_dialog: bool = False
    initial_history_in_client_content: bool = False
    transparent: bool = False  # Vertex: say lastConsumedClientMessageIndex with every handle


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ProtocolError(CLOSE_INVALID, f"Invalid value at '{path}' (TYPE_INT32), {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ProtocolError(CLOSE_INVALID, f"Invalid value at '{path}' (TYPE_INT32), {value!r}") from None


def _text_of(content: dict[str, Any]) -> str:
    return " ".join(p["text"] for p in content.get("parts") or [] if isinstance(p.get("text"), str))


_ENUMS = {
    "startOfSpeechSensitivity": (
        "START_SENSITIVITY_UNSPECIFIED",
        "START_SENSITIVITY_HIGH",
        "START_SENSITIVITY_LOW",
    ),
    "endOfSpeechSensitivity": ("END_SENSITIVITY_UNSPECIFIED", "END_SENSITIVITY_HIGH", "END_SENSITIVITY_LOW"),
    "activityHandling": ("ACTIVITY_HANDLING_UNSPECIFIED", "START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION"),
}


def _enum(value: Any, name: str, path: str) -> str:
    if value not in _ENUMS[name]:
        raise ProtocolError(
            CLOSE_INVALID, f"Invalid value at '{path}' (type.googleapis.com/{name}), {value!r}"
        )
    return value


def parse_setup(raw_setup: Any, version: str) -> SessionConfig:
    """Validate a ``setup`` message body as the real service does and extract what the backend uses."""
    schema = _SETUP_VERTEX if version == VERTEX else _SETUP if version == "v1alpha" else _SETUP_V1BETA
    setup = normalize(raw_setup, schema, "setup")
    model_name = setup.get("model")
    if not isinstance(model_name, str) or not model_name:
        raise ProtocolError(CLOSE_INVALID, "Invalid setup: setup.model is required.")
    caps = lookup_model(model_name, version)
    cfg = SessionConfig(model=caps, version=version)

    gen = setup.get("generationConfig") or {}
    modalities = gen.get("responseModalities") or ["AUDIO"]
    if not isinstance(modalities, list) or len(modalities) != 1:
        raise ProtocolError(
            CLOSE_INVALID, "Invalid setup: exactly one response modality is supported (AUDIO or TEXT)."
        )
    modality = str(modalities[0]).upper()
    if modality not in ("AUDIO", "TEXT"):
        raise ProtocolError(CLOSE_INVALID, f"Invalid setup: unsupported response modality {modalities[0]!r}.")
    if modality == "TEXT" and caps.audio_only:
        raise ProtocolError(
            CLOSE_INVALID, f"Invalid setup: {caps.name} only supports the AUDIO response modality."
        )
    cfg.modality = modality

    if "enableAffectiveDialog" in gen:
        if not caps.affective_dialog:
            raise ProtocolError(
                CLOSE_INVALID, f"Invalid setup: enable_affective_dialog is not supported by {caps.name}."
            )
        cfg.affective_dialog = bool(gen["enableAffectiveDialog"])
    speech = gen.get("speechConfig") or {}
    cfg.voice_name = ((speech.get("voiceConfig") or {}).get("prebuiltVoiceConfig") or {}).get("voiceName")
    cfg.language_code = speech.get("languageCode")

    cfg.system_instruction = _text_of(setup.get("systemInstruction") or {})
    for tool in setup.get("tools") or []:
        for decl in tool.get("functionDeclarations") or []:
            if not isinstance(decl.get("name"), str) or not decl["name"]:
                raise ProtocolError(CLOSE_INVALID, "Invalid setup: a function declaration needs a name.")
            params = decl.get("parameters") if isinstance(decl.get("parameters"), dict) else None
            behavior = _behavior(decl.get("behavior"), caps)
            cfg.functions.append(
                FunctionDecl(decl["name"], str(decl.get("description") or ""), params, behavior)
            )
    _check_thinking(gen.get("thinkingConfig") or {}, caps)

    ric = setup.get("realtimeInputConfig") or {}
    aad = ric.get("automaticActivityDetection") or {}
    vad = cfg.vad
    vad.disabled = bool(aad.get("disabled", False))
    path = "setup.realtime_input_config.automatic_activity_detection"
    if "startOfSpeechSensitivity" in aad:
        vad.start_sensitivity = _enum(aad["startOfSpeechSensitivity"], "startOfSpeechSensitivity", path)
    if "endOfSpeechSensitivity" in aad:
        vad.end_sensitivity = _enum(aad["endOfSpeechSensitivity"], "endOfSpeechSensitivity", path)
    if "prefixPaddingMs" in aad:
        vad.prefix_padding_ms = max(0, _int(aad["prefixPaddingMs"], f"{path}.prefix_padding_ms"))
    if "silenceDurationMs" in aad:
        vad.silence_duration_ms = max(0, _int(aad["silenceDurationMs"], f"{path}.silence_duration_ms"))
    if "activityHandling" in ric:
        handling = _enum(ric["activityHandling"], "activityHandling", "setup.realtime_input_config")
        vad.interrupts = handling != "NO_INTERRUPTION"

    cfg.input_transcription = "inputAudioTranscription" in setup
    cfg.output_transcription = "outputAudioTranscription" in setup
    if "sessionResumption" in setup:
        cfg.resumption = True
        handle = (setup["sessionResumption"] or {}).get("handle")
        cfg.resume_handle = handle or None
        cfg.transparent = bool((setup["sessionResumption"] or {}).get("transparent", False))

    if "proactivity" in setup:
        if caps.proactivity == "no":
            raise ProtocolError(CLOSE_INVALID, f"Invalid setup: proactivity is not supported by {caps.name}.")
        proactive = bool((setup["proactivity"] or {}).get("proactiveAudio", False))
        if caps.proactivity == "always" and not proactive:
            raise ProtocolError(
                CLOSE_INVALID, f"Invalid setup: proactive audio is always on for {caps.name}."
            )
        cfg.proactive_audio = proactive
    if caps.proactivity == "always":
        cfg.proactive_audio = True
    cfg.initial_history_in_client_content = bool(
        (setup.get("historyConfig") or {}).get("initialHistoryInClientContent", False)
    )
    return cfg


def _behavior(value: Any, caps: ModelCaps) -> str:
    """A declaration's `behavior` as the model takes it (1007 for one it does not)."""
    if value in (None, "", "UNSPECIFIED"):
        return caps.default_behavior if caps.tool_behaviors != "blocking" else "BLOCKING"
    if value not in ("BLOCKING", "NON_BLOCKING"):
        raise ProtocolError(
            CLOSE_INVALID, f"Invalid value at 'setup.tools[0].function_declarations[0].behavior', {value!r}"
        )
    if caps.tool_behaviors == "blocking":
        raise ProtocolError(
            CLOSE_INVALID,
            f"Invalid setup: function behavior is not supported by {caps.name} (synchronous only).",
        )
    if caps.tool_behaviors == "non_blocking" and value == "BLOCKING":
        raise ProtocolError(
            CLOSE_INVALID, f"Invalid setup: BLOCKING function calling is not supported by {caps.name}."
        )
    return str(value)


def _check_thinking(thinking: dict[str, Any], caps: ModelCaps) -> None:
    for key, form in (("thinkingLevel", "level"), ("thinkingBudget", "budget")):
        if key in thinking and caps.thinking != form:
            raise ProtocolError(CLOSE_INVALID, f"Invalid setup: {key} is not supported by {caps.name}.")


# ---------------------------------------------------------------------------------------------------------
# Client messages after setup


@dataclass(frozen=True, slots=True)
class AudioIn:
    """`realtimeInput.audio` (or a deprecated `mediaChunks` entry): PCM16LE at `rate`."""

    pcm: bytes
    rate: int


@dataclass(frozen=True, slots=True)
class AudioStreamEnd:
    """`realtimeInput.audioStreamEnd`: the client paused its audio stream."""


@dataclass(frozen=True, slots=True)
class ActivityStart:
    """`realtimeInput.activityStart`: the caller started talking (automatic VAD disabled)."""


@dataclass(frozen=True, slots=True)
class ActivityEnd:
    """`realtimeInput.activityEnd`: the caller stopped talking (automatic VAD disabled)."""


@dataclass(frozen=True, slots=True)
class TextIn:
    """`realtimeInput.text`: text input, taken as what the caller said."""

    text: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of `clientContent.turns`."""

    role: str
    text: str


@dataclass(frozen=True, slots=True)
class ClientContent:
    """`clientContent`: turns appended to the conversation; with `turn_complete` the model answers."""

    turns: tuple[Turn, ...]
    turn_complete: bool


@dataclass(frozen=True, slots=True)
class FunctionResponse:
    """One answer of a `toolResponse`, for the function call with this `id`."""

    id: str
    name: str
    response: Any
    scheduling: str = ""  # a NON_BLOCKING call's: INTERRUPT, WHEN_IDLE (the default) or SILENT


@dataclass(frozen=True, slots=True)
class ToolResponse:
    """`toolResponse`: the client's answers to function calls."""

    responses: tuple[FunctionResponse, ...]


ClientEvent = AudioIn | AudioStreamEnd | ActivityStart | ActivityEnd | TextIn | ClientContent | ToolResponse

_RATE = re.compile(r"rate=(\d+)")


def _audio(blob: dict[str, Any], path: str) -> AudioIn | None:
    mime = str(blob.get("mimeType") or "audio/pcm").lower()
    if not mime.startswith(("audio/pcm", "audio/l16")):
        if mime.startswith(("image/", "video/")):
            return None  # video frames: this backend has no eyes, and that is not an error
        raise ProtocolError(CLOSE_INVALID, f"Unsupported mime type {mime!r} at '{path}.mime_type'.")
    match = _RATE.search(mime)
    rate = int(match.group(1)) if match else INPUT_RATE
    if not 4000 <= rate <= 192000:
        raise ProtocolError(CLOSE_INVALID, f"Unsupported sample rate {rate} at '{path}.mime_type'.")
    pcm = decode_b64(blob.get("data", ""), f"{path}.data")
    return AudioIn(pcm[: len(pcm) & ~1], rate)


def parse_client_message(raw: str | bytes, caps: ModelCaps) -> list[ClientEvent]:
    """Parse one client message received after setup into the events it carries, in order."""
    message = decode_json(raw)
    ((key, body),) = message.items()
    name = camel(key)
    if name == "setup":
        raise ProtocolError(
            CLOSE_INVALID, "Invalid request: setup may only be sent once, as the first message."
        )
    if name not in _MESSAGES:
        raise ProtocolError(
            CLOSE_INVALID, f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
        )
    body = normalize(body, _MESSAGES[name], snake(name))
    try:
        return _client_events(name, body, caps)
    except (AttributeError, TypeError, ValueError):
        # A value of the wrong shape (a list where an object belongs, ...): protobuf JSON rejects those.
        raise ProtocolError(
            CLOSE_INVALID, f"Invalid JSON payload received. Invalid value at '{snake(name)}'."
        ) from None


def _client_events(name: str, body: Any, caps: ModelCaps) -> list[ClientEvent]:
    events: list[ClientEvent] = []
    if name == "realtimeInput":
        for chunk in body.get("mediaChunks") or []:
            if not caps.media_chunks:
                raise ProtocolError(
                    CLOSE_INVALID,
                    f"realtime_input.media_chunks is deprecated and not supported by {caps.name}.",
                )
            audio = _audio(chunk, "realtime_input.media_chunks")
            if audio is not None:
                events.append(audio)
        if "audio" in body:
            audio = _audio(body["audio"], "realtime_input.audio")
            if audio is not None:
                events.append(audio)
        if "activityStart" in body:
            events.append(ActivityStart())
        if body.get("text"):
            events.append(TextIn(str(body["text"])))
        if "activityEnd" in body:
            events.append(ActivityEnd())
        if body.get("audioStreamEnd"):
            events.append(AudioStreamEnd())
    elif name == "clientContent":
        turns = tuple(Turn(str(t.get("role") or "user"), _text_of(t)) for t in body.get("turns") or [])
        events.append(ClientContent(turns, bool(body.get("turnComplete", False))))
    else:
        responses = tuple(
            FunctionResponse(
                str(r.get("id") or ""),
                str(r.get("name") or ""),
                r.get("response"),
                str(r.get("scheduling") or ""),
            )
            for r in body.get("functionResponses") or []
        )
        events.append(ToolResponse(responses))
    return events


# ---------------------------------------------------------------------------------------------------------
# Server messages (camelCase, as the service sends them; the caller encodes them into binary frames)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def setup_complete() -> dict[str, Any]:
    return {"setupComplete": {}}


def audio_chunk(pcm: bytes) -> dict[str, Any]:
    return {
        "serverContent": {
            "modelTurn": {"parts": [{"inlineData": {"mimeType": OUTPUT_MIME, "data": encode_b64(pcm)}}]}
        }
    }


def text_part(text: str) -> dict[str, Any]:
    return {"serverContent": {"modelTurn": {"parts": [{"text": text}]}}}


def input_transcription(text: str) -> dict[str, Any]:
    return {"serverContent": {"inputTranscription": {"text": text}}}


def output_transcription(text: str) -> dict[str, Any]:
    return {"serverContent": {"outputTranscription": {"text": text}}}


def interrupted() -> dict[str, Any]:
    return {"serverContent": {"interrupted": True}}


def generation_complete() -> dict[str, Any]:
    return {"serverContent": {"generationComplete": True}}


def turn_complete(usage: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"serverContent": {"turnComplete": True}}
    if usage:
        message["usageMetadata"] = usage
    return message


def tool_call(calls: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    return {"toolCall": {"functionCalls": [{"id": i, "name": n, "args": a} for i, n, a in calls]}}


def tool_call_cancellation(ids: list[str]) -> dict[str, Any]:
    return {"toolCallCancellation": {"ids": ids}}


def duration(seconds: float) -> str:
    """google.protobuf.Duration in JSON: "5s", "2.5s"."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}".rstrip("0") + "s"


def go_away(time_left_s: float) -> dict[str, Any]:
    return {"goAway": {"timeLeft": duration(time_left_s)}}


def resumption_update(handle: str | None, consumed: int | None = None) -> dict[str, Any]:
    """While generating the service sends an update without a handle; protobuf JSON omits the defaults. With
    transparent resumption a handle says the last client message it covers (an int64: a string in JSON)."""
    if not handle:
        return {"sessionResumptionUpdate": {}}
    update: dict[str, Any] = {"newHandle": handle, "resumable": True}
    if consumed is not None:
        update["lastConsumedClientMessageIndex"] = str(consumed)
    return {"sessionResumptionUpdate": update}


AUDIO_TOKENS_PER_S = 25.0


def text_tokens(text: str) -> int:
    return round(len(text.split()) * 1.3)


def usage(prompt_audio: int, prompt_text: int, response_audio: int, response_text: int) -> dict[str, Any]:
    prompt = prompt_audio + prompt_text
    response = response_audio + response_text

    def details(audio: int, text: int) -> list[dict[str, Any]]:
        out = []
        if text:
            out.append({"modality": "TEXT", "tokenCount": text})
        if audio:
            out.append({"modality": "AUDIO", "tokenCount": audio})
        return out

    result: dict[str, Any] = {
        "promptTokenCount": prompt,
        "responseTokenCount": response,
        "totalTokenCount": prompt + response,
    }
    if prompt:
        result["promptTokensDetails"] = details(prompt_audio, prompt_text)
    if response:
        result["responseTokensDetails"] = details(response_audio, response_text)
    return result
