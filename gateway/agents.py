"""Per-number agents: which agent answers a called number, read from a TOML file (`AGENTS_FILE`).

Every field an agent leaves out comes from the environment (AGENT_INSTRUCTIONS, AGENT_VOICE, ...), and a
number the file does not list is answered by that environment-defined default agent. A bad file stops
start-up with a message that names the line. The file looks like this:

    [agents.support]
    numbers = ["+15005550001"]            # the called numbers (Twilio's `To`), E.164
    instructions = "You answer for Acme support."
    voice = "Puck"
    language = "en-US"
    greeting = "Greet the caller as Acme support."   # "none": wait for the caller
    barge_in = "local"                    # or "server" (BARGE_IN)
    turn_detection = "server"             # or "local" (TURN_DETECTION)
    recording = "gateway"                 # or "twilio", "off" (RECORDING)
    tools = ["end_call", "transfer_call", "order_status"]
    transfer_targets = ["+15005550009"]   # the only numbers transfer_call may dial

An agent that places calls (`POST /calls`, `gateway dial`) may declare placeholders that each call fills:

    [agents.reminders]
    instructions = "You call {name} to confirm their appointment on {date}."
    greeting = "Hello {name}, this is Acme about your appointment on {date}."
    voicemail = "Hi {name}, this is Acme: your appointment is on {date}. Call us back to change it."
    variables = ["name", "date"]          # every placeholder used, declared; a call gives each one
    machine = "leave_message"             # an answering machine: hang_up (default) or leave_message

    [tools.order_status]                  # a custom tool, answered over HTTP (see gateway/tools.py)
    description = "Look up an order by its number."
    url = "https://tools.example.com/order-status"
    timeout_s = 5
    parameters = { type = "OBJECT", properties = { order = { type = "STRING" } }, required = ["order"] }
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.live.protocol import SCHEDULINGS, LiveConfig, LiveConfigError

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"
BUILTIN_TOOLS = (END_CALL, TRANSFER_CALL)
DEFAULT_TOOLS = (END_CALL,)  # a phone agent that cannot hang up leaves callers listening to silence
DEFAULT_TOOL_TIMEOUT_S = 5.0

_E164 = re.compile(r"^\+[1-9]\d{5,14}$")
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # what Gemini accepts as a function name
_AGENT_KEYS = {
    "numbers", "instructions", "voice", "language", "greeting", "tools", "transfer_targets",
    "variables", "voicemail", "machine", "barge_in", "turn_detection", "recording",
}  # fmt: skip
MACHINE_POLICIES = ("hang_up", "leave_message")
BARGE_IN_MODES = ("local", "server")  # BARGE_IN: who clears the line when the caller talks over the agent
RECORDING_MODES = ("off", "gateway", "twilio")  # RECORDING: who records the call (see gateway.recording)
_TOOL_KEYS = {"description", "url", "timeout_s", "parameters", "behavior", "scheduling"}
_BEHAVIORS = {"blocking": "BLOCKING", "non_blocking": "NON_BLOCKING"}


class AgentsFileError(ValueError):
    """The agents file is wrong; the message names the file and line and says what would work."""


@dataclass(frozen=True)
class CustomTool:
    """A tool the model may call whose answer comes from an HTTP service."""

    name: str
    description: str
    url: str
    timeout_s: float = DEFAULT_TOOL_TIMEOUT_S
    parameters: dict[str, Any] | None = None
    # How the model runs it: "BLOCKING" (the conversation waits for the answer), "NON_BLOCKING" (the agent
    # keeps talking and the answer is spoken per `scheduling`), "" the model's default (3.8: non-blocking).
    behavior: str = ""
    scheduling: str = "when_idle"  # a non-blocking answer: interrupt, when_idle or silent

    def declaration(self) -> dict[str, Any]:
        decl: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.parameters:
            decl["parameters"] = self.parameters
        if self.behavior:
            decl["behavior"] = self.behavior
        return decl


@dataclass(frozen=True)
class Agent:
    """One agent: its Live configuration and greeting, its tools, and the numbers it may transfer to."""

    name: str
    live: LiveConfig  # its `tools` are the declarations sent in `setup`
    greeting: str
    tools: tuple[str, ...] = DEFAULT_TOOLS
    transfer_targets: tuple[str, ...] = ()
    custom_tools: dict[str, CustomTool] = field(default_factory=dict)
    # Outbound calls (see gateway.outbound.variables): the placeholders a call fills, the voicemail text,
    # and what to do when an answering machine picks up.
    variables: tuple[str, ...] = ()
    voicemail: str = ""
    machine: str = "hang_up"
    barge_in: str = "local"  # BARGE_IN: the gateway's own detector clears the line (local), or Live (server)
    recording: str = ""  # off, gateway or twilio (see gateway.recording); "" for RECORDING's


@dataclass(frozen=True)
class AgentBook:
    """The agent for each called number (`AGENTS_FILE`), and the default for numbers it does not list."""

    default: Agent
    by_number: dict[str, Agent] = field(default_factory=dict)
    by_name: dict[str, Agent] = field(default_factory=dict)  # every agent of the file, for outbound calls

    def for_number(self, called: str) -> Agent:
        return self.by_number.get(called.strip(), self.default)

    def named(self, name: str | None) -> Agent | None:
        """The agent called `name` (None or "default": the default agent); None if there is none."""
        if not name:
            return self.default
        return self.by_name.get(name, self.default if name == self.default.name else None)

    @property
    def uses_http_tools(self) -> bool:
        agents = (self.default, *self.by_number.values(), *self.by_name.values())
        return any(a.custom_tools for a in agents)


def builtin_declaration(name: str, transfer_targets: tuple[str, ...] = ()) -> dict[str, Any]:
    if name == END_CALL:
        return {
            "name": END_CALL,
            "description": "Hang up the phone call. Say goodbye first: the call ends once it has been heard.",
        }
    return {
        "name": TRANSFER_CALL,
        "description": (
            "Transfer the caller to another phone number, once what you are saying has been heard. "
            f"Only these targets are allowed: {', '.join(transfer_targets)}."
        ),
        "parameters": {
            "type": "OBJECT",
            "properties": {
                "target": {
                    "type": "STRING",
                    "description": "the number to transfer to",
                    "enum": list(transfer_targets),
                }
            },
            "required": ["target"],
        },
    }


def make_agent(
    name: str,
    base: LiveConfig,
    greeting: str,
    *,
    tools: tuple[str, ...] = DEFAULT_TOOLS,
    transfer_targets: tuple[str, ...] = (),
    custom_tools: dict[str, CustomTool] | None = None,
    barge_in: str = "local",
) -> Agent:
    """An agent whose `setup` declares its tools (built-in ones first, then custom ones, in file order)."""
    custom = custom_tools or {}
    declarations = tuple(
        custom[t].declaration() if t in custom else builtin_declaration(t, transfer_targets) for t in tools
    )
    return Agent(
        name=name,
        live=dataclasses.replace(base, tools=declarations),
        greeting=greeting,
        tools=tools,
        transfer_targets=transfer_targets,
        custom_tools=custom,
        barge_in=barge_in,
    )


def default_book(live: LiveConfig, greeting: str, barge_in: str = "local") -> AgentBook:
    return AgentBook(make_agent("default", live, greeting, barge_in=barge_in))


# --- the file ---------------------------------------------------------------------------------------------


class _Source:
    """The file's text, to find the line a setting is on (tomllib reports lines only for syntax errors)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def _header_line(self, table: tuple[str, ...]) -> int | None:
        want = ".".join(table)
        for number, line in enumerate(self.lines, 1):
            stripped = line.strip()
            if stripped.startswith("[") and not stripped.startswith("[["):
                name = stripped.strip("[]").split("#")[0].strip("[] ")
                if re.sub(r"\s*\.\s*", ".", name).replace('"', "").replace("'", "") == want:
                    return number
        return None

    def line_of(self, table: tuple[str, ...], key: str | None = None) -> int:
        """The line of `key` in `[table]` (or of the table's header), best effort; 1 if not found."""
        header = self._header_line(table)
        if header is not None and key is not None:
            for number in range(header + 1, len(self.lines) + 1):
                stripped = self.lines[number - 1].strip()
                if stripped.startswith("["):
                    break
                if re.match(rf"[\"']?{re.escape(key)}[\"']?\s*=", stripped):
                    return number
        if header is not None:
            return header
        dotted = ".".join((*table, key) if key else table)
        for number, line in enumerate(self.lines, 1):  # dotted keys: agents.support.voice = "..."
            if line.strip().startswith(dotted):
                return number
        return 1

    def error(self, message: str, table: tuple[str, ...], key: str | None = None) -> AgentsFileError:
        return AgentsFileError(f"{self.path}, line {self.line_of(table, key)}: {message}")


def _text(src: _Source, value: Any, table: tuple[str, ...], key: str) -> str:
    if not isinstance(value, str):
        raise src.error(f"{key} must be a string", table, key)
    return value


def _strings(src: _Source, value: Any, table: tuple[str, ...], key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise src.error(f'{key} must be a list of strings, e.g. {key} = ["..."]', table, key)
    return tuple(v.strip() for v in value)


def _numbers(src: _Source, value: Any, table: tuple[str, ...], key: str) -> tuple[str, ...]:
    numbers = _strings(src, value, table, key)
    for number in numbers:
        if not _E164.match(number):
            raise src.error(f"{number!r} in {key} is not an E.164 number like +15005550001", table, key)
    return numbers


def _custom_tool(src: _Source, name: str, raw: Any) -> CustomTool:
    table = ("tools", name)
    if not isinstance(raw, dict):
        raise src.error(f"tools.{name} must be a table", table)
    if not _TOOL_NAME.match(name) or name in BUILTIN_TOOLS:
        raise src.error(
            f"{name!r} cannot name a custom tool: use letters, digits and _ (not {', '.join(BUILTIN_TOOLS)})",
            table,
        )
    if unknown := sorted(set(raw) - _TOOL_KEYS):
        raise src.error(
            f"unknown key {unknown[0]!r}; a tool has {', '.join(sorted(_TOOL_KEYS))}", table, unknown[0]
        )
    if "url" not in raw:
        raise src.error(f"tools.{name} needs a url (the HTTP service that answers it)", table)
    url = _text(src, raw["url"], table, "url")
    if urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).netloc:
        raise src.error(f"url {url!r} must be an http(s) URL", table, "url")
    timeout = raw.get("timeout_s", DEFAULT_TOOL_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise src.error("timeout_s must be a number of seconds between 0 and 60", table, "timeout_s")
    parameters = raw.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise src.error(
            "parameters must be a table (an OpenAPI schema of the arguments)", table, "parameters"
        )
    description = _text(src, raw.get("description", ""), table, "description")
    behavior = raw.get("behavior", "")
    if behavior and behavior not in _BEHAVIORS:
        raise src.error(
            "behavior must be blocking or non_blocking (unset: the model's default)", table, "behavior"
        )
    scheduling = raw.get("scheduling", "when_idle")
    if scheduling not in SCHEDULINGS:
        raise src.error(f"scheduling must be one of {', '.join(SCHEDULINGS)}", table, "scheduling")
    if "scheduling" in raw and behavior == "blocking":
        raise src.error(
            "scheduling is for non_blocking tools: a blocking tool's answer is awaited", table, "scheduling"
        )
    return CustomTool(
        name, description, url, float(timeout), parameters, _BEHAVIORS.get(behavior, ""), scheduling
    )


def _agent(
    src: _Source,
    name: str,
    raw: Any,
    base: LiveConfig,
    greeting: str,
    custom: dict[str, CustomTool],
    default_barge_in: str = "local",
) -> tuple[Agent, tuple[str, ...]]:
    table = ("agents", name)
    if not isinstance(raw, dict):
        raise src.error(f"agents.{name} must be a table", table)
    if unknown := sorted(set(raw) - _AGENT_KEYS):
        raise src.error(
            f"unknown key {unknown[0]!r}; an agent has {', '.join(sorted(_AGENT_KEYS))}", table, unknown[0]
        )
    numbers = _numbers(src, raw.get("numbers", []), table, "numbers")

    def text_or(key: str, default: str) -> str:
        return _text(src, raw[key], table, key) if key in raw else default

    barge_in = text_or("barge_in", default_barge_in)
    if barge_in not in BARGE_IN_MODES:
        raise src.error(f"barge_in = {barge_in!r} must be local or server", table, "barge_in")
    turn_detection = text_or("turn_detection", base.turn_detection)
    if turn_detection not in ("server", "local"):
        raise src.error(
            f"turn_detection = {turn_detection!r} must be server or local", table, "turn_detection"
        )
    live = dataclasses.replace(
        base,
        instructions=text_or("instructions", base.instructions),
        voice=text_or("voice", base.voice),
        language=text_or("language", base.language),
        turn_detection=turn_detection,
    )
    try:
        live.validate()
    except LiveConfigError as exc:
        key = "voice" if str(exc).startswith("AGENT_VOICE=") else "language"
        message = str(exc).replace("AGENT_LANGUAGE=", "language = ").replace("AGENT_VOICE=", "voice = ")
        raise src.error(message, table, key) from None
    if "greeting" in raw:
        text = _text(src, raw["greeting"], table, "greeting")
        greeting = "" if text.strip().lower() in {"", "none", "off"} else text
    tools = _strings(src, raw.get("tools", list(DEFAULT_TOOLS)), table, "tools")
    for tool in tools:
        if tool not in BUILTIN_TOOLS and tool not in custom:
            raise src.error(
                f"tool {tool!r} is neither built in ({', '.join(BUILTIN_TOOLS)}) nor a [tools.{tool}] table",
                table,
                "tools",
            )
    if len(set(tools)) != len(tools):
        raise src.error("a tool is listed twice", table, "tools")
    targets = _numbers(src, raw.get("transfer_targets", []), table, "transfer_targets")
    if TRANSFER_CALL in tools and not targets:
        raise src.error("transfer_call needs transfer_targets, the numbers it may dial", table, "tools")
    if targets and TRANSFER_CALL not in tools:
        raise src.error(
            "transfer_targets is set but transfer_call is not in tools", table, "transfer_targets"
        )
    agent = make_agent(
        name,
        live,
        greeting,
        tools=tools,
        transfer_targets=targets,
        custom_tools={t: custom[t] for t in tools if t in custom},
        barge_in=barge_in,
    )
    try:
        agent.live.validate()  # the tools' behaviours against the model
    except LiveConfigError as exc:
        raise src.error(str(exc), table, "tools") from None
    recording = text_or("recording", "")
    if recording not in ("", *RECORDING_MODES):
        raise src.error(f"recording = {recording!r} must be off, gateway or twilio", table, "recording")
    agent = dataclasses.replace(agent, recording=recording)
    return _outbound_fields(src, raw, table, agent), numbers


def _outbound_fields(src: _Source, raw: dict[str, Any], table: tuple[str, ...], agent: Agent) -> Agent:
    """The outbound keys: declared placeholders (each used, each declared), voicemail text, machine policy."""
    from gateway.outbound.variables import NAME, placeholders

    declared = _strings(src, raw.get("variables", []), table, "variables")
    for name in declared:
        if not NAME.match(name):
            raise src.error(
                f"variable {name!r}: use lower-case letters, digits and _ (at most 32)", table, "variables"
            )
    if len(set(declared)) != len(declared):
        raise src.error("a variable is declared twice", table, "variables")
    voicemail = _text(src, raw.get("voicemail", ""), table, "voicemail").strip()
    machine = _text(src, raw.get("machine", "hang_up"), table, "machine")
    if machine not in MACHINE_POLICIES:
        raise src.error(f"machine must be one of {', '.join(MACHINE_POLICIES)}", table, "machine")
    if machine == "leave_message" and not voicemail:
        raise src.error('machine = "leave_message" needs a voicemail text', table, "machine")
    for key, text in (
        ("instructions", agent.live.instructions),
        ("greeting", agent.greeting),
        ("voicemail", voicemail),
    ):
        if undeclared := sorted(placeholders(text) - set(declared)):
            raise src.error(
                f"{key} uses {{{undeclared[0]}}}, which is not declared: add it to variables",
                table,
                key if key in raw else "variables",
            )
    used = placeholders(agent.live.instructions, agent.greeting, voicemail)
    unused = [n for n in declared if n not in used]
    if unused:
        raise src.error(f"variable {unused[0]!r} is declared but used nowhere", table, "variables")
    return dataclasses.replace(agent, variables=declared, voicemail=voicemail, machine=machine)


def _syntax_error_line(exc: tomllib.TOMLDecodeError, text: str) -> int:
    """Python 3.14 gives `lineno`; older versions say "(at line N, column M)" or "(at end of document)"."""
    lineno = getattr(exc, "lineno", None)
    if isinstance(lineno, int):
        return lineno
    if match := re.search(r"at line (\d+)", str(exc)):
        return int(match.group(1))
    return max(1, len(text.splitlines()))


def load_agents(path: str | Path, default: Agent) -> AgentBook:
    """Read the agents file; every agent inherits what it does not set from `default` (the environment)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentsFileError(f"AGENTS_FILE={str(path)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AgentsFileError(
            f"{path}, line {_syntax_error_line(exc, text)}: not valid TOML: {exc}"
        ) from None
    src = _Source(path, text)
    if unknown := sorted(set(data) - {"agents", "tools"}):
        raise src.error(
            f"unknown table {unknown[0]!r}; the file has [agents.NAME] and [tools.NAME]", (unknown[0],)
        )
    raw_tools = data.get("tools", {})
    if not isinstance(raw_tools, dict):
        raise src.error("tools must be tables: [tools.NAME]", ("tools",))
    custom = {name: _custom_tool(src, name, raw) for name, raw in raw_tools.items()}
    raw_agents = data.get("agents", {})
    if not isinstance(raw_agents, dict):
        raise src.error("agents must be tables: [agents.NAME]", ("agents",))
    by_number: dict[str, Agent] = {}
    by_name: dict[str, Agent] = {}
    owner: dict[str, str] = {}
    for name, raw in raw_agents.items():
        agent, numbers = _agent(src, name, raw, default.live, default.greeting, custom, default.barge_in)
        by_name[name] = agent
        for number in numbers:
            if number in owner:
                raise src.error(
                    f"{number} is already answered by agent {owner[number]!r}", ("agents", name), "numbers"
                )
            owner[number] = name
            by_number[number] = agent
    return AgentBook(default, by_number, by_name)
