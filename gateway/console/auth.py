"""Who may use the console: sign-in, the session cookie, CSRF tokens, the sign-in rate limit.

The console is on only when it has a password: `CONSOLE_PASSWORD`, or else `CALLS_API_TOKEN` (whoever holds
the API token may read the records anyway). Signing in sets one cookie, HTTP-only and `SameSite=Strict`
(`Secure` when PUBLIC_URL is https), holding a random session id and its expiry, signed with a key derived
from the password: every process and instance that has the password checks it alike (WEB_CONCURRENCY, a
rolling deploy), and changing the password signs everybody out.

Every state-changing request also carries the session's CSRF token (header `X-CSRF-Token` or form field
`csrf`), derived from the session id with the same key. A WebSocket has no CSRF token and no `SameSite`
guarantee across all browsers, so one is accepted only from the gateway's own origin.

Signing out forgets the session in this process (a copied cookie is refused here until it expires) and
clears the cookie; the cookie's own expiry bounds it everywhere else.

Pure parts (`SessionKey`, `SignInLimiter`) take times as arguments; `session_of` reads the clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, Request

COOKIE = "gateway_console"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SESSION_S = 12 * 3600  # a working day; then sign in again
# Sign-in attempts that fail: this many per client within the window, then refused until the window passes.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 300.0
MAX_CLIENTS_TRACKED = 10_000  # bounded memory under a flood of addresses: the oldest are forgotten
MAX_REVOKED = 10_000


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

    def new(self, now: float) -> tuple[ConsoleSession, str]:
        """A new session and its cookie value."""
        session_id = secrets.token_urlsafe(16)
        expires = int(now) + SESSION_S
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


class SignInLimiter:
    """Failed sign-ins per client: at most MAX_FAILURES within FAILURE_WINDOW_S, then refused until the
    oldest of them leaves the window. A success forgets the client's failures."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds until this client may try again; None if it may now."""
        recent = [t for t in self._failures.get(client, ()) if now - t < self.window_s]
        if len(recent) < self.max_failures:
            return None
        return max(1.0, recent[0] + self.window_s - now)

    def failed(self, client: str, now: float) -> None:
        recent = [t for t in self._failures.pop(client, []) if now - t < self.window_s]
        self._failures[client] = [*recent, now][-self.max_failures :]
        while len(self._failures) > MAX_CLIENTS_TRACKED:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


class ConsoleAuth:
    """The console's sign-in state in this process: the key, the limiter, the sessions signed out here."""

    def __init__(self, password: str, secure_cookie: bool) -> None:
        self.key = SessionKey(password)
        self.secure_cookie = secure_cookie
        self.limiter = SignInLimiter()
        self._revoked: OrderedDict[str, int] = OrderedDict()  # session id -> its expiry

    def revoke(self, session: ConsoleSession) -> None:
        self._revoked[session.id] = session.expires
        while len(self._revoked) > MAX_REVOKED:
            self._revoked.popitem(last=False)

    def session(self, cookie: str, now: float) -> ConsoleSession | None:
        session = self.key.read(cookie, now)
        if session is None or session.id in self._revoked:
            return None
        return session


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
    """Who is signing in, for the rate limit: the peer's address."""
    return conn.client.host if conn.client else "unknown"
