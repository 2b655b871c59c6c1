"""structlog set-up: JSON lines in production, a readable console in development.

Every line logged inside a call carries `call_sid` and `stream_sid` (bound as context variables by the Call),
and a redacting processor keeps secrets out of every line whatever a caller of `log` passes.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

# Keys whose values are secrets; and key-shaped strings that must never reach a log line.
_SECRET_KEYS = re.compile(r"(^|_)(api_?key|key|token|signature|secret|password|authorization)$", re.I)
_SECRET_VALUES = re.compile(r"(AIza[0-9A-Za-z_\-]{20,}|([?&]key=)[^&\s]+)")
_secrets: set[str] = set()


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


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # Looked up per line, not bound once, so a redirected stderr (tests, daemons) is honoured.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
