"""Placing outbound calls: a `POST /calls` request checked into a call plan, and the plans of the calls this
instance placed, until they end.

`plan_call` is pure: it checks the request (destination, caller ID, agent, variables, machine policy) and
renders the agent for this one call, or raises `Refused` with the HTTP status and the reason, before
anything is dialled. `Outbound` keeps the plans by CallSid: the voice webhook, the media stream and the AMD
and status callbacks of a call find its agent there. They live in this process's memory: the webhook,
stream and callbacks of a call must reach the process that placed it (its URLs name the process when
several serve the port; across instances, routing that keeps a CallSid's requests together); a stream that
lands elsewhere is answered as an inbound call would be.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.agents import Agent, AgentBook
from gateway.call.answering import MACHINE_POLICIES, MachinePolicy
from gateway.call.call import OutboundRole
from gateway.outbound.destinations import DestinationRefused, check_destination, country_of
from gateway.outbound.variables import DATA_NOTE, VariablesRefused, check_values, render

REQUEST_KEYS = {"to", "from", "agent", "variables", "machine", "campaign"}
AMD_MARGIN_S = 2.0  # past Twilio's own AMD timeout, for its callback to arrive
# A plan whose call never reported its end (a lost callback) is forgotten after this long.
PLAN_TTL_S = 6 * 3600.0
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
_CAMPAIGN_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


class Refused(Exception):
    """A request that places no call: the HTTP status and the reason, for the caller of the API."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class CallPlan:
    """One outbound call: whom, from which number, its agent rendered for it, what it does on a machine."""

    to: str
    from_: str
    agent: Agent  # instructions rendered, no greeting at the start (an outbound agent waits for the callee)
    role: OutboundRole
    campaign: str = ""
    call_sid: str = ""
    placed_at: float = 0.0  # time.monotonic()
    status: str = "queued"
    amd: tuple[str, int | None] | None = None  # an AMD result that came before the media stream


def plan_call(
    body: Any,
    agents: AgentBook,
    *,
    from_number: str | None,
    countries: frozenset[str],
    amd_timeout_s: int,
) -> CallPlan:
    """The plan of the call a `POST /calls` body asks for, or Refused(status, reason)."""
    if not isinstance(body, dict):
        raise Refused(400, 'the body must be a JSON object like {"to": "+12025550123"}')
    if unknown := sorted(set(body) - REQUEST_KEYS):
        known = ", ".join(sorted(REQUEST_KEYS))
        raise Refused(400, f"unknown field(s) {', '.join(unknown)}; a call takes {known}")
    if "to" not in body:
        raise Refused(400, "to is required: the E.164 number to call")
    try:
        to = check_destination(body["to"], countries).number
    except DestinationRefused as exc:
        raise Refused(403 if exc.forbidden else 400, str(exc)) from None
    from_ = body.get("from") or from_number
    if not from_:
        raise Refused(400, "from is required: set TWILIO_FROM_NUMBER or give one of the account's numbers")
    if not isinstance(from_, str) or country_of(from_) is None:
        raise Refused(400, f"from {str(from_)[:32]!r} is not a valid E.164 number")
    agent = agents.named(body.get("agent"))
    if agent is None or not isinstance(body.get("agent", ""), str):
        names = ", ".join(sorted({"default", *agents.by_name})) or "default"
        raise Refused(400, f"no agent named {str(body.get('agent'))[:64]!r}; the agents are: {names}")
    try:
        values = check_values(agent.variables, body.get("variables") or {})
    except VariablesRefused as exc:
        raise Refused(400, str(exc)) from None
    machine = body.get("machine", agent.machine)
    if machine not in MACHINE_POLICIES:
        raise Refused(400, f"machine must be one of {', '.join(MACHINE_POLICIES)}")
    if machine == "leave_message" and not agent.voicemail:
        raise Refused(400, f"agent {agent.name!r} has no voicemail text: machine must be hang_up")
    campaign = body.get("campaign", "")
    if not isinstance(campaign, str) or len(campaign) > 64 or set(campaign) - _CAMPAIGN_CHARS:
        raise Refused(400, "campaign must be a name of at most 64 letters, digits and -_.:")
    opening = render(agent.greeting, values)
    role = OutboundRole(
        machine=_policy(machine),
        opening=opening,
        voicemail=render(agent.voicemail, values),
        wait_s=amd_timeout_s + AMD_MARGIN_S,
    )
    return CallPlan(to, from_, outbound_agent(agent, values, opening), role, campaign)


def _policy(machine: str) -> MachinePolicy:
    return "leave_message" if machine == "leave_message" else "hang_up"


def outbound_agent(agent: Agent, values: dict[str, str], opening: str) -> Agent:
    """The agent for one outbound call: its instructions with the call's values (quoted), told that it
    placed the call and how to open once the callee has spoken; no greeting at the start (it waits)."""
    parts = [render(agent.live.instructions, values, quoted=True)]
    note = "You placed this phone call. Wait for the person you called to speak first"
    parts.append(f'{note}; then open with: "{opening}"' if opening else f"{note}.")
    if values:
        parts.append(DATA_NOTE)
    live = dataclasses.replace(agent.live, instructions="\n\n".join(parts))
    return dataclasses.replace(agent, live=live, greeting="")


class SharedOutbound(Protocol):
    """The other processes' outbound calls (`gateway.machine.Machine`, WEB_CONCURRENCY > 1)."""

    def claim_outbound(self, own: int, limit: int) -> bool: ...

    def publish_outbound(self, own: int) -> None: ...


class Outbound:
    """The outbound calls this process placed, by CallSid, until Twilio reports their end. With several
    processes (`shared`), MAX_OUTBOUND_CALLS is the instance's: a dial is claimed against every process's
    calls (checked and counted at once), and every later change of this process's count is published."""

    def __init__(self, max_calls: int, shared: SharedOutbound | None = None) -> None:
        self.max_calls = max_calls
        self.plans: dict[str, CallPlan] = {}
        self.dialling = 0  # requests to Twilio in flight (they count against the limit too)
        self._shared = shared

    @property
    def active(self) -> int:
        return len(self.plans) + self.dialling

    def dial(self, now: float) -> bool:
        """A request to Twilio is about to place a call: False (and nothing counted) at the limit."""
        self._forget_stale(now)
        if self._shared is not None:
            if not self._shared.claim_outbound(self.active, self.max_calls):
                return False
        elif self.active >= self.max_calls:
            return False
        self.dialling += 1
        return True

    def dial_ended(self, plan: CallPlan, call_sid: str | None, now: float) -> None:
        """The request to Twilio is over: the call placed (`call_sid`: its plan is kept), or not (None). One
        change of the count, so that other processes never see it dip between the two."""
        self.dialling -= 1
        if call_sid is not None:
            plan.call_sid, plan.placed_at = call_sid, now
            self.plans[call_sid] = plan
        self._changed()

    def get(self, call_sid: str) -> CallPlan | None:
        return self.plans.get(call_sid)

    def status(self, call_sid: str, status: str) -> CallPlan | None:
        """Twilio reported the call's status: its plan (forgotten once the call is over), or None."""
        plan = self.plans.get(call_sid)
        if plan is not None:
            plan.status = status
            if status in FINAL_STATUSES:
                del self.plans[call_sid]
                self._changed()
        return plan

    def _forget_stale(self, now: float) -> None:
        stale = [s for s, p in self.plans.items() if now - p.placed_at > PLAN_TTL_S]
        for sid in stale:
            del self.plans[sid]
        if stale:
            self._changed()

    def _changed(self) -> None:
        if self._shared is not None:
            self._shared.publish_outbound(self.active)
