"""OAuth bearer tokens for Live on Vertex AI, from google-auth, refreshed before they expire.

Credentials come from a service-account key file (GOOGLE_APPLICATION_CREDENTIALS) or, without one, from
google-auth's own search (`google.auth.default`: the metadata server on Google Cloud, gcloud's application
default credentials). A token lives about an hour. A call must never wait for a refresh: once a token has less
than `REFRESH_AHEAD_S` left it is refreshed in the background while it is still handed out, and only a token
too close to its end (`REFRESH_NOW_S`, google-auth's own threshold is 3 min 45 s) makes a connect wait.
The token is a secret: it is never logged, and `repr` of this class does not show it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

import structlog

log = structlog.get_logger("gateway.live")

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
REFRESH_AHEAD_S = 600.0  # under 10 minutes left: refresh in the background, keep using the current token
REFRESH_NOW_S = 240.0  # under 4 minutes left: the connect waits for a new token


class CredentialsError(ValueError):
    """The credentials cannot be loaded or refreshed; the message says why (never the secret)."""


def check_credentials_file(path: str) -> None:
    """A readable JSON key file google-auth can load: checked at start-up, not on the first call."""
    file = Path(path)
    if not file.is_file():
        raise CredentialsError(f"{path!r} is not a file")
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"{path!r} is not a readable JSON key file ({type(exc).__name__})") from None
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
        if missing:
            raise CredentialsError(f"{path!r} is a service-account key without {', '.join(missing)}")
    elif kind not in {"authorized_user", "external_account", "impersonated_service_account"}:
        raise CredentialsError(
            f"{path!r} has type {kind!r}: use a service-account key file (type service_account) or "
            "unset it to use the metadata server"
        )


def refresh_due(expiry: dt.datetime | None, now: dt.datetime) -> Literal["no", "background", "now"]:
    """Whether a token expiring at `expiry` (naive UTC, as google-auth keeps it; None: no token yet) needs a
    refresh, and whether a connect must wait for it."""
    if expiry is None:
        return "now"
    left = (expiry - now).total_seconds()
    if left < REFRESH_NOW_S:
        return "now"
    if left < REFRESH_AHEAD_S:
        return "background"
    return "no"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class VertexAuth:
    """Bearer tokens for one service. `await headers()` before each connect."""

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"VertexAuth({type(self._credentials).__name__})"

    @classmethod
    def load(cls, credentials_file: str | None) -> VertexAuth:
        """From a key file, or google-auth's default search. Raises CredentialsError."""
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
        from google.oauth2 import service_account

        try:
            if credentials_file:
                info = json.loads(Path(credentials_file).read_text())
                if info.get("type") == "service_account":
                    creds = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
                else:
                    creds, _ = google.auth.load_credentials_from_file(credentials_file, scopes=SCOPES)
            else:
                creds, _ = google.auth.default(scopes=SCOPES)
        except (DefaultCredentialsError, ValueError, OSError) as exc:
            raise CredentialsError(f"no usable Google credentials: {type(exc).__name__}: {exc}") from None
        return cls(creds)

    async def headers(self) -> dict[str, str]:
        """The HTTP headers a Live connect to Vertex carries: `Authorization: Bearer ...` (and the quota
        project, when the credentials name one)."""
        due = refresh_due(self._credentials.expiry if self._credentials.token else None, _utcnow())
        if due == "now":
            await self._refresh()
        elif due == "background" and self._background is None:
            self._background = asyncio.create_task(self._refresh_in_background())
        headers = {"Authorization": f"Bearer {self._credentials.token}"}
        quota = getattr(self._credentials, "quota_project_id", None)
        if quota:
            headers["x-goog-user-project"] = quota
        return headers

    async def _refresh(self) -> None:
        async with self._lock:
            # Another connect may have refreshed while this one waited for the lock.
            if self._credentials.token and refresh_due(self._credentials.expiry, _utcnow()) != "now":
                return
            await asyncio.to_thread(self._refresh_blocking)

    async def _refresh_in_background(self) -> None:
        try:
            async with self._lock:
                await asyncio.to_thread(self._refresh_blocking)
        except CredentialsError as exc:
            log.warning("vertex_token_refresh_failed", error=str(exc))  # the next connect tries again
        finally:
            self._background = None

    def _refresh_blocking(self) -> None:
        import google.auth.transport.requests
        from google.auth.exceptions import GoogleAuthError

        try:
            self._credentials.refresh(google.auth.transport.requests.Request())
        except GoogleAuthError as exc:
            # google-auth's messages carry the token endpoint's error, never the token or the key.
            raise CredentialsError(f"could not get a Vertex AI access token: {exc}") from None
        log.info("vertex_token_refreshed", expires=str(self._credentials.expiry))

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
