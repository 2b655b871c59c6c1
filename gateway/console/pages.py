"""The console's routes: sign-in and sign-out, and the pages, each refused without a session.

Pages are rendered on the server (Jinja2); the few that move (the live view, the charts, the call's picture)
add a little plain JavaScript from `static/`. A page asked for without a session redirects to the sign-in
page; an API (JSON, the live event stream, a hang-up) answers 401. With no password configured the console
is off: every route answers 404.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.console.auth import (
    COOKIE,
    SESSION_S,
    ConsoleSession,
    client_of,
    console_auth,
    csrf_ok,
    session_of,
)

if TYPE_CHECKING:
    from gateway.app import Gateway

log = structlog.get_logger("gateway.console")

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
Handler = Callable[[Request, ConsoleSession], Awaitable[Response]]


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


# Every page: scripts and everything else from the gateway itself only (a transcript can hold any text: it
# is escaped, and even if it were not, no inline script would run), never framed, never cached (transcripts).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def render(
    request: Request, session: ConsoleSession | None, template: str, status_code: int = 200, **context: Any
) -> Response:
    context = {"session": session, **context}
    return TEMPLATES.TemplateResponse(
        request, template, context, status_code=status_code, headers=PAGE_HEADERS
    )


def _not_found() -> Response:
    return Response("Not Found", status_code=404, media_type="text/plain")


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A page: without a session, a redirect to the sign-in page (back here afterwards)."""

    async def endpoint(request: Request) -> Response:
        if console_auth(request) is None:
            return _not_found()
        session = session_of(request)
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)
        return await handler(request, session)

    return endpoint


def api(handler: Handler, *, changes_state: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """An API for the pages' scripts: 401 without a session; 403 without the CSRF token if it changes
    anything."""

    async def endpoint(request: Request) -> Response:
        if console_auth(request) is None:
            return _not_found()
        session = session_of(request)
        if session is None:
            return JSONResponse({"error": "sign in to the console first"}, status_code=401)
        if changes_state:
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                await request.form()
            if not csrf_ok(request, session):
                log.warning("console_csrf_refused", path=request.url.path, client=client_of(request))
                return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
        return await handler(request, session)

    return endpoint


def _safe_next(value: str) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if value.startswith("/console") and not value.startswith("//") and "\\" not in value:
        return value
    return "/console"


async def login_form(request: Request) -> Response:
    if console_auth(request) is None:
        return _not_found()
    if session_of(request) is not None:
        return RedirectResponse(_safe_next(request.query_params.get("next", "")), status_code=303)
    return render(request, None, "login.html", next=_safe_next(request.query_params.get("next", "")))


async def login(request: Request) -> Response:
    """`POST /console/login`, form field `password`: a session cookie, or the form again with the reason."""
    auth = console_auth(request)
    if auth is None:
        return _not_found()
    client, now = client_of(request), time.monotonic()
    form = await request.form()
    target = _safe_next(str(form.get("next") or ""))
    wait_s = auth.limiter.attempt(client, now)  # counted as a failure unless the password is right
    if wait_s is not None:
        log.warning("console_sign_in_limited", client=client, retry_after_s=round(wait_s))
        response = render(request, None, "login.html", next=target,
                          error=f"Too many failed attempts: try again in {wait_s:.0f} s.")  # fmt: skip
        response.status_code = 429
        response.headers["Retry-After"] = str(int(wait_s + 0.999))
        return response
    password = form.get("password")
    if not isinstance(password, str) or not auth.key.password_ok(password):
        log.warning("console_sign_in_failed", client=client)
        response = render(request, None, "login.html", next=target, error="Wrong password.")
        response.status_code = 401
        return response
    auth.limiter.succeeded(client)
    session, cookie = auth.key.new(time.time())
    log.info("console_signed_in", client=client, session=session.id[:8])
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, cookie, max_age=SESSION_S, path="/", httponly=True, samesite="strict",
                        secure=auth.secure_cookie)  # fmt: skip
    return response


async def logout(request: Request, session: ConsoleSession) -> Response:
    auth = console_auth(request)
    assert auth is not None
    auth.revoke(session)
    log.info("console_signed_out", session=session.id[:8])
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=auth.secure_cookie)
    return response


async def home(request: Request, session: ConsoleSession) -> Response:
    return RedirectResponse("/console/overview", status_code=303)


def routes() -> list[BaseRoute]:
    """The console's routes, mounted by the app at /console."""
    from gateway.console import views

    return [
        Route("/console", page(home), methods=["GET"]),
        Route("/console/login", login_form, methods=["GET"]),
        Route("/console/login", login, methods=["POST"]),
        Route("/console/logout", api(logout, changes_state=True), methods=["POST"]),
        *views.routes(),
        Mount("/console/static", StaticFiles(directory=str(HERE / "static")), name="console_static"),
    ]
