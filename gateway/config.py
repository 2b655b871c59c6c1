"""Settings from the environment (12-factor), also readable from a `.env` file."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from gateway.agents import RECORDING_MODES, AgentBook, AgentsFileError, default_book, load_agents
from gateway.cost import Prices, PricesError
from gateway.live.protocol import (
    API_HOST,
    DEFAULT_MODELS,
    LIVE_PATH,
    PLATFORMS,
    LiveConfig,
    LiveConfigError,
    check_model,
    model_capabilities,
    vertex_url,
)

DEFAULT_INSTRUCTIONS = (
    "You are a friendly, concise voice assistant answering a phone call. Keep replies short and natural; "
    "the caller hears you over a phone line."
)
DEFAULT_GREETING = "The caller has just been connected. Greet them briefly and ask how you can help."
CONSOLE_PASSWORD_MIN = 12  # characters: what signs in to the console reads every call's transcript
DEFAULT_DATABASE_URL = "sqlite:///gateway-calls.sqlite3"  # in the working directory
DEFAULT_RECORDS_SPOOL_DIR = "gateway-records-spool"  # in the working directory
DEFAULT_FAILURE_MESSAGE = (
    "I'm sorry, we are having technical difficulties and cannot continue this call. Please call back in a "
    "few minutes. Goodbye."
)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(ValueError):
    """A bad setting; the message says which and what would work. Raised at start-up."""


@dataclass(frozen=True)
class VonageSettings:
    """Vonage (README, "Other carriers"): the Voice API application that answers its numbers, the key its
    API requests are signed with, the secret Vonage signs webhooks and stream upgrades with, and the
    account's API key and secret (`gateway vonage configure` only)."""

    application_id: str | None = None
    private_key: str | None = field(default=None, repr=False)  # PKCS#8 PEM, read at start-up
    signature_secret: str | None = field(default=None, repr=False)
    api_key: str | None = None
    api_secret: str | None = field(default=None, repr=False)
    api_base_url: str | None = None  # tests use a stand-in

    @property
    def can_control(self) -> bool:
        """Hang-up and transfer through the Voice API."""
        return bool(self.application_id and self.private_key)


@dataclass(frozen=True)
class PlivoSettings:
    """Plivo (README, "Other carriers"): the account's auth id and token (V3 signatures, the API)."""

    auth_id: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    api_base_url: str | None = None  # tests use a stand-in

    @property
    def can_control(self) -> bool:
        return bool(self.auth_id and self.auth_token)


@dataclass(frozen=True)
class Settings:
    """The service's configuration, read from the environment and `.env` by `load_settings` and checked at
    start-up (see the README's table of variables)."""

    port: int = 8080
    public_url: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_account_sid: str | None = None
    twilio_api_base_url: str | None = None  # a regional edge; tests use a stand-in
    gemini_api_key: str | None = field(default=None, repr=False)
    gemini_live_url: str | None = None
    gemini_api_version: str = "v1alpha"
    live: LiveConfig = field(default_factory=LiveConfig)
    greeting: str = DEFAULT_GREETING
    failure_message: str = DEFAULT_FAILURE_MESSAGE
    live_input_rate: int = 16000
    # From the stream's start to a set-up Live session (the pre-warmed one included): then the apology.
    live_setup_timeout_s: float = 6.0
    live_stall_s: float = 8.0  # Live silent this long after the caller made a sound: switch connections
    # No Twilio signature checks: only when asked for (DEVELOPMENT_MODE), or with no paid model behind it.
    development_mode: bool = False
    max_concurrent_calls: int = 500
    # Media sockets not yet proven calls (no verified `start`): their own small budget, not call places.
    max_unverified_streams: int = 64
    max_message_bytes: int = 64 * 1024  # Twilio's messages are under 1 kB; anything near this is hostile
    start_timeout_s: float = 10.0
    media_idle_timeout_s: float = 20.0
    max_call_duration_s: float = 4 * 3600.0
    # Per-number agents (AGENTS_FILE); numbers it does not list get the agent made of the settings above.
    agents: AgentBook | None = None
    tools_secret: str | None = field(default=None, repr=False)  # signs custom tool requests
    prewarm_s: float = 10.0  # a Live session opened while the phone rings waits this long for its stream
    prewarm_max_sessions: int = 100  # Live sessions pre-warm may hold at once (each one is billed)
    log_format: str = "auto"
    log_level: str = "info"
    log_pii: bool = False  # callers' numbers (and keys pressed) in log lines in clear; transcripts never
    # Slow clients (gateway.http_guard): deadlines for a request's headers and body, a connection budget.
    http_header_timeout_s: float = 5.0
    http_body_timeout_s: float = 10.0
    http_max_connections: int = 256
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)  # a PostgreSQL URL has a password
    calls_api_token: str | None = field(default=None, repr=False)
    # Records waiting for a database that is away, past what memory keeps: on disk here, at most this much.
    records_spool_dir: str = DEFAULT_RECORDS_SPOOL_DIR
    records_spool_max_mb: int = 64
    drain_grace_s: float = 15.0
    # Outbound calls (gateway.outbound): the caller ID, where calls may go, how many at once, and how long to
    # wait for answering-machine detection before taking the callee for a person.
    twilio_from_number: str | None = None
    outbound_countries: frozenset[str] = frozenset()
    max_outbound_calls: int = 20
    amd_timeout_s: int = 30
    # Turn-taking (gateway.call.turns): who clears the line when the caller talks over the agent, and how long
    # the agent may leave the caller's turn unanswered before the stall watchdog steps in. TURN_DETECTION is
    # `live.turn_detection` (it changes the setup).
    barge_in: str = "local"
    # Gateway processes on one port (WEB_CONCURRENCY, which Heroku sets): default one per core.
    web_concurrency: int = 1
    stall_timeout_s: float = 5.0
    # Caller audio per message to Live while the caller is quiet, and while they may be speaking
    # (gateway.call.caller_chunks).
    live_quiet_chunk_ms: int = 100
    live_speech_chunk_ms: int | None = None  # None: 40, or the quiet chunk if smaller (CallerChunks)
    # Vertex AI (GEMINI_PLATFORM=vertex): a service-account key file, else google-auth's own search (the
    # metadata server on Google Cloud). The platform, project and location are in `live`.
    google_credentials_file: str | None = None
    # The web console (gateway.console): its password; without one it falls back to CALLS_API_TOKEN, and
    # with neither the console is off.
    console_password: str | None = field(default=None, repr=False)
    # Recordings (gateway.recording): who records (per agent too), where, the notice, how long they are kept.
    recording: str = "off"
    recordings_url: str = "./recordings"
    recording_notice: str = ""
    recording_retention_days: float = 0.0  # 0: kept until deleted by hand
    # USD per million Live tokens (LIVE_PRICES, gateway.cost): each call's estimated cost.
    live_prices: Prices = field(default_factory=Prices)

    @property
    def console_secret(self) -> str | None:
        """What signs in to the console: CONSOLE_PASSWORD, else CALLS_API_TOKEN if it is as long as a console
        password must be (it signs in to every call's transcript); None: the console is off."""
        token = self.calls_api_token if len(self.calls_api_token or "") >= CONSOLE_PASSWORD_MIN else None
        return self.console_password or token

    # Carriers beside Twilio (see gateway.carriers): each one's signing secret and REST credentials.
    telnyx_api_key: str | None = field(default=None, repr=False)
    telnyx_public_key: str | None = None  # Ed25519, base64: checks Telnyx's webhook signatures
    telnyx_api_base_url: str | None = None  # Telnyx's API (https://api.telnyx.com/v2) unless a stand-in
    signalwire_project_id: str | None = None
    signalwire_api_token: str | None = field(default=None, repr=False)
    signalwire_space_url: str | None = None  # https://<space>.signalwire.com
    signalwire_signing_key: str | None = field(default=None, repr=False)
    vonage: VonageSettings = field(default_factory=VonageSettings)
    plivo: PlivoSettings = field(default_factory=PlivoSettings)

    @property
    def carrier_secrets(self) -> tuple[str, ...]:
        """Every carrier credential that must never be logged."""
        secrets: tuple[str | None, ...] = (
            self.telnyx_api_key,
            self.signalwire_api_token,
            self.signalwire_signing_key,
        )
        secrets += (self.vonage.signature_secret, self.vonage.api_secret, self.vonage.private_key)
        secrets += (self.plivo.auth_token,)
        return tuple(secret for secret in secrets if secret)

    @property
    def signs_requests(self) -> bool:
        """Some carrier's signatures are checked (production): a carrier whose signing secret is not set is
        then refused, never open. With none set, every carrier is taken unsigned (development)."""
        return bool(
            self.twilio_auth_token
            or self.telnyx_public_key
            or self.signalwire_signing_key
            or self.vonage.signature_secret
            or self.plivo.auth_token
        )

    @property
    def stream_token_secret(self) -> str | None:
        """The secret stream tokens are keyed from, alike on every instance: the first carrier secret set."""
        return (
            self.twilio_auth_token
            or self.telnyx_api_key
            or self.signalwire_signing_key
            or self.vonage.signature_secret
            or self.plivo.auth_token
        )

    @property
    def agent_book(self) -> AgentBook:
        return self.agents or default_book(self.live, self.greeting)

    @property
    def uses_local_backend(self) -> bool:
        """No key and no URL: the embedded local Live backend answers (development, tests, demo)."""
        return not self.gemini_api_key and not self.gemini_live_url and self.live.platform != "vertex"

    def live_url(self) -> str:
        """The Live endpoint, never with a key in it (the key travels in the x-goog-api-key header)."""
        if self.gemini_live_url:
            return self.gemini_live_url
        if self.live.platform == "vertex":
            return vertex_url(self.live.location)
        return API_HOST + LIVE_PATH.format(version=self.gemini_api_version)


# gateway.call.caller_chunks' CHUNK_CHOICES_MS and SPEECH_CHUNK_MS (not imported from there: that would load
# the whole call for every command that reads its settings; tests/test_config.py keeps them equal).
CHUNK_CHOICES_MS = (20, 40, 60, 80, 100)
SPEECH_CHUNK_MS = 40


def _chunk_ms(env: dict[str, str], name: str, default: int, caller: str) -> int:
    """Caller audio per message to Live while the caller `caller` ("is quiet"): one of CHUNK_CHOICES_MS."""
    ms = _int(env, name, default)
    if ms not in CHUNK_CHOICES_MS:
        raise ConfigError(
            f"{name}={ms} must be 20, 40, 60, 80 or 100: caller audio per message to Live while the caller "
            f"{caller}, in whole 20 ms frames (20 sends every frame as it comes)"
        )
    return ms


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _positive(env: dict[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not value > 0:
        raise ConfigError(f"{name}={env.get(name)!r} must be a positive number of seconds")
    return value


def _seconds(env: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    """A positive number of seconds from `low` to `high`."""
    value = _positive(env, name, default)
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} must be between {low:g} and {high:g} seconds")
    return value


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} must be true or false")


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}={env.get(name)!r} must be one of {', '.join(choices)} (default {default})")
    return value


def _optional_text(env: dict[str, str], name: str, default: str) -> str:
    """A text that can be turned off: empty or unset is the default (as for every setting); `none`, `off` or
    `false` is no text at all."""
    raw = env.get(name) or ""
    raw = raw if raw.strip() else default  # blank, as unset
    return "" if raw.strip().lower() in {"none", "off", "false"} else raw


def read_environment(
    environ: dict[str, str] | None = None, env_file: str | Path | None = ".env"
) -> dict[str, str]:
    """The `.env` file's settings, overridden by the environment's (or `environ`'s)."""
    env: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


def _port(env: dict[str, str]) -> int:
    port = _int(env, "PORT", 8080)
    if not 1 <= port <= 65535:
        raise ConfigError(f"PORT={port} is not a TCP port: use 1 to 65535 (default 8080)")
    return port


def _public_url(env: dict[str, str]) -> str | None:
    public_url = env.get("PUBLIC_URL") or None
    if public_url:
        parts = urlsplit(public_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(
                f"PUBLIC_URL={public_url!r} must be an http(s) base URL, e.g. https://example.com"
            )
    return public_url.rstrip("/") if public_url else None


def _live_url(env: dict[str, str]) -> str | None:
    """GEMINI_LIVE_URL, if set: a ws(s) URL whose path is a Live endpoint's (anything else is a 404 or a
    handshake refused on every call, found out only when the phone rings)."""
    live_url = env.get("GEMINI_LIVE_URL") or None
    if not live_url:
        return None
    parts = urlsplit(live_url)
    example = API_HOST + LIVE_PATH.format(version="v1alpha")
    works = (
        f"e.g. {example} (Google's, the default), or the same path on a proxy or on `gateway live-local` "
        f"(ws://127.0.0.1:8765{LIVE_PATH.format(version='v1alpha')})"
    )
    if parts.scheme not in {"ws", "wss"} or not parts.netloc:
        raise ConfigError(f"GEMINI_LIVE_URL={live_url!r} must be a ws:// or wss:// URL, {works}")
    if not parts.path.rstrip("/").endswith("BidiGenerateContent"):
        what = "has no path" if parts.path in {"", "/"} else f"has the path {parts.path!r}"
        raise ConfigError(
            f"GEMINI_LIVE_URL={live_url!r} {what}: Live is served at a path ending in BidiGenerateContent, "
            f"{works}"
        )
    return live_url


def _platform(env: dict[str, str]) -> str:
    platform = (env.get("GEMINI_PLATFORM") or "developer").strip().lower()
    if platform not in PLATFORMS:
        raise ConfigError(
            f"GEMINI_PLATFORM={platform!r} must be developer (the Gemini Developer API, GEMINI_API_KEY) or "
            "vertex (Vertex AI: GOOGLE_CLOUD_PROJECT, GOOGLE_CLOUD_LOCATION and Google credentials)"
        )
    return platform


def _platform_model(env: dict[str, str], platform: str) -> str:
    """GEMINI_MODEL for the platform: one the table lists there (a name of the other platform, or a model
    shut down, is refused naming what would work), or any name with GEMINI_MODEL_UNLISTED=true."""
    model = env.get("GEMINI_MODEL") or DEFAULT_MODELS[platform]  # type: ignore[index]
    try:
        check_model(model, platform, unlisted_ok=_bool(env, "GEMINI_MODEL_UNLISTED", False))  # type: ignore[arg-type]
    except LiveConfigError as exc:
        raise ConfigError(str(exc)) from None
    return model


def _vertex(env: dict[str, str]) -> tuple[str, str, str | None]:
    """GOOGLE_CLOUD_PROJECT, GOOGLE_CLOUD_LOCATION and GOOGLE_APPLICATION_CREDENTIALS (optional: without it
    google-auth finds the credentials itself, the metadata server on Google Cloud)."""
    project = (env.get("GOOGLE_CLOUD_PROJECT") or "").strip()
    location = (env.get("GOOGLE_CLOUD_LOCATION") or "").strip()
    if not project:
        raise ConfigError("GEMINI_PLATFORM=vertex needs GOOGLE_CLOUD_PROJECT, the project Live is billed to")
    if not location or not re.fullmatch(r"[a-z]+(-[a-z0-9]+)*", location):
        raise ConfigError(
            "GEMINI_PLATFORM=vertex needs GOOGLE_CLOUD_LOCATION, a region that serves Live such as "
            f"us-central1 "
            f"(got {location!r})"
        )
    credentials = env.get("GOOGLE_APPLICATION_CREDENTIALS") or None
    if credentials is not None:
        from gateway.live.vertex_auth import CredentialsError, check_credentials_file

        try:
            check_credentials_file(credentials)
        except CredentialsError as exc:
            raise ConfigError(f"GOOGLE_APPLICATION_CREDENTIALS: {exc}") from None
    return project, location, credentials


def _database_url(env: dict[str, str]) -> str:
    database_url = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if not database_url.startswith(("postgres://", "postgresql://", "sqlite:///")):
        raise ConfigError("DATABASE_URL must be a postgres:// or postgresql:// URL, or sqlite:///path.db")
    return database_url


def _twilio_api_base_url(env: dict[str, str]) -> str | None:
    twilio_api_base_url = env.get("TWILIO_API_BASE_URL") or None
    if twilio_api_base_url and urlsplit(twilio_api_base_url).scheme not in {"http", "https"}:
        raise ConfigError(f"TWILIO_API_BASE_URL={twilio_api_base_url!r} must be an http(s) URL")
    return twilio_api_base_url


def _api_base_url(env: dict[str, str], name: str) -> str | None:
    url = (env.get(name) or "").strip() or None
    if url and (urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).netloc):
        raise ConfigError(f"{name}={url!r} must be an http(s) URL")
    return url


_VONAGE_APPLICATION_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_PLIVO_AUTH_ID = re.compile(r"[A-Z0-9]{20}")


def load_vonage_settings(env: dict[str, str]) -> VonageSettings:
    """VONAGE_*: the application id and its private key go together (hang-up and transfer); the signature
    secret checks what Vonage sends. Secrets are never quoted in an error."""
    from gateway.vonage.signing import PrivateKeyError, load_private_key

    application_id = (env.get("VONAGE_APPLICATION_ID") or "").strip() or None
    key_setting = (env.get("VONAGE_PRIVATE_KEY") or "").strip() or None
    if application_id and not _VONAGE_APPLICATION_ID.fullmatch(application_id):
        raise ConfigError(
            f"VONAGE_APPLICATION_ID={application_id!r} must be the application's id, a UUID like "
            "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
        )
    if bool(application_id) != bool(key_setting):
        missing = "VONAGE_PRIVATE_KEY" if application_id else "VONAGE_APPLICATION_ID"
        raise ConfigError(
            f"{missing} is not set: the Voice API (hang-up, transfer) needs both VONAGE_APPLICATION_ID and "
            "VONAGE_PRIVATE_KEY (the application's private key: its PEM text, or the path of private.key)"
        )
    private_key = None
    if key_setting:
        try:
            private_key = load_private_key(key_setting)
        except PrivateKeyError as exc:
            raise ConfigError(f"VONAGE_PRIVATE_KEY: {exc}") from None
    api_key = (env.get("VONAGE_API_KEY") or "").strip() or None
    api_secret = env.get("VONAGE_API_SECRET") or None
    if bool(api_key) != bool(api_secret):
        missing = "VONAGE_API_SECRET" if api_key else "VONAGE_API_KEY"
        raise ConfigError(f"{missing} is not set: VONAGE_API_KEY and VONAGE_API_SECRET go together")
    return VonageSettings(
        application_id=application_id,
        private_key=private_key,
        signature_secret=env.get("VONAGE_SIGNATURE_SECRET") or None,
        api_key=api_key,
        api_secret=api_secret,
        api_base_url=_api_base_url(env, "VONAGE_API_BASE_URL"),
    )


def load_plivo_settings(env: dict[str, str]) -> PlivoSettings:
    """PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN go together (signatures, hang-up, transfer)."""
    auth_id = (env.get("PLIVO_AUTH_ID") or "").strip() or None
    auth_token = env.get("PLIVO_AUTH_TOKEN") or None
    if auth_id and not _PLIVO_AUTH_ID.fullmatch(auth_id):
        raise ConfigError(
            f"PLIVO_AUTH_ID={auth_id!r} must be the account's auth id: 20 capital letters and digits, "
            "starting MA (or SA for a subaccount)"
        )
    if bool(auth_id) != bool(auth_token):
        missing = "PLIVO_AUTH_TOKEN" if auth_id else "PLIVO_AUTH_ID"
        raise ConfigError(
            f"{missing} is not set: Plivo's signatures and API need both PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN"
        )
    return PlivoSettings(auth_id, auth_token, _api_base_url(env, "PLIVO_API_BASE_URL"))


def load_database_url(environ: dict[str, str] | None = None, env_file: str | Path | None = ".env") -> str:
    """DATABASE_URL alone, checked (`gateway calls` needs nothing else)."""
    return _database_url(read_environment(environ, env_file))


@dataclass(frozen=True)
class TwilioAdminSettings:
    """What `gateway twilio` uses: the account's credentials, the REST API's base URL, PUBLIC_URL."""

    account_sid: str | None
    auth_token: str | None = field(repr=False)
    api_base_url: str | None
    public_url: str | None


def load_twilio_admin_settings(
    environ: dict[str, str] | None = None, env_file: str | Path | None = ".env"
) -> TwilioAdminSettings:
    """The settings `gateway twilio` uses, checked; a bad setting it does not use does not stop it."""
    env = read_environment(environ, env_file)
    return TwilioAdminSettings(
        account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
        auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
        api_base_url=_twilio_api_base_url(env),
        public_url=_public_url(env),
    )


@dataclass(frozen=True)
class CarrierAdminSettings:
    """What `gateway telnyx` and `gateway signalwire` use: PUBLIC_URL and the carriers' settings."""

    public_url: str | None
    carriers: dict[str, str | None] = field(repr=False)


def load_carrier_admin_settings(
    environ: dict[str, str] | None = None, env_file: str | Path | None = ".env"
) -> CarrierAdminSettings:
    """The settings the carriers' commands use, checked; a bad setting they do not use does not stop them."""
    env = read_environment(environ, env_file)
    return CarrierAdminSettings(public_url=_public_url(env), carriers=_carriers(env))


def load_settings(environ: dict[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Read and check every setting; a bad one raises ConfigError naming it and what would work."""
    env = read_environment(environ, env_file)

    public_url = _public_url(env)
    live_url = _live_url(env)
    api_version = env.get("GEMINI_API_VERSION") or "v1alpha"
    if api_version not in {"v1alpha", "v1beta"}:
        raise ConfigError(
            "GEMINI_API_VERSION must be v1alpha or v1beta (proactive audio and affective dialog need v1alpha)"
        )
    input_rate = _int(env, "LIVE_INPUT_RATE", 16000)
    if input_rate not in {8000, 16000}:
        raise ConfigError(f"LIVE_INPUT_RATE={input_rate} must be 16000 (Live's native rate) or 8000")
    greeting = _optional_text(env, "AGENT_GREETING", DEFAULT_GREETING)
    failure_message = _optional_text(env, "CALL_FAILURE_MESSAGE", DEFAULT_FAILURE_MESSAGE)

    platform = _platform(env)
    project, location, credentials_file = _vertex(env) if platform == "vertex" else ("", "", None)
    model = _platform_model(env, platform)
    caps = model_capabilities(model, platform)  # type: ignore[arg-type]
    live = LiveConfig(
        model=model,
        voice=env.get("AGENT_VOICE") or "Kore",
        language=env.get("AGENT_LANGUAGE") or "en-US",
        instructions=env.get("AGENT_INSTRUCTIONS") or DEFAULT_INSTRUCTIONS,
        # Unset: what the model does (on where it can be, off where it cannot); set: a promise checked below.
        proactive_audio=_bool(env, "AGENT_PROACTIVE_AUDIO", caps.proactive_audio != "no"),
        affective_dialog=_bool(env, "AGENT_AFFECTIVE_DIALOG", caps.affective_dialog or caps.affective_always),
        vad_start_sensitivity=(env.get("LIVE_VAD_START_SENSITIVITY") or "high").lower(),
        vad_end_sensitivity=(env.get("LIVE_VAD_END_SENSITIVITY") or "low").lower(),
        vad_prefix_padding_ms=_int(env, "LIVE_VAD_PREFIX_PADDING_MS", 20),
        vad_silence_ms=_int(env, "LIVE_VAD_SILENCE_MS", 500),
        turn_detection=_choice(env, "TURN_DETECTION", ("server", "local"), "server"),
        compression_trigger_tokens=_int(env, "LIVE_COMPRESSION_TRIGGER_TOKENS", 25600),
        compression_target_tokens=_int(env, "LIVE_COMPRESSION_TARGET_TOKENS", 12800),
        tools=(),
        platform=platform,  # type: ignore[arg-type]
        project=project,
        location=location,
        thinking_level=(env.get("LIVE_THINKING_LEVEL") or "").strip().lower(),
        thinking_budget=_int(env, "LIVE_THINKING_BUDGET", 0) if env.get("LIVE_THINKING_BUDGET") else None,
        transparent_resumption=_bool(env, "LIVE_TRANSPARENT_RESUMPTION", platform == "vertex"),
    )
    try:
        live.validate()
    except LiveConfigError as exc:
        raise ConfigError(str(exc)) from None
    # API versions are the Developer API's: Vertex takes proactive audio and affective dialog on v1beta1.
    v1beta_ok = platform == "vertex" or not (
        (live.proactive_audio and caps.proactive_audio == "optional")
        or (live.affective_dialog and caps.affective_dialog)
    )
    if api_version == "v1beta" and not v1beta_ok:
        raise ConfigError(
            "proactive audio and affective dialog need GEMINI_API_VERSION=v1alpha; "
            "set AGENT_PROACTIVE_AUDIO=false and AGENT_AFFECTIVE_DIALOG=false to use v1beta"
        )
    if live_url and ".v1beta." in urlsplit(live_url).path and not v1beta_ok:
        raise ConfigError(
            f"GEMINI_LIVE_URL={live_url!r} is a v1beta endpoint, and proactive audio and affective dialog "
            "need v1alpha: use the URL with v1alpha, or set AGENT_PROACTIVE_AUDIO=false and "
            "AGENT_AFFECTIVE_DIALOG=false"
        )
    twilio_auth_token = env.get("TWILIO_AUTH_TOKEN") or None
    gemini_api_key = env.get("GEMINI_API_KEY") or None
    development_mode = _bool(env, "DEVELOPMENT_MODE", False)
    carriers = _carriers(env)
    vonage, plivo = load_vonage_settings(env), load_plivo_settings(env)
    signed = bool(twilio_auth_token or carriers["telnyx_public_key"] or carriers["signalwire_signing_key"])
    signed = signed or bool(vonage.signature_secret or plivo.auth_token)
    if not signed and not development_mode and (gemini_api_key or live_url or platform == "vertex"):
        # An unauthenticated webhook and media stream in front of a paid model is an open door to the bill.
        raise ConfigError(
            "TWILIO_AUTH_TOKEN is not set, so nobody's Twilio signatures can be checked: set it to the "
            "account's auth token (or another carrier's signing secret: TELNYX_PUBLIC_KEY, "
            "SIGNALWIRE_SIGNING_KEY, VONAGE_SIGNATURE_SECRET, PLIVO_AUTH_TOKEN), or set "
            "DEVELOPMENT_MODE=true to run unauthenticated (never in production)"
        )
    max_calls = _int(env, "MAX_CONCURRENT_CALLS", 500)
    if max_calls < 1:
        raise ConfigError(f"MAX_CONCURRENT_CALLS={max_calls} must be at least 1")
    max_unverified = _int(env, "MAX_UNVERIFIED_STREAMS", 64)
    if not 1 <= max_unverified <= 10_000:
        raise ConfigError(
            f"MAX_UNVERIFIED_STREAMS={max_unverified} must be between 1 and 10000: media sockets waiting "
            "for a verified `start` (Twilio sends it within milliseconds: a few dozen is plenty)"
        )
    max_message_bytes = _int(env, "MAX_MESSAGE_BYTES", 64 * 1024)
    if max_message_bytes < 4096:
        raise ConfigError(f"MAX_MESSAGE_BYTES={max_message_bytes} must be at least 4096 (a Twilio `start`)")
    barge_in = _choice(env, "BARGE_IN", ("local", "server"), "local")
    stall_timeout_s = _seconds(env, "STALL_TIMEOUT_S", 5.0, 1, 60)
    quiet_chunk_ms = _chunk_ms(env, "LIVE_QUIET_CHUNK_MS", 100, "is quiet")
    speech_default = min(SPEECH_CHUNK_MS, quiet_chunk_ms)
    speech_chunk_ms = _chunk_ms(env, "LIVE_SPEECH_CHUNK_MS", speech_default, "may be speaking")
    if speech_chunk_ms > quiet_chunk_ms:
        raise ConfigError(
            f"LIVE_SPEECH_CHUNK_MS={speech_chunk_ms} is more than LIVE_QUIET_CHUNK_MS={quiet_chunk_ms}: a "
            "chunk while the caller may be speaking is no larger than one in a quiet"
        )
    agents = default_book(live, greeting, barge_in)
    if agents_file := env.get("AGENTS_FILE"):
        try:
            agents = load_agents(agents_file, agents.default)
        except AgentsFileError as exc:
            raise ConfigError(f"AGENTS_FILE: {exc}") from None
    tools_secret = env.get("TOOLS_SECRET") or None
    if agents.uses_http_tools and not tools_secret:
        raise ConfigError(
            "the agents file declares HTTP tools: set TOOLS_SECRET, the key their requests are signed with"
        )
    prewarm_s = _float(env, "LIVE_PREWARM_S", 10.0)
    if not 0 <= prewarm_s <= 60:
        raise ConfigError(f"LIVE_PREWARM_S={prewarm_s} must be between 0 (off) and 60 seconds")
    prewarm_max_sessions = _int(env, "LIVE_PREWARM_MAX_SESSIONS", 100)
    if not 1 <= prewarm_max_sessions <= 10_000:
        raise ConfigError(
            f"LIVE_PREWARM_MAX_SESSIONS={prewarm_max_sessions} must be between 1 and 10000 (each pre-warmed "
            "session is billed; LIVE_PREWARM_S=0 turns pre-warm off)"
        )
    log_format = (env.get("LOG_FORMAT") or "auto").lower()
    if log_format not in {"auto", "json", "console"}:
        raise ConfigError("LOG_FORMAT must be json, console or auto")
    log_level = (env.get("LOG_LEVEL") or "info").strip().lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={log_level!r} must be one of {', '.join(LOG_LEVELS)} (default info)")
    http_header_timeout_s = _seconds(env, "HTTP_HEADER_TIMEOUT_S", 5.0, 1, 60)
    http_body_timeout_s = _seconds(env, "HTTP_BODY_TIMEOUT_S", 10.0, 1, 120)
    http_max_connections = _int(env, "HTTP_MAX_CONNECTIONS", 256)
    if http_max_connections < 16:
        raise ConfigError(f"HTTP_MAX_CONNECTIONS={http_max_connections} must be at least 16")
    database_url = _database_url(env)
    records_spool_dir = env.get("RECORDS_SPOOL_DIR") or DEFAULT_RECORDS_SPOOL_DIR
    if Path(records_spool_dir).exists() and not Path(records_spool_dir).is_dir():
        raise ConfigError(f"RECORDS_SPOOL_DIR={records_spool_dir!r} is a file: it must be a directory")
    records_spool_max_mb = _int(env, "RECORDS_SPOOL_MAX_MB", 64)
    if not 0 <= records_spool_max_mb <= 100_000:
        raise ConfigError(
            f"RECORDS_SPOOL_MAX_MB={records_spool_max_mb} must be between 0 (no spool on disk) and 100000"
        )
    live_setup_timeout_s = _seconds(env, "LIVE_SETUP_TIMEOUT_S", 6.0, 1, 30)
    live_stall_s = _seconds(env, "LIVE_STALL_S", 8.0, 2, 120)
    drain_grace_s = _int(env, "DRAIN_GRACE_SECONDS", 15)
    if drain_grace_s < 0:
        raise ConfigError(f"DRAIN_GRACE_SECONDS={drain_grace_s} must be 0 or more")
    twilio_api_base_url = _twilio_api_base_url(env)
    from_number, countries, max_outbound, amd_timeout = _outbound(env)
    return Settings(
        port=_port(env),
        public_url=public_url,
        twilio_auth_token=twilio_auth_token,
        twilio_account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
        gemini_api_key=gemini_api_key,
        gemini_live_url=live_url,
        gemini_api_version=api_version,
        live=live,
        greeting=greeting,
        failure_message=failure_message,
        live_input_rate=input_rate,
        live_setup_timeout_s=live_setup_timeout_s,
        live_stall_s=live_stall_s,
        development_mode=not signed,
        max_concurrent_calls=max_calls,
        max_unverified_streams=max_unverified,
        max_message_bytes=max_message_bytes,
        start_timeout_s=_positive(env, "STREAM_START_TIMEOUT_S", 10.0),
        media_idle_timeout_s=_positive(env, "MEDIA_IDLE_TIMEOUT_S", 20.0),
        max_call_duration_s=_positive(env, "MAX_CALL_DURATION_S", 4 * 3600.0),
        agents=agents,
        tools_secret=tools_secret,
        prewarm_s=prewarm_s,
        prewarm_max_sessions=prewarm_max_sessions,
        log_format=log_format,
        log_level=log_level,
        log_pii=_bool(env, "LOG_PII", False),
        http_header_timeout_s=http_header_timeout_s,
        http_body_timeout_s=http_body_timeout_s,
        http_max_connections=http_max_connections,
        database_url=database_url,
        calls_api_token=env.get("CALLS_API_TOKEN") or None,
        records_spool_dir=records_spool_dir,
        records_spool_max_mb=records_spool_max_mb,
        drain_grace_s=float(drain_grace_s),
        twilio_api_base_url=twilio_api_base_url,
        twilio_from_number=from_number,
        outbound_countries=countries,
        max_outbound_calls=max_outbound,
        amd_timeout_s=amd_timeout,
        barge_in=barge_in,
        stall_timeout_s=stall_timeout_s,
        live_quiet_chunk_ms=quiet_chunk_ms,
        live_speech_chunk_ms=speech_chunk_ms,
        google_credentials_file=credentials_file,
        web_concurrency=_web_concurrency(env),
        console_password=_console_password(env),
        live_prices=_live_prices(env),
        **_recording(env),
        telnyx_api_key=carriers["telnyx_api_key"],
        telnyx_public_key=carriers["telnyx_public_key"],
        telnyx_api_base_url=carriers["telnyx_api_base_url"],
        signalwire_project_id=carriers["signalwire_project_id"],
        signalwire_api_token=carriers["signalwire_api_token"],
        signalwire_space_url=carriers["signalwire_space_url"],
        signalwire_signing_key=carriers["signalwire_signing_key"],
        vonage=vonage,
        plivo=plivo,
    )


def _recording(env: dict[str, str]) -> dict[str, Any]:
    """RECORDING, RECORDINGS_URL, RECORDING_NOTICE and RECORDING_RETENTION_DAYS, checked."""
    from gateway.recording.notice import is_prompt_file, read_prompt
    from gateway.recording.storage import DEFAULT_RECORDINGS_URL, StorageError, parse_recordings_url

    recording = _choice(env, "RECORDING", RECORDING_MODES, "off")
    url = env.get("RECORDINGS_URL", "").strip() or DEFAULT_RECORDINGS_URL
    try:
        parse_recordings_url(url)
    except StorageError as exc:
        raise ConfigError(str(exc)) from None
    notice = env.get("RECORDING_NOTICE", "").strip()
    if notice.lower() in ("none", "off"):
        notice = ""
    if is_prompt_file(notice):
        try:
            read_prompt(notice)
        except ValueError as exc:
            raise ConfigError(f"RECORDING_NOTICE: {exc}") from None
    elif '"' in notice or len(notice) > 500:
        raise ConfigError("RECORDING_NOTICE must be a text (500 characters, no '\"') or a .wav file")
    days = _float(env, "RECORDING_RETENTION_DAYS", 0.0)
    if days < 0:
        raise ConfigError(f"RECORDING_RETENTION_DAYS={days:g} must be 0 (keep them) or a number of days")
    return dict(
        recording=recording, recordings_url=url, recording_notice=notice, recording_retention_days=days
    )


def _live_prices(env: dict[str, str]) -> Prices:
    try:
        return Prices.parse(env.get("LIVE_PRICES") or "")
    except PricesError as exc:
        raise ConfigError(f"LIVE_PRICES: {exc}") from None


def _console_password(env: dict[str, str]) -> str | None:
    password = env.get("CONSOLE_PASSWORD") or None
    if password is not None and len(password) < CONSOLE_PASSWORD_MIN:
        raise ConfigError(
            f"CONSOLE_PASSWORD must be at least {CONSOLE_PASSWORD_MIN} characters: it signs in to every "
            "call's transcript"
        )
    return password


def _carriers(env: dict[str, str]) -> dict[str, str | None]:
    """The settings of the carriers beside Twilio, checked: a pair that must come together, a key that
    must be a key, a URL that must be a URL."""
    public_key = (env.get("TELNYX_PUBLIC_KEY") or "").strip() or None
    if public_key is not None:
        try:
            raw = base64.b64decode(public_key, validate=True)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ConfigError(
                "TELNYX_PUBLIC_KEY must be the account's Ed25519 public key as Telnyx shows it (base64 of "
                "32 bytes: Mission Control > Keys & Credentials > Public Key)"
            )
    telnyx_base = env.get("TELNYX_API_BASE_URL") or None
    if telnyx_base and urlsplit(telnyx_base).scheme not in {"http", "https"}:
        raise ConfigError(f"TELNYX_API_BASE_URL={telnyx_base!r} must be an http(s) URL")
    project, token = env.get("SIGNALWIRE_PROJECT_ID") or None, env.get("SIGNALWIRE_API_TOKEN") or None
    space = (env.get("SIGNALWIRE_SPACE_URL") or "").strip().rstrip("/") or None
    if bool(project) != bool(token):
        raise ConfigError("SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN go together: set both or neither")
    if project and not space:
        raise ConfigError(
            "SIGNALWIRE_SPACE_URL is required with SIGNALWIRE_PROJECT_ID (your-space.signalwire.com)"
        )
    if space is not None:
        if "://" not in space:
            space = "https://" + space
        if urlsplit(space).scheme not in {"http", "https"} or not urlsplit(space).netloc:
            raise ConfigError(f"SIGNALWIRE_SPACE_URL={space!r} must be your space's host or https:// URL")
    return {
        "telnyx_api_key": env.get("TELNYX_API_KEY") or None,
        "telnyx_public_key": public_key,
        "telnyx_api_base_url": telnyx_base.rstrip("/") if telnyx_base else None,
        "signalwire_project_id": project,
        "signalwire_api_token": token,
        "signalwire_space_url": space,
        "signalwire_signing_key": env.get("SIGNALWIRE_SIGNING_KEY") or None,
    }


def _web_concurrency(env: dict[str, str]) -> int:
    """WEB_CONCURRENCY: gateway processes on one port; default one per core this process may run on."""
    processes = _int(env, "WEB_CONCURRENCY", usable_cores())
    if not 1 <= processes <= 256:
        raise ConfigError(
            f"WEB_CONCURRENCY={processes} must be between 1 and 256 (gateway processes on one port)"
        )
    return processes


def _outbound(env: dict[str, str]) -> tuple[str | None, frozenset[str], int, int]:
    """TWILIO_FROM_NUMBER, OUTBOUND_COUNTRIES (default: the from number's country), MAX_OUTBOUND_CALLS,
    AMD_TIMEOUT_S."""
    from gateway.outbound.destinations import country_of, parse_countries

    from_number = (env.get("TWILIO_FROM_NUMBER") or "").strip() or None
    home = None
    if from_number is not None:
        home = country_of(from_number)
        if home is None:
            raise ConfigError(
                f"TWILIO_FROM_NUMBER={from_number!r} must be a valid E.164 number like +12025550123 "
                "(one of the account's numbers)"
            )
    raw = env.get("OUTBOUND_COUNTRIES", "").strip()
    try:
        countries = parse_countries(raw) if raw else frozenset({home} if home else ())
    except ValueError as exc:
        raise ConfigError(f"OUTBOUND_COUNTRIES={raw!r}: {exc}") from None
    max_outbound = _int(env, "MAX_OUTBOUND_CALLS", 20)
    if not 1 <= max_outbound <= 10_000:
        raise ConfigError(f"MAX_OUTBOUND_CALLS={max_outbound} must be between 1 and 10000")
    amd_timeout = _int(env, "AMD_TIMEOUT_S", 30)
    if not 3 <= amd_timeout <= 59:
        raise ConfigError(f"AMD_TIMEOUT_S={amd_timeout} must be between 3 and 59 seconds (Twilio's range)")
    return from_number, countries, max_outbound, amd_timeout


def usable_cores(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The cores this process may use: its CPU affinity, capped by a container's CPU quota (cgroup v2), which
    a pod or a dyno sets while the affinity still shows every core of the host."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path(cpu_max).read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))  # a quota of 1.5 cores: 2 processes
    except (OSError, ValueError):
        pass
    return cores
