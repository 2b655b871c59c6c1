"""The agents file: what it maps, and that every mistake stops start-up with the line it is on; the toolbox
against a real loopback HTTP service."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest

from gateway.agents import Agent, default_book, load_agents
from gateway.config import ConfigError, load_settings
from gateway.live import protocol as lp
from gateway.live.protocol import FunctionCall, LiveConfig
from gateway.tools import SIGNATURE_HEADER, TIMESTAMP_HEADER, CallIds, Toolbox, function_response, sign
from tests.support.tool_server import ToolService, tool_service

GOOD = """\
# Acme's lines
[agents.support]
numbers = ["+15005550001", "+15005550002"]
instructions = "You answer for Acme support."
voice = "Puck"
language = "de-DE"
greeting = "none"
tools = ["end_call", "transfer_call", "order_status"]
transfer_targets = ["+15005550009"]

[tools.order_status]
description = "Look up an order."
url = "https://tools.example.com/order"
timeout_s = 3
parameters = { type = "OBJECT", properties = { order = { type = "STRING" } }, required = ["order"] }
"""


def settings_with(tmp_path, text: str, **env: str):
    path = tmp_path / "agents.toml"
    path.write_text(textwrap.dedent(text))
    return load_settings({"AGENTS_FILE": str(path), "TOOLS_SECRET": "s3cret-key", **env}, env_file=None)


def error_of(tmp_path, text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        settings_with(tmp_path, text, **env)
    return str(info.value)


def test_a_good_file_maps_numbers_to_agents_and_the_environment_fills_the_rest(tmp_path):
    settings = settings_with(tmp_path, GOOD, AGENT_GREETING="Hello from the default", AGENT_VOICE="Kore")
    book = settings.agent_book
    support = book.for_number("+15005550002")
    assert support is book.for_number("+15005550001") and support.name == "support"
    assert (support.live.voice, support.live.language, support.greeting) == ("Puck", "de-DE", "")
    assert support.live.model == settings.live.model  # not in the file: from the environment
    assert [d["name"] for d in support.live.tools] == ["end_call", "transfer_call", "order_status"]
    assert support.live.tools[2]["parameters"]["required"] == ["order"]
    assert support.custom_tools["order_status"].timeout_s == 3.0
    default = book.for_number("+19995550000")
    assert default.name == "default" and default.greeting == "Hello from the default"
    assert (default.live.voice, default.tools) == ("Kore", ("end_call",))


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[agents.a]\nnumbers = [\n", 2, "not valid TOML"),
        ('[agents.a]\nvoice = "Puck"\nvoise = "Kore"\n', 3, "unknown key 'voise'"),
        ('[agents.a]\n\nlanguage = "xx-XX"\n', 3, "language = 'xx-XX'"),
        ('[agents.a]\nnumbers = []\nvoice = "Nonsense"\n', 3, "voice = 'Nonsense' is not a Live API voice"),
        ('[agents.a]\nnumbers = ["5550001"]\n', 2, "not an E.164 number"),
        (
            '[agents.a]\nnumbers = ["+15005550001"]\n[agents.b]\nnumbers = ["+15005550001"]\n',
            4,
            "already answered",
        ),
        ('[agents.a]\ntools = ["end_call", "weather"]\n', 2, "neither built in"),
        ('[agents.a]\ntools = ["transfer_call"]\n', 2, "needs transfer_targets"),
        ('[agents.a]\ntransfer_targets = ["+15005550009"]\n', 2, "transfer_call is not in tools"),
        ('[tools.lookup]\ndescription = "x"\n', 1, "needs a url"),
        ('[tools.lookup]\nurl = "ftp://x"\n', 2, "must be an http(s) URL"),
        ('[tools.lookup]\nurl = "http://x"\ntimeout_s = 600\n', 3, "timeout_s"),
        ("[tools.end_call]\nurl = 'http://x'\n", 1, "cannot name a custom tool"),
        ('[agent.a]\nvoice = "Puck"\n', 1, "unknown table 'agent'"),
        ("# comment\n\n[agents.a]\ngreeting = 3\n", 4, "greeting must be a string"),
        ('[agents.a]\nvoice = "Puck"\nbarge_in = "never"\n', 3, "barge_in = 'never' must be local or server"),
        ('[agents.a]\nturn_detection = "client"\n', 2, "turn_detection = 'client' must be server or local"),
    ],
)
def test_every_mistake_names_its_line(tmp_path, text, line, words):
    message = error_of(tmp_path, text)
    assert f"agents.toml, line {line}:" in message and words in message, message


def test_turn_taking_per_agent_and_from_the_environment(tmp_path):
    text = '[agents.loud]\nnumbers = ["+15005550001"]\nbarge_in = "server"\nturn_detection = "local"\n'
    book = settings_with(tmp_path, text, BARGE_IN="local", TURN_DETECTION="server").agent_book
    loud, default = book.for_number("+15005550001"), book.for_number("+19995550000")
    assert (loud.barge_in, loud.live.turn_detection) == ("server", "local")
    assert (default.barge_in, default.live.turn_detection) == ("local", "server")
    quiet = '[agents.quiet]\nnumbers = ["+15005550001"]\n'
    book = settings_with(tmp_path, quiet, BARGE_IN="server").agent_book
    assert book.for_number("+15005550001").barge_in == "server"  # not in the file: the environment's


def test_http_tools_need_the_signing_secret_and_a_missing_file_is_named(tmp_path):
    path = tmp_path / "agents.toml"
    path.write_text(GOOD)
    with pytest.raises(ConfigError, match="TOOLS_SECRET"):
        load_settings({"AGENTS_FILE": str(path)}, env_file=None)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings({"AGENTS_FILE": str(tmp_path / "missing.toml")}, env_file=None)


def test_prewarm_setting(tmp_path):
    assert load_settings({}, env_file=None).prewarm_s == 10.0
    assert load_settings({"LIVE_PREWARM_S": "0"}, env_file=None).prewarm_s == 0.0
    with pytest.raises(ConfigError, match="LIVE_PREWARM_S"):
        load_settings({"LIVE_PREWARM_S": "soon"}, env_file=None)


def shop_agent(tmp_path: Path, url: str) -> Agent:
    path = tmp_path / "tools.toml"
    path.write_text(GOOD.replace("https://tools.example.com/order", url))
    return load_agents(path, default_book(LiveConfig(), "").default).for_number("+15005550001")


IDS = CallIds("CA1", "MZ1", "+15551230000", "+15005550001")


@pytest.mark.parametrize(
    ("service", "error"),
    [
        (ToolService(status=500, reply={"detail": "boom"}), "answered HTTP 500"),
        (ToolService(reply=b"<html>not json</html>"), "did not answer JSON"),
    ],
)
async def test_a_failing_tool_service_becomes_an_error_response(tmp_path, service, error):
    async with tool_service(service) as url:
        agent = shop_agent(tmp_path, url)
        async with httpx.AsyncClient() as http:
            toolbox = Toolbox(http=http, secret="s3cret-key")
            result = await toolbox.run(agent, FunctionCall("c1", "order_status", {"order": "7"}), IDS)
    assert error in result.response["error"] and result.action is None
    ((headers, body),) = service.requests
    assert headers[SIGNATURE_HEADER.lower()] == sign("s3cret-key", headers[TIMESTAMP_HEADER.lower()], body)
    assert json.loads(body)["args"] == {"order": "7"}


async def test_an_unreachable_tool_service_and_a_non_object_reply(tmp_path):
    agent = shop_agent(tmp_path, "http://127.0.0.1:9/tool")
    async with httpx.AsyncClient() as http:
        toolbox = Toolbox(http=http, secret="k")
        result = await toolbox.run(agent, FunctionCall("c1", "order_status", {}), IDS)
        assert "could not be reached" in result.response["error"]
        async with tool_service(ToolService(reply=["a", "b"])) as url:
            result = await toolbox.run(shop_agent(tmp_path, url), FunctionCall("c2", "order_status", {}), IDS)
    assert result.response == {"result": ["a", "b"]}


ASYNC_TOOL = """\
[agents.shop]
numbers = ["+15005550001"]
tools = ["end_call", "order_status"]

[tools.order_status]
url = "https://tools.example.com/order"
"""


def test_tool_behavior_and_scheduling_reach_the_setup_and_the_response(tmp_path):
    text = ASYNC_TOOL + 'behavior = "non_blocking"\nscheduling = "interrupt"\n'
    agent = settings_with(tmp_path, text).agent_book.for_number("+15005550001")
    decls = {d["name"]: d for d in lp.build_setup(agent.live)["setup"]["tools"][0]["functionDeclarations"]}
    assert decls["order_status"]["behavior"] == "NON_BLOCKING" and decls["end_call"]["behavior"] == "BLOCKING"
    lookup = function_response(agent, FunctionCall("c1", "order_status", {}), {"status": "shipped"})
    assert lookup == {
        "id": "c1",
        "name": "order_status",
        "response": {"status": "shipped"},
        "scheduling": "INTERRUPT",
    }
    assert "scheduling" not in function_response(agent, FunctionCall("c2", "end_call", {}), {})  # blocking
    # On 3.8 Live every tool is non-blocking unless it says otherwise; the line tools' answers are silent.
    agent = settings_with(tmp_path, ASYNC_TOOL, GEMINI_MODEL="gemini-3.8-live").agent_book.for_number(
        "+15005550001"
    )
    assert function_response(agent, FunctionCall("c3", "end_call", {}), {})["scheduling"] == "SILENT"
    assert function_response(agent, FunctionCall("c4", "order_status", {}), {})["scheduling"] == "WHEN_IDLE"


@pytest.mark.parametrize(
    ("extra", "env", "words"),
    [
        ('behavior = "later"\n', {}, "behavior must be blocking or non_blocking"),
        ('scheduling = "soon"\n', {}, "scheduling must be one of interrupt, when_idle, silent"),
        ('behavior = "blocking"\nscheduling = "silent"\n', {}, "scheduling is for non_blocking tools"),
        (
            'behavior = "non_blocking"\n',
            {"GEMINI_MODEL": "gemini-3.1-flash-live-preview"},
            "synchronously only: make it blocking, or use one of",
        ),
        (
            'behavior = "blocking"\n',
            {"GEMINI_MODEL": "gemini-3.8-live-extended-thinking"},
            "asynchronously only",
        ),
    ],
)
def test_tool_behavior_mistakes_stop_start_up(tmp_path, extra, env, words):
    assert words in error_of(tmp_path, ASYNC_TOOL + extra, **env)
