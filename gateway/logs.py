"""structlog set-up: JSON lines in production, a readable console in development.

Every line logged inside a call carries `call_sid` and `stream_sid` (bound as context variables by the Call),
and a redacting processor keeps secrets out of every line whatever a caller of `log` passes. Another keeps
personal data out unless `LOG_PII=true`: callers' numbers are masked (`+*********67`) in fields named for
them and wherever a number-shaped string appears, keys pressed and recognised speech become their length.
(Transcripts are never logged at all: they go to the call records.) Lines from the standard library's
loggers (uvicorn, asyncio, websockets) go through the same processors, so every line is one JSON object.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections import Counter
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

# Keys whose values are secrets; and key-shaped strings that must never reach a log line.
_SECRET_KEYS = re.compile(r"(^|_)(api_?key|key|token|signature|secret|password|authorization)$", re.I)
# (Google OAuth access tokens start `ya29.`; a bearer token is masked whatever its shape.)
_SECRET_VALUES = re.compile(
    r"(AIza[0-9A-Za-z_\-]{20,}|ya29\.[0-9A-Za-z_\-.]+|([?&]key=|Bearer\s+)[^&\s\"']+)"
)
_secrets: set[str] = set()

# Personal data: fields that hold a phone number (or a SIP/client address), keys pressed, words spoken.
_NUMBER_KEYS = frozenset({"caller", "called", "from", "to", "from_number", "to_number", "number", "target"})
_DIGIT_KEYS = frozenset({"digit", "digits"})
_SPEECH_KEYS = frozenset({"text", "heard", "transcript"})
_NOT_PERSONAL = frozenset({"", "anonymous", "unknown", "restricted", "private", "unavailable"})
# An E.164 number anywhere in a string (plain, or URL-encoded as in a form body).
_NUMBER_VALUES = re.compile(r"(?<![\w+%])(\+|%2[Bb])([1-9]\d{6,14})(?!\d)")
_show_pii = False


def register_secret(value: str | None) -> None:
    """A configured secret (API key, auth token) is masked wherever it appears in a log line."""
    if value and len(value) >= 6:
        _secrets.add(value)


def _mask(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return _SECRET_VALUES.sub(lambda m: (m.group(2) or "") + "[redacted]", text)


def _scrub(value: Any) -> Any:
    """Mask secrets in a value and in whatever it contains (a dict of parameters, a list of headers)."""
    if isinstance(value, str):
        return _mask(value)
    if isinstance(value, dict):
        return {
            k: "[redacted]" if isinstance(k, str) and _SECRET_KEYS.search(k) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, BaseException):
        return _mask(str(value))
    return value


def redact(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """The structlog processor that masks secret-named keys and secret-shaped values."""
    for key, value in event.items():
        if key != "event" and _SECRET_KEYS.search(key):
            event[key] = "[redacted]"
        else:
            event[key] = _scrub(value)
    return event


def mask_number(value: str) -> str:
    """`+15551230067` -> `+*********67`: enough to tell two callers apart in an incident, not to call one."""
    if value.strip().lower() in _NOT_PERSONAL:
        return value
    digits = value[1:] if value.startswith("+") else value
    if digits.isdigit() and len(digits) > 4:
        return ("+" if value.startswith("+") else "") + "*" * (len(digits) - 2) + digits[-2:]
    return "[masked]"  # client:alice, sip:bob@example.com: an identity all the same


def _mask_numbers(text: str) -> str:
    return _NUMBER_VALUES.sub(lambda m: m.group(1) + "*" * (len(m.group(2)) - 2) + m.group(2)[-2:], text)


def _private(key: Any, value: Any) -> Any:
    if isinstance(key, str) and isinstance(value, str):
        name = key.lower()
        if name in _NUMBER_KEYS:
            return mask_number(value)
        if name in _DIGIT_KEYS:
            return "*" * len(value)
        if name in _SPEECH_KEYS:
            return f"[{len(value)} chars]"
    if isinstance(value, str):
        return _mask_numbers(value)
    if isinstance(value, dict):
        return {k: _private(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_private(key, v) for v in value]
    return value


def mask_personal_data(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """The structlog processor that keeps callers' numbers, keys and words out of a line (unless LOG_PII)."""
    if _show_pii:
        return event
    for key, value in event.items():
        if key != "event":
            event[key] = _private(key, value)
    return event


class _Stderr(logging.Handler):
    """Writes to whatever sys.stderr is when a line is emitted (tests and daemons redirect it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def configure_logging(fmt: str = "auto", level: str = "info", show_pii: bool = False) -> None:
    """Set up structlog (and route the standard library's loggers through it). `show_pii`: LOG_PII."""
    global _show_pii
    _show_pii = show_pii
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    # uvicorn, asyncio, websockets: one line each too, a traceback inside it as `exception`.
    handler = _Stderr()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level, stamp],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                mask_personal_data,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(old)
    root.addHandler(handler)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            redact,
            mask_personal_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # Looked up per line, not bound once, so a redirected stderr (tests, daemons) is honoured.
        # WriteLogger, not PrintLogger: print() writes a line and its newline apart, and a file's stderr is
        # write-through, so the processes of WEB_CONCURRENCY sharing one log could splice their lines.
        logger_factory=lambda *_: structlog.WriteLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


class RateLimitedLog:
    """One log line per occurrence, up to `per_second`; past that, one `summary_event` line a second with the
    counts by key: a flood of refusals must not become a flood of log lines (nor fill the log drain)."""

    def __init__(self, logger: Any, summary_event: str, per_second: int = 50) -> None:
        self.logger = logger
        self.summary_event = summary_event
        self.per_second = per_second
        self._window_started = -1e9
        self._logged = 0
        self._suppressed: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None

    def warning(self, key: str, event: str, **fields: Any) -> None:
        """Log `event` with `fields`, or count it under `key` when over the rate."""
        now = time.monotonic()
        if now - self._window_started >= 1.0:
            self._window_started, self._logged = now, 0
        if self._logged < self.per_second:
            self._logged += 1
            self.logger.warning(event, **fields)
            return
        self._suppressed[key] += 1
        if self._flush is None:
            delay = max(0.0, self._window_started + 1.0 - now)
            self._flush = asyncio.get_running_loop().call_later(delay, self._log_suppressed)

    def _log_suppressed(self) -> None:
        self._flush = None
        counts, self._suppressed = dict(self._suppressed), Counter()
        self.logger.warning(self.summary_event, total=sum(counts.values()), by_reason=counts, window_s=1.0)

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._log_suppressed()
