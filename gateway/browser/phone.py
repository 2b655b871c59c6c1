"""The console's softphone: the page (`/console/phone`), its scripts, and its call socket.

All three are behind the console's sign-in: the session is the call's credential (a browser call has no
stream token), and the socket's Origin is checked with it (`session_of`), so another site cannot place calls
with a signed-in user's cookie. A browser call is admitted like any other (`MAX_CONCURRENT_CALLS`, none while
the instance drains), chooses its agent by name among those that answer numbers (the default too), and runs
through `Gateway.run_call`: its record, transcript, recording and cost are kept like a phone call's, with
`carrier: "browser"`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import structlog
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.agents import AgentBook
from gateway.browser.line import BrowserLine
from gateway.call.line import Ended, Started
from gateway.console.auth import ConsoleSession, console_auth, session_of
from gateway.console.pages import gateway_of, page, render

log = structlog.get_logger("gateway.browser")

PAGE_PATH = "/console/phone"
SOCKET_PATH = "/console/phone/ws"
STATIC_PATH = "/console/phone/static"
STATIC_DIR = Path(__file__).parent / "static"
# The page's files, by name: nothing else under the directory is served.
STATIC_FILES = {
    "phone.js": "text/javascript",
    "audio.js": "text/javascript",
    "capture-worklet.js": "text/javascript",
    "playout-worklet.js": "text/javascript",
    "phone.css": "text/css",
}
KEYS = "123456789*0#"


@dataclass(frozen=True)
class PhoneAgent:
    """An agent the page can call: its name, and the number whose calls it answers ("" for the default)."""

    name: str
    number: str

    def about(self, book: AgentBook) -> str:
        """What the page shows of the agent being tuned: its model, voice, language and greeting."""
        agent = book.named(self.name) or book.default
        live = agent.live
        greeting = f"greets: {agent.greeting!r}" if agent.greeting else "waits for the caller"
        return f"{live.model.removeprefix('models/')}, voice {live.voice}, {live.language}; {greeting}"


def phone_agents(book: AgentBook) -> list[PhoneAgent]:
    """The default agent, then each agent of AGENTS_FILE that answers a number (by name). An agent that only
    places calls is left out: its instructions wait for the variables an outbound call fills."""
    numbers: dict[str, str] = {}
    for number, agent in book.by_number.items():
        numbers.setdefault(agent.name, number)
    named = [PhoneAgent(name, numbers[name]) for name in sorted(numbers) if name != book.default.name]
    return [PhoneAgent(book.default.name, ""), *named]


async def phone_page(request: Request, session: ConsoleSession) -> Response:
    book = gateway_of(request).agents
    agents = [(agent, agent.about(book)) for agent in phone_agents(book)]
    return render(request, session, "phone.html", nav="phone", agents=agents, keys=KEYS, static=STATIC_PATH)


async def phone_static(request: Request) -> Response:
    """The page's scripts and style, for a signed-in operator only (nothing else under the directory)."""
    if console_auth(request) is None:
        return Response("Not Found", status_code=404)
    if session_of(request) is None:
        return Response("sign in to the console first", status_code=403)
    media_type = STATIC_FILES.get(request.path_params["name"])
    if media_type is None:
        return Response("Not Found", status_code=404)
    path = STATIC_DIR / request.path_params["name"]
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


async def phone_socket(ws: WebSocket) -> None:
    """One browser call: the page's `start` (its agent and line quality), admission, then the call."""
    from gateway.app import Gateway  # the app imports this module for its routes

    gw: Gateway = ws.app.state.gateway
    if session_of(ws) is None:  # no session, or a WebSocket from another site's page: HTTP 403
        await gw.refuse_upgrade(ws, "unauthenticated", "phone_refused", entry="phone")
        return
    settings = gw.settings
    if gw.calls_in_progress() >= settings.max_concurrent_calls:
        limit = settings.max_concurrent_calls
        await gw.refuse_upgrade(ws, "busy", "phone_refused", entry="phone", max_calls=limit)
        return
    line = BrowserLine(ws)
    try:
        await ws.accept()
    except Exception:  # the page left during the handshake
        return
    start = await _first_start(line, settings.start_timeout_s)
    if start is None:
        gw.refusals.refused("phone", "no_start", "phone_refused", timeout_s=settings.start_timeout_s)
        await line.end(None, refusal="no start message")
        return
    agents = {a.name: a for a in phone_agents(gw.agents)}
    agent = agents.get(start.parameters["agent"] or gw.agents.default.name)
    if agent is None:
        await line.end(None, refusal=f"no agent named {start.parameters['agent']!r} answers calls here")
        return
    if (refusal := gw.admit_call(start)) is not None:
        gw.refusals.refused("phone", "at_capacity", "phone_refused", detail=refusal)
        await line.end(None, refusal=refusal)
        return
    start = dataclasses.replace(start, called=agent.number)
    line.started(agent.name)
    log.info("browser_call", call_sid=start.call_sid, agent=agent.name, quality=line.quality.name)
    call = await gw.run_call(line, start, watcher=line)
    await line.end(call.stats.outcome.value)


async def _first_start(line: BrowserLine, timeout_s: float) -> Started | None:
    try:
        async with asyncio.timeout(timeout_s):
            while not isinstance(event := await line.receive(), Ended):
                if isinstance(event, Started):
                    return event
    except TimeoutError:
        pass
    return None


def routes() -> list[BaseRoute]:
    return [
        Route(PAGE_PATH, page(phone_page), methods=["GET"]),
        Route(STATIC_PATH + "/{name}", phone_static, methods=["GET"]),
        WebSocketRoute(SOCKET_PATH, phone_socket),
    ]
