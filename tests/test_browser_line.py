"""The browser line (gateway.browser.line) over an in-memory socket, the phone routes' refusals, and the
`CallWatcher` a browser call's page follows: no browser, milliseconds each."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway.agents import Agent, AgentBook
from gateway.app import create_app
from gateway.audio import pcm16_to_ulaw
from gateway.browser import protocol as bp
from gateway.browser.line import BrowserLine
from gateway.browser.phone import PhoneAgent, phone_agents
from gateway.call import Call, CallAgent, Outcome
from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, LineClosed, Played, Started
from gateway.live import protocol as lp
from gateway.tools import Toolbox
from tests.support.call_doubles import STARTED, MemoryLine, ScriptedLive
from tests.support.gateway import UNUSED_LIVE_URL, settings_for
from tests.support.waiting import wait_for


class PageSocket:
    """What the line sees of Starlette's WebSocket: the page's messages in, ours recorded."""

    def __init__(self) -> None:
        self.application_state = WebSocketState.CONNECTED
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[Any] = []  # JSON messages parsed, audio as bytes
        self.closed: tuple[int, str] | None = None
        self.scope: dict[str, Any] = {}  # served by no MediaSocket: plain ASGI

    def says(self, **message: Any) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(message)})

    def speaks(self, data: bytes) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "bytes": data})

    def leaves(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1001})

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.application_state = WebSocketState.DISCONNECTED


def line_on(ws: PageSocket) -> BrowserLine:
    return BrowserLine(ws)  # type: ignore[arg-type]


async def test_the_page_s_messages_become_the_seam_s_events():
    ws = PageSocket()
    line = line_on(ws)
    ws.speaks(bytes(160))  # audio before the start: nobody's yet
    ws.says(type="start", agent="support", quality="wideband")
    start = await line.receive()
    assert isinstance(start, Started) and start.carrier == "browser" and start.call_sid.startswith("BR")
    assert len(start.call_sid) == 34 and start.parameters == {"agent": "support", "quality": "wideband"}
    assert line.bad_messages == 1 and line.audio == LineAudio(16000, 24000)
    ws.says(type="start", agent="other")  # a second start is skipped
    ws.speaks(bytes(640))
    ws.says(type="mark", name="turn-1")
    ws.says(type="ping", id=4)  # answered by the line itself
    ws.says(type="dtmf", digit="7")
    ws.says(type="hangup")
    assert await line.receive() == CallerAudio(bytes(640))
    assert await line.receive() == Played("turn-1")
    assert await line.receive() == Keypress("7")
    assert ws.sent == [{"type": "pong", "id": 4}]
    assert await line.receive() == Ended("stop")
    assert await line.receive() == Ended("stop")  # and on every call after
    assert line.bad_messages == 2


async def test_a_phone_line_carries_mu_law_both_ways_and_the_socket_s_end_ends_it():
    ws = PageSocket()
    line = line_on(ws)
    ws.says(type="start")
    await line.receive()
    assert line.audio == LineAudio(8000, 8000, mulaw=True)
    ws.speaks(pcm16_to_ulaw(bytes(320)))
    ws.speaks(bytes(1601))  # longer than a frame may be: skipped, the call goes on
    ws.leaves()
    assert await line.receive() == CallerAudio(bp.PHONE.decode(pcm16_to_ulaw(bytes(320))))
    assert await line.receive() == Ended("closed")
    assert line.bad_messages == 1
    pcm = (1000).to_bytes(2, "little") * 160
    await line.play(pcm)
    await line.mark("turn-1")
    await line.clear()
    assert ws.sent == [pcm16_to_ulaw(pcm), {"type": "mark", "name": "turn-1"}, {"type": "clear"}]


async def test_the_page_follows_the_call_and_hears_how_it_ended_after_its_last_line():
    ws = PageSocket()
    line = line_on(ws)
    ws.says(type="start", agent="")
    await line.receive()
    line.started("default")
    await line.play(bytes(160))  # the call's first send waits behind the `started` the page needs first
    line.transcript("caller", "what time is it")
    line.response(0.64)
    await wait_for(lambda: len(ws.sent) == 4)
    assert await line.transfer("+15550009999")  # a browser is not moved: the page is told
    await line.close()
    with pytest.raises(LineClosed):
        await line.play(bytes(320))  # the call sends nothing more ...
    line.transcript("agent", "I will transfer you now.")  # ... but its last lines still reach the page
    await line.end("transferred")
    assert ws.sent[0]["type"] == "started" and ws.sent[0]["encoding"] == "mulaw"
    assert ws.sent[1] == pcm16_to_ulaw(bytes(160))
    assert ws.sent[2:] == [
        {"type": "transcript", "role": "caller", "text": "what time is it"},
        {"type": "response", "latency_ms": 640},
        {"type": "transfer", "target": "+15550009999"},
        {"type": "transcript", "role": "agent", "text": "I will transfer you now."},
        {"type": "ended", "outcome": "transferred"},
    ]
    assert ws.closed == (1000, "")


async def test_a_refusal_closes_the_socket_with_its_reason():
    ws = PageSocket()
    await line_on(ws).close("no agent named 'x' answers calls here")
    assert ws.closed == (1008, "no agent named 'x' answers calls here")


class Watcher:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.latencies: list[float] = []

    def transcript(self, role: str, text: str) -> None:
        self.lines.append((role, text))

    def response(self, latency_s: float) -> None:
        self.latencies.append(latency_s)


async def test_a_watcher_follows_the_transcript_and_each_turn_s_response_latency():
    # The line plays out at once: the agent's line is the watcher's once its mark has come back (heard).
    line, live, watcher = MemoryLine(echo_marks=True), ScriptedLive(), Watcher()
    call = Call(line, STARTED, live.open, lp.LiveConfig(), watcher=watcher)
    task = asyncio.create_task(call.run())
    connection = await live.connection(0)
    loud = (8000).to_bytes(2, "little", signed=True) * 160
    line.put(CallerAudio(loud), CallerAudio(loud))  # the caller makes a sound (one message) ...
    await wait_for(lambda: connection.audio)
    connection.say(lp.InputTranscript("what time is it"), lp.OutputTranscript("It is noon."))
    connection.say(lp.AgentAudio(bytes(960)), lp.TurnComplete())  # ... and the agent answers it
    await wait_for(lambda: ("agent", "It is noon.") in watcher.lines)
    line.put(Ended("stop"))
    async with asyncio.timeout(2):
        await task
    assert watcher.lines == [("caller", "what time is it"), ("agent", "It is noon.")]
    assert len(watcher.latencies) == 1 and 0 <= watcher.latencies[0] < 2


def test_the_page_offers_the_default_agent_and_each_agent_that_answers_a_number():
    default = Agent("default", lp.LiveConfig(), "")
    support, sales, dialler = (Agent(n, lp.LiveConfig(), "") for n in ("support", "sales", "reminders"))
    book = AgentBook(
        default,
        {"+15550000002": support, "+15550000003": support, "+15550000001": sales},
        {"support": support, "sales": sales, "reminders": dialler},
    )
    assert phone_agents(book) == [
        PhoneAgent("default", ""), PhoneAgent("sales", "+15550000001"), PhoneAgent("support", "+15550000002")
    ]  # fmt: skip


# --- the routes, in process (no lifespan: nothing here reaches a call) ---


PASSWORD = "console password for tests"
ORIGIN = {"origin": "http://testserver"}  # the page's own origin: a WebSocket from elsewhere is refused


def client(**env: str) -> TestClient:
    settings = settings_for(UNUSED_LIVE_URL, CONSOLE_PASSWORD=PASSWORD, **env)
    return TestClient(create_app(settings))


def sign_in(test_client: TestClient) -> None:
    signed_in = test_client.post("/console/login", data={"password": PASSWORD}, follow_redirects=False)
    assert signed_in.status_code == 303


def test_the_page_its_files_and_its_socket_are_refused_without_the_console_session():
    c = client()
    page = c.get("/console/phone", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login")
    assert c.get("/console/phone/static/phone.js").status_code == 403
    with pytest.raises(WebSocketDisconnect) as refused:
        with c.websocket_connect("/console/phone/ws", headers=ORIGIN):
            pass
    assert refused.value.code == 1008


def test_a_socket_from_another_site_s_page_is_refused_even_with_the_cookie():
    c = client()
    sign_in(c)
    with pytest.raises(WebSocketDisconnect) as refused:
        with c.websocket_connect("/console/phone/ws", headers={"origin": "https://elsewhere.example"}):
            pass
    assert refused.value.code == 1008


def test_the_phone_is_off_with_the_console():
    c = TestClient(create_app(settings_for(UNUSED_LIVE_URL)))
    assert c.get("/console/phone").status_code == 404
    assert c.get("/console/phone/static/phone.js").status_code == 404
    with pytest.raises(WebSocketDisconnect):
        with c.websocket_connect("/console/phone/ws", headers=ORIGIN):
            pass


def test_signed_in_the_page_lists_the_agents_and_serves_only_its_own_files():
    c = client()
    sign_in(c)
    page = c.get("/console/phone")
    assert page.status_code == 200
    default = re.search(r'<option value="default" data-about="([^"]*)">default</option>', page.text)
    assert default is not None and "voice" in default.group(1)  # the agent being tuned, at a glance
    assert '<a href="/console/phone" class="here">Phone</a>' in page.text
    assert ">Call</button>" in page.text and ">Hang up</button>" in page.text
    worklet = c.get("/console/phone/static/playout-worklet.js")
    assert worklet.headers["content-type"].startswith("text/javascript")
    assert c.get("/console/phone/static/phone.html").status_code == 404
    assert c.get("/console/phone/static/..%2F..%2Fapp.py").status_code == 404


def test_a_call_to_an_agent_that_does_not_answer_here_is_refused_with_the_reason():
    c = client()
    sign_in(c)
    with c.websocket_connect("/console/phone/ws", headers=ORIGIN) as ws:
        ws.send_text(json.dumps({"type": "start", "agent": "nobody"}))
        with pytest.raises(WebSocketDisconnect) as refused:
            ws.receive_text()
    assert (refused.value.code, refused.value.reason) == (1008, "no agent named 'nobody' answers calls here")


def test_a_browser_call_counts_against_the_call_limit():
    c = client(MAX_CONCURRENT_CALLS="1")
    sign_in(c)
    c.app.state.gateway.calls.add(object())  # one call in progress: the limit is reached
    with pytest.raises(WebSocketDisconnect) as refused:
        with c.websocket_connect("/console/phone/ws", headers=ORIGIN):
            pass
    assert refused.value.code == 1008
    c.app.state.gateway.calls.clear()
    c.app.state.gateway.tokens.issue("CA1")  # an answered call whose stream is on its way holds the place
    with c.websocket_connect("/console/phone/ws", headers=ORIGIN) as ws:
        ws.send_text(json.dumps({"type": "start"}))
        with pytest.raises(WebSocketDisconnect) as refused:
            ws.receive_text()
    assert (refused.value.code, refused.value.reason) == (1008, "the gateway is at MAX_CONCURRENT_CALLS")


def test_a_socket_that_never_says_start_is_closed():
    c = client(STREAM_START_TIMEOUT_S="0.2")
    sign_in(c)
    with c.websocket_connect("/console/phone/ws", headers=ORIGIN) as ws:
        with pytest.raises(WebSocketDisconnect) as refused:
            ws.receive_text()
    assert (refused.value.code, refused.value.reason) == (1008, "no start message")


async def test_the_agent_hangs_up_a_browser_call_once_the_page_has_played_its_goodbye():
    """The Call over a real BrowserLine: the page's mark acknowledgement carries out end_call."""
    ws, live = PageSocket(), ScriptedLive()
    line = line_on(ws)
    ws.says(type="start", quality="wideband")
    start = await line.receive()
    assert isinstance(start, Started)
    agent = Agent("test", lp.LiveConfig(), "", tools=("end_call",))

    async def prepare(start: Started, take_prewarmed: bool) -> CallAgent:
        return CallAgent(agent, Toolbox())

    call = Call(line, start, live.open, lp.LiveConfig(), prepare=prepare, watcher=line)
    task = asyncio.create_task(call.run())
    connection = await live.connection(0)
    goodbye = lp.ToolCall((lp.FunctionCall("t1", "end_call", {}),))
    connection.say(lp.AgentAudio(bytes(960)), goodbye, lp.TurnComplete())
    await wait_for(lambda: [m for m in ws.sent if isinstance(m, dict) and m["type"] == "mark"])
    assert ws.sent[0] == bytes(960)  # wideband: the agent's 24 kHz PCM as it came, no resampler, no codec
    assert not task.done()  # not before the page has played it
    for mark in [m["name"] for m in ws.sent if isinstance(m, dict) and m["type"] == "mark"]:
        ws.says(type="mark", name=mark)
    async with asyncio.timeout(2):
        await task
    assert call.stats.outcome is Outcome.AGENT_HUNG_UP
    await line.end(call.stats.outcome.value)
    assert ws.sent[-1] == {"type": "ended", "outcome": "agent_hung_up"} and ws.closed == (1000, "")
