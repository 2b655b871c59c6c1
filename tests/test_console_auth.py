"""The console's sign-in: the session cookie, CSRF tokens, the rate limit, and the calls API taking a session.

The rules (`SessionKey`, `SignInLimiter`, the sign-in tables' functions) are tested with times passed in; the
routes in-process with Starlette's test client (the app's own lifespan, a throw-away records file)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.console.auth import (
    COOKIE,
    SESSION_S,
    ConsoleAuth,
    SessionKey,
    SignInLimiter,
    failed_in,
    retry_after_in,
    sign_out_in,
    signed_out_in,
)
from gateway.machine import Machine
from gateway.records import CallRecord
from tests.support.gateway import UNUSED_LIVE_URL, json_lines, settings_for

PASSWORD = "correct horse battery"


def test_a_cookie_is_read_back_until_it_expires() -> None:
    key = SessionKey(PASSWORD)
    session, cookie = key.new(now=1000.0)
    assert key.read(cookie, 1000.0 + SESSION_S - 1) == session
    assert key.read(cookie, 1000.0 + SESSION_S) is None
    assert session.csrf and session.csrf != session.id


def test_a_forged_or_altered_cookie_is_refused() -> None:
    key = SessionKey(PASSWORD)
    _, cookie = key.new(now=1000.0)
    session_id, expires, mac = cookie.split(".")
    assert key.read(f"{session_id}.{int(expires) + 3600}.{mac}", 1000.0) is None  # a longer life
    assert key.read(f"other.{expires}.{mac}", 1000.0) is None
    assert SessionKey("another password!").read(cookie, 1000.0) is None  # the password changed
    for junk in ("", "a.b", "a.b.c", "a.1.c.d", cookie + "x"):
        assert key.read(junk, 1000.0) is None


def test_the_password_check() -> None:
    key = SessionKey(PASSWORD)
    assert key.password_ok(PASSWORD)
    assert not key.password_ok(PASSWORD[:-1])
    assert not key.password_ok("")


def test_sign_in_is_limited_per_client_until_the_window_passes() -> None:
    limiter = SignInLimiter(max_failures=3, window_s=60.0)
    for t in (0.0, 1.0, 2.0):
        assert limiter.attempt("a", t) is None  # let through, and a failure until a success says otherwise
    assert limiter.attempt("a", 3.0) == pytest.approx(57.0)
    assert limiter.attempt("b", 3.0) is None  # another client is not held up
    assert limiter.attempt("a", 60.5) is None  # the first failure has left the window; this try counts
    assert limiter.attempt("a", 60.9) == 1.0  # with 1.0 and 2.0: 1.0 leaves in 0.1 s: told at least a second
    limiter.succeeded("a")
    assert limiter.attempt("a", 61.5) is None


def test_the_sign_in_tables_forget_the_oldest_when_full() -> None:
    sessions, expiries = np.zeros(2, np.int64), np.zeros(2, np.float64)
    sign_out_in(sessions, expiries, 11, expires=500.0)
    sign_out_in(sessions, expiries, 12, expires=400.0)
    assert signed_out_in(sessions, expiries, 11, now=100.0) and not signed_out_in(
        sessions, expiries, 13, 100.0
    )
    sign_out_in(sessions, expiries, 13, expires=600.0)  # full: the sign-out that expires first is forgotten
    assert not signed_out_in(sessions, expiries, 12, 100.0) and signed_out_in(sessions, expiries, 13, 100.0)
    assert not signed_out_in(sessions, expiries, 11, now=500.0)  # expired: its cookie is refused anyway

    clients, times = np.zeros(4, np.int64), np.zeros(4, np.float64)
    for t in (1.0, 2.0, 3.0):
        failed_in(clients, times, 7, t, max_failures=2, window_s=60.0)  # only the latest two are kept
    assert sorted(times[clients == 7]) == [2.0, 3.0]
    failed_in(clients, times, 8, 4.0, 2, 60.0)
    failed_in(clients, times, 9, 5.0, 2, 60.0)
    failed_in(clients, times, 9, 6.0, 2, 60.0)  # full: client 7's oldest failure is forgotten
    assert retry_after_in(clients, times, 7, 6.0, 2, 60.0) is None
    assert retry_after_in(clients, times, 9, 6.0, 2, 60.0) == pytest.approx(59.0)


def test_a_session_signed_out_on_one_process_is_refused_by_every_process_and_so_are_its_failures() -> None:
    machine = Machine.create(2)  # the supervisor's shared memory; the two ConsoleAuths are two processes'
    first, second = (ConsoleAuth(PASSWORD, False, tables=machine.console_tables) for _ in range(2))
    session, cookie = first.key.new(now=1000.0)
    assert first.session(cookie, 1000.0) == second.session(cookie, 1000.0) == session
    second.revoke(session)
    assert first.session(cookie, 1001.0) is None and second.session(cookie, 1001.0) is None
    for t in range(5):
        assert (first if t % 2 else second).limiter.attempt("203.0.113.9", float(t)) is None
    assert first.limiter.attempt("203.0.113.9", 5.0) is not None  # five failures, wherever they were
    assert ConsoleAuth(PASSWORD, False).session(cookie, 1001.0) == session  # another instance: its own tables


@pytest.fixture
def client(tmp_path: object) -> Iterator[TestClient]:
    settings = settings_for(UNUSED_LIVE_URL, CONSOLE_PASSWORD=PASSWORD, CALLS_API_TOKEN="api-token-1234")
    with TestClient(create_app(settings), base_url="http://gateway.test") as test_client:
        yield test_client


def sign_in(client: TestClient) -> str:
    """Sign in; the session's CSRF token (as the pages carry it)."""
    response = client.post("/console/login", data={"password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert "secure" not in cookie.lower()  # PUBLIC_URL is not https here
    page = client.get("/console/calls")
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found
    return found.group(1)


def test_signing_in_and_out(client: TestClient) -> None:
    assert (
        client.get("/console/calls", follow_redirects=False)
        .headers["location"]
        .startswith("/console/login?next=/console/calls")
    )
    wrong = client.post("/console/login", data={"password": "nope"}, follow_redirects=False)
    assert wrong.status_code == 401 and COOKIE not in wrong.cookies
    csrf = sign_in(client)
    assert client.get("/console/calls").status_code == 200
    # Signing out needs the CSRF token too (a page elsewhere cannot sign the operator out).
    assert client.post("/console/logout", data={"csrf": "forged"}).status_code == 403
    cookie = client.cookies[COOKIE]
    out = client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/console/calls", follow_redirects=False).status_code == 303
    client.cookies.set(COOKIE, cookie)  # a copy of the signed-out cookie is refused too
    assert client.get("/console/calls", follow_redirects=False).status_code == 303


def test_sign_in_goes_back_only_to_a_console_page(client: TestClient) -> None:
    for target, lands in (("/console/live", "/console/live"), ("https://evil.example/", "/console"),
                          ("//evil.example", "/console")):  # fmt: skip
        client.cookies.clear()
        response = client.post(
            "/console/login", data={"password": PASSWORD, "next": target}, follow_redirects=False
        )
        assert response.headers["location"] == lands


def test_sign_in_is_rate_limited(client: TestClient) -> None:
    for _ in range(5):
        assert client.post("/console/login", data={"password": "guess"}).status_code == 401
    limited = client.post("/console/login", data={"password": PASSWORD}, follow_redirects=False)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert COOKIE not in limited.cookies  # not even the right password, until the window passes


def test_the_calls_api_takes_a_console_session_for_reading_only(client: TestClient) -> None:
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    gateway.records.save(CallRecord("CAconsole1", started_at=datetime.now(UTC)))
    client.portal.call(gateway.records.flush, 5.0)  # type: ignore[union-attr]
    assert client.get("/calls/CAconsole1").status_code == 401
    sign_in(client)
    assert client.get("/calls/CAconsole1").json()["call_sid"] == "CAconsole1"
    # Placing a call is not for a browser session: the bearer token only.
    assert client.post("/calls", json={"to": "+15550001111"}).status_code == 401


def test_the_console_is_off_without_a_password() -> None:
    settings = settings_for(UNUSED_LIVE_URL)
    with TestClient(create_app(settings)) as client:
        for path in ("/console", "/console/login", "/console/calls"):
            assert client.get(path).status_code == 404
        assert client.post("/console/login", data={"password": "x"}).status_code == 404


def test_the_api_token_signs_in_when_there_is_no_console_password() -> None:
    settings = settings_for(UNUSED_LIVE_URL, CALLS_API_TOKEN="api-token-1234")
    with TestClient(create_app(settings)) as client:
        response = client.post("/console/login", data={"password": "api-token-1234"}, follow_redirects=False)
        assert response.status_code == 303


def test_an_api_token_too_short_for_a_password_does_not_sign_in_and_start_up_says_why(capsys) -> None:
    """CONSOLE_PASSWORD must have 12 characters; CALLS_API_TOKEN standing in for it must too."""
    settings = settings_for(UNUSED_LIVE_URL, CALLS_API_TOKEN="tok123")
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.post("/console/login", data={"password": "tok123"}).status_code == 404
        assert client.get("/calls/CAnone", headers={"Authorization": "Bearer tok123"}).status_code == 404
    (off,) = [line for line in json_lines(capsys.readouterr().err) if line["event"] == "console_off"]
    assert "CONSOLE_PASSWORD" in off["note"] and "too short" in off["note"]


def test_a_short_console_password_is_refused_at_start_up() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match="CONSOLE_PASSWORD"):
        settings_for(UNUSED_LIVE_URL, CONSOLE_PASSWORD="short")


PAGES = ("/console", "/console/overview", "/console/calls", "/console/calls/CAnone", "/console/live")


def test_every_console_page_and_api_refuses_without_a_session(client: TestClient) -> None:
    for path in PAGES:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/console/login"), path
    assert client.get("/console/live/events").status_code == 401
    for path in ("/console/calls/CAnone/hangup", "/console/logout"):
        assert client.post(path).status_code == 401, path
    client.cookies.set(COOKIE, "forged.99999999999.signature")
    assert client.get("/console/calls", follow_redirects=False).status_code == 303
    assert client.post("/console/calls/CAnone/hangup").status_code == 401


def test_a_hang_up_needs_the_csrf_token(client: TestClient) -> None:
    csrf = sign_in(client)
    assert client.post("/console/calls/CAnone/hangup").status_code == 403
    wrong = {"X-CSRF-Token": "x" + csrf}
    assert client.post("/console/calls/CAnone/hangup", headers=wrong).status_code == 403
    assert client.post("/console/calls/CAnone/hangup", data={"csrf": "forged"}).status_code == 403
    right = client.post("/console/calls/CAnone/hangup", headers={"X-CSRF-Token": csrf})
    assert right.status_code == 404 and "no such call" in right.json()["error"]  # past the check


def test_bad_filters_and_unknown_calls_are_said_so(client: TestClient) -> None:
    sign_in(client)
    for query, says in (("min_s=soon", "min_s"), ("since=yesterday", "since"), ("outcome=won", "outcome"),
                        ("page=0", "page"), ("carrier=pigeon", "carrier")):  # fmt: skip
        response = client.get(f"/console/calls?{query}")
        assert response.status_code == 400 and says in response.text, query
    assert client.get("/console/calls/CAnone").status_code == 404


def test_a_websocket_takes_a_session_only_from_the_gateway_s_own_origin(client: TestClient) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from gateway.console.auth import session_of

    async def whoami(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"signed_in": session_of(ws) is not None})
        await ws.close()

    client.app.router.routes.append(WebSocketRoute("/test/whoami", whoami))  # type: ignore[attr-defined]
    sign_in(client)
    cookie = {"cookie": f"{COOKIE}={client.cookies[COOKIE]}"}
    # (the test client's WebSocket goes to host `testserver`, whatever its base URL)
    for origin, signed_in in (("http://testserver", True), ("https://evil.example", False), (None, False)):
        headers = {**cookie, **({"origin": origin} if origin else {})}
        with client.websocket_connect("/test/whoami", headers=headers) as ws:
            assert ws.receive_json() == {"signed_in": signed_in}, origin


def test_the_cookie_is_secure_behind_an_https_public_url() -> None:
    settings = settings_for(
        UNUSED_LIVE_URL, CONSOLE_PASSWORD=PASSWORD, PUBLIC_URL="https://voice.example.com"
    )
    with TestClient(create_app(settings), base_url="https://voice.example.com") as client:
        response = client.post("/console/login", data={"password": PASSWORD}, follow_redirects=False)
        assert "secure" in response.headers["set-cookie"].lower()


def test_what_callers_said_is_shown_as_text_never_markup(client: TestClient) -> None:
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    gateway.records.save(CallRecord("CAxss", from_number="<b>+1555</b>", started_at=now, ended_at=now))
    gateway.records.transcript("CAxss", "caller", "<script>alert('hi')</script>")
    client.portal.call(gateway.records.flush, 5.0)  # type: ignore[union-attr]
    sign_in(client)
    for path in ("/console/calls/CAxss", "/console/calls?q=CAxss"):
        page = client.get(path)
        assert "<script>alert" not in page.text and "<b>+1555" not in page.text, path
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
    assert "&lt;script&gt;alert(&#39;hi&#39;)&lt;/script&gt;" in client.get("/console/calls/CAxss").text


class CallInProgress:
    """What the console asks of a call in progress: its sid, and to be hung up."""

    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self.hung_up = False

    def hang_up_by_operator(self) -> None:
        self.hung_up = True


def test_a_call_in_progress_is_hung_up_with_the_token_and_its_page_points_to_live(client: TestClient) -> None:
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    call = CallInProgress("CAlive")
    gateway.calls.add(call)
    try:
        csrf = sign_in(client)
        page = client.get("/console/calls/CAlive")
        assert page.status_code == 404 and "in progress" in page.text and "Live" in page.text
        response = client.post("/console/calls/CAlive/hangup", headers={"X-CSRF-Token": csrf})
        assert response.status_code == 202
        assert response.json() == {"call_sid": "CAlive", "status": "hanging_up"}
        assert call.hung_up
    finally:
        gateway.calls.discard(call)
