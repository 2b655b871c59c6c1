"""Who may use the console: sign-in, the session cookie, CSRF tokens, the sign-in rate limit.

The console is on only when it has a password: `CONSOLE_PASSWORD`, or else `CALLS_API_TOKEN` if it is as long
as a password must be (whoever holds the API token may read the records anyway). Signing in sets one cookie,
HTTP-only and `SameSite=Strict` (`Secure` when PUBLIC_URL is https), holding a random session id and its
expiry, signed with a key derived from the password: every process and instance that has the password checks
it alike (WEB_CONCURRENCY, a rolling deploy), and changing the password signs everybody out.

Every state-changing request also carries the session's CSRF token (header `X-CSRF-Token` or form field
`csrf`), derived from the session id with the same key. A WebSocket has no CSRF token and no `SameSite`
guarantee across all browsers, so one is accepted only from the gateway's own origin.

Signing out clears the cookie and keeps the session's id until it expires: a copied cookie is refused by
every process of the instance (with WEB_CONCURRENCY, the machine's table), and the cookie's own expiry
bounds it on other instances.

The sign-in state is two tables of digests and times (`local_tables`, or the machine's shared memory), and
the rules over them are pure functions (`signed_out_in`, `retry_after_in`, ...); `SessionKey` and
`SignInLimiter` take times as arguments; `session_of` reads the clock.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
from starlette.requests import HTTPConnection, Request

from gateway.forwarded import client_address
from gateway.machine import SIGN_IN_FAILURE_TABLE, SIGNED_OUT_TABLE, digest

COOKIE = "gateway_console"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SESSION_S = 12 * 3600  # a working day; then sign in again
# Sign-in attempts that fail: this many per client within the window, then refused until the window passes.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 300.0


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in operator: the session's id (random), when it expires (unix seconds), its CSRF token."""

    id: str
    expires: int
    csrf: str


class SessionKey:
    """Signs and checks session cookies and derives CSRF tokens, with a key derived from the password."""

    def __init__(self, password: str) -> None:
        self._password = password.encode()
        self._key = hmac.new(self._password, b"gateway console session v1", hashlib.sha256).digest()

    def password_ok(self, given: str) -> bool:
        """Constant time: how much of a guess matches says nothing."""
        return hmac.compare_digest(
            hashlib.sha256(given.encode()).digest(), hashlib.sha256(self._password).digest()
        )

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def _csrf(self, session_id: str) -> str:
        return self._sign(f"csrf:{session_id}")

    def new(self, now: float, lifetime_s: int = SESSION_S) -> tuple[ConsoleSession, str]:
        """A new session and its cookie value."""
        session_id = secrets.token_urlsafe(16)
        expires = int(now) + lifetime_s
        payload = f"{session_id}.{expires}"
        return ConsoleSession(session_id, expires, self._csrf(session_id)), f"{payload}.{self._sign(payload)}"

    def read(self, cookie: str, now: float) -> ConsoleSession | None:
        """The session a cookie holds; None if it is forged, malformed or expired."""
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        session_id, expires_text, mac = parts
        if not hmac.compare_digest(mac.encode(), self._sign(f"{session_id}.{expires_text}").encode()):
            return None
        expires = int(expires_text)
        if expires <= now:
            return None
        return ConsoleSession(session_id, expires, self._csrf(session_id))


Tables = Callable[[], AbstractContextManager[tuple[np.ndarray, ...]]]


def local_tables() -> Tables:
    """The sign-in tables in this process's memory (one process: no lock, nothing shared)."""
    tables = (
        np.zeros(SIGNED_OUT_TABLE, np.int64),
        np.zeros(SIGNED_OUT_TABLE, np.float64),
        np.zeros(SIGN_IN_FAILURE_TABLE, np.int64),
        np.zeros(SIGN_IN_FAILURE_TABLE, np.float64),
    )
    return lambda: contextlib.nullcontext(tables)


# The rules over the tables, pure: a table is a pair of arrays, digests (0: a free entry) and times.


def signed_out_in(sessions: np.ndarray, expiries: np.ndarray, session: int, now: float) -> bool:
    return bool(np.any((sessions == session) & (expiries > now)))


def sign_out_in(sessions: np.ndarray, expiries: np.ndarray, session: int, expires: float) -> None:
    """Over a free or expired entry; a full table forgets the sign-out that expires first (its cookie is good
    again until then, as it was when every process kept its own)."""
    entry = int(np.argmin(np.where(sessions == 0, -np.inf, expiries)))
    sessions[entry], expiries[entry] = session, expires


def _recent(clients: np.ndarray, times: np.ndarray, client: int, now: float, window_s: float) -> np.ndarray:
    return times[(clients == client) & (times > now - window_s)]


def retry_after_in(
    clients: np.ndarray, times: np.ndarray, client: int, now: float, max_failures: int, window_s: float
) -> float | None:
    """Seconds until `client` may try again, at least one; None if it may now."""
    recent = _recent(clients, times, client, now, window_s)
    if len(recent) < max_failures:
        return None
    return max(1.0, float(recent.min()) + window_s - now)


def failed_in(
    clients: np.ndarray, times: np.ndarray, client: int, now: float, max_failures: int, window_s: float
) -> None:
    """One more failure of `client`'s: over its oldest once it has `max_failures` (only the latest count),
    else over a free entry or, the table full, the failure longest ago."""
    mine = np.flatnonzero(clients == client)
    if len(mine) >= max_failures:
        entry = int(mine[np.argmin(times[mine])])
    else:
        entry = int(np.argmin(np.where(clients == 0, -np.inf, times)))
    clients[entry], times[entry] = client, now


def attempt_in(
    clients: np.ndarray, times: np.ndarray, client: int, now: float, max_failures: int, window_s: float
) -> float | None:
    """A sign-in try by `client`: refused (seconds to wait) at the limit, else counted as a failure at once,
    in the same step, so that tries at the same moment on several processes cannot all pass the check (a
    success then forgets the client's failures, this one with them)."""
    wait_s = retry_after_in(clients, times, client, now, max_failures, window_s)
    if wait_s is None:
        failed_in(clients, times, client, now, max_failures, window_s)
    return wait_s


def succeeded_in(clients: np.ndarray, times: np.ndarray, client: int) -> None:
    mine = clients == client
    clients[mine], times[mine] = 0, 0.0


class SignInLimiter:
    """Failed sign-ins per client: at most MAX_FAILURES within FAILURE_WINDOW_S, then refused until the
    oldest of them leaves the window. A success forgets the client's failures. Kept in `tables` (this
    process's, or the machine's: then the limit holds whichever process a try reaches)."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = FAILURE_WINDOW_S,
        tables: Tables | None = None,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._tables = tables or local_tables()

    def attempt(self, client: str, now: float) -> float | None:
        """A try: None if the client may try now (it counts as a failure until `succeeded`), else the
        seconds until it may."""
        with self._tables() as (_, _, clients, times):
            return attempt_in(clients, times, digest(client), now, self.max_failures, self.window_s)

    def succeeded(self, client: str) -> None:
        with self._tables() as (_, _, clients, times):
            succeeded_in(clients, times, digest(client))


class ConsoleAuth:
    """The console's sign-in state: the key, the limiter, the sessions signed out; in this process's memory,
    or with several processes in the machine's (`gateway.machine`), so that each holds for all of them."""

    def __init__(self, password: str, secure_cookie: bool, tables: Tables | None = None) -> None:
        self.key = SessionKey(password)
        self.secure_cookie = secure_cookie
        self._tables = tables or local_tables()
        self.limiter = SignInLimiter(tables=self._tables)

    def revoke(self, session: ConsoleSession) -> None:
        with self._tables() as (sessions, expiries, _, _):
            sign_out_in(sessions, expiries, digest(session.id), session.expires)

    def session(self, cookie: str, now: float) -> ConsoleSession | None:
        session = self.key.read(cookie, now)
        if session is None:
            return None
        with self._tables() as (sessions, expiries, _, _):
            return None if signed_out_in(sessions, expiries, digest(session.id), now) else session


def console_auth(conn: HTTPConnection) -> ConsoleAuth | None:
    """The app's console sign-in state; None when the console is off (no password configured)."""
    return getattr(conn.app.state, "console_auth", None)


def own_origin(conn: HTTPConnection) -> str:
    """The gateway's origin as a browser names it: PUBLIC_URL's, or (development) the request's host."""
    public_url = conn.app.state.gateway.settings.public_url
    if public_url:
        parts = urlsplit(public_url)
        return f"{parts.scheme}://{parts.netloc}"
    scheme = "https" if conn.url.scheme in ("https", "wss") else "http"
    return f"{scheme}://{conn.headers.get('host', conn.url.netloc)}"


def session_of(conn: HTTPConnection) -> ConsoleSession | None:
    """The signed-in session of a request or a WebSocket; None without one (or with the console off). A
    WebSocket must also come from the gateway's own origin (a page elsewhere cannot borrow the cookie)."""
    auth = console_auth(conn)
    if auth is None:
        return None
    cookie = conn.cookies.get(COOKIE)
    if not cookie:
        return None
    if conn.scope["type"] == "websocket" and conn.headers.get("origin") != own_origin(conn):
        return None
    return auth.session(cookie, time.time())


def csrf_ok(request: Request, session: ConsoleSession) -> bool:
    """The request carries the session's CSRF token: header `X-CSRF-Token`, or form field `csrf` of a form
    already read (`await request.form()` first: Starlette keeps the parsed form on the request)."""
    given = request.headers.get(CSRF_HEADER)
    form = getattr(request, "_form", None)  # set by `await request.form()`, None before
    if given is None and form is not None:
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())


def client_of(conn: HTTPConnection) -> str:
    """Who is signing in, for the rate limit and the log: the client's address (gateway.forwarded)."""
    return client_address(conn.scope)
