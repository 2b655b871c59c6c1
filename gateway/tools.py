"""The agent's tools: what a Live `toolCall` does, and the `toolResponse` it gets back.

Built in:
- `end_call`: answered at once; the Call hangs up once the goodbye has been heard (see `LineAction`).
- `transfer_call(target)`: only to the agent's `transfer_targets`, and only with Twilio REST credentials
  (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN): the TwiML after `</Connect>` is fixed when the webhook answers,
  so a transfer decided during the call has to go through the REST API. Without credentials the tool answers
  an error the model can tell the caller about.
Custom (`[tools.NAME]` in the agents file): the arguments and the call's identifiers are POSTed as JSON to
the tool's URL, signed with TOOLS_SECRET (see `sign`), within the tool's timeout. A JSON object in reply is
the tool's response; anything else (timeout, HTTP error, not JSON) becomes {"error": ...}: the model can
speak about a failed lookup, and the call goes on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import structlog

from gateway.agents import END_CALL, TRANSFER_CALL, Agent, CustomTool
from gateway.live.protocol import SCHEDULINGS, FunctionCall

log = structlog.get_logger("gateway.tools")

SIGNATURE_HEADER = "X-Gateway-Signature"
TIMESTAMP_HEADER = "X-Gateway-Timestamp"
MAX_REPLY_BYTES = 64 * 1024  # a tool reply goes into the model's context: keep it to a sensible size


@dataclass(frozen=True)
class CallIds:
    """Who a tool call is for: the call's sids and numbers, as sent to custom tools."""

    call_sid: str
    stream_sid: str
    caller: str  # From
    called: str  # To


@dataclass(frozen=True)
class LineAction:
    """Something to do to the phone line once what the agent is saying has been heard."""

    kind: Literal["hang_up", "transfer"]
    target: str = ""


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer to the model (`response`), and what to do to the line once it has been heard, if
    anything."""

    response: dict[str, Any]
    action: LineAction | None = None


def function_response(agent: Agent, call: FunctionCall, response: dict[str, Any]) -> dict[str, Any]:
    """The `functionResponses` entry answering `call`. A non-blocking call's answer says how the model
    should take it (`scheduling`): the tool's own, and for the built-in line tools SILENT (the goodbye or
    the transfer notice was said when the tool was called; a word after it would be cut off by the line
    action)."""
    entry: dict[str, Any] = {"id": call.id, "name": call.name, "response": response}
    if agent.live.tool_behavior(call.name) == "NON_BLOCKING":
        tool = agent.custom_tools.get(call.name)
        entry["scheduling"] = SCHEDULINGS[tool.scheduling if tool is not None else "silent"]
    return entry


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of `timestamp.body`; the timestamp inside lets receivers refuse replays."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Toolbox:
    """Runs the tools of any agent; one per service (it holds the HTTP client for custom tools)."""

    def __init__(
        self, *, http: httpx.AsyncClient | None = None, secret: str | None = None, can_transfer: bool = False
    ) -> None:
        self._http = http
        self._secret = secret
        self.can_transfer = can_transfer

    async def run(self, agent: Agent, call: FunctionCall, ids: CallIds) -> ToolResult:
        """The response to one function call. Never raises: a failure is a response the model can read."""
        if call.name not in agent.tools:
            log.warning("tool_unknown", tool=call.name)
            return ToolResult({"error": f"there is no tool named {call.name!r}"})
        if call.name == END_CALL:
            log.info("tool_end_call")
            return ToolResult(
                {"result": "The call will end once your goodbye has been heard."}, LineAction("hang_up")
            )
        if call.name == TRANSFER_CALL:
            return self._transfer(agent, call)
        return await self._http_tool(agent.custom_tools[call.name], call, ids)

    def _transfer(self, agent: Agent, call: FunctionCall) -> ToolResult:
        target = str(call.args.get("target", "")).strip()
        if target not in agent.transfer_targets:
            log.warning("transfer_refused", target=target, reason="not_allowed")
            allowed = ", ".join(agent.transfer_targets)
            return ToolResult({"error": f"{target or 'that'} is not a transfer target; allowed: {allowed}"})
        if not self.can_transfer:
            log.warning("transfer_refused", target=target, reason="no_rest_credentials")
            return ToolResult(
                {"error": "transfers are not available on this line; offer the caller the number"}
            )
        log.info("tool_transfer_call", target=target)
        return ToolResult(
            {"result": f"The caller will be transferred to {target} once what you say now has been heard."},
            LineAction("transfer", target),
        )

    async def _http_tool(self, tool: CustomTool, call: FunctionCall, ids: CallIds) -> ToolResult:
        assert self._http is not None and self._secret, "HTTP tools need a client and TOOLS_SECRET"
        body = json.dumps(
            {
                "tool": tool.name,
                "id": call.id,
                "args": call.args,
                "call": {
                    "call_sid": ids.call_sid,
                    "stream_sid": ids.stream_sid,
                    "from": ids.caller,
                    "to": ids.called,
                },
            }
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        began = time.monotonic()
        try:
            reply = await self._http.post(tool.url, content=body, headers=headers, timeout=tool.timeout_s)
        except httpx.TimeoutException:
            return self._failed(
                tool, began, f"the {tool.name} service did not answer within {tool.timeout_s:g} s"
            )
        except httpx.HTTPError as exc:
            return self._failed(
                tool, began, f"the {tool.name} service could not be reached ({type(exc).__name__})"
            )
        if reply.status_code // 100 != 2:
            return self._failed(tool, began, f"the {tool.name} service answered HTTP {reply.status_code}")
        if len(reply.content) > MAX_REPLY_BYTES:
            return self._failed(
                tool, began, f"the {tool.name} service answered more than {MAX_REPLY_BYTES} bytes"
            )
        try:
            value = reply.json()
        except ValueError:
            return self._failed(tool, began, f"the {tool.name} service did not answer JSON")
        took = round(time.monotonic() - began, 3)
        log.info("tool_answered", tool=tool.name, took_s=took, status=reply.status_code)
        # Live's response is a JSON object (a protobuf Struct): wrap anything else.
        return ToolResult(value if isinstance(value, dict) else {"result": value})

    def _failed(self, tool: CustomTool, began: float, error: str) -> ToolResult:
        log.warning("tool_failed", tool=tool.name, error=error, took_s=round(time.monotonic() - began, 3))
        return ToolResult({"error": error})
