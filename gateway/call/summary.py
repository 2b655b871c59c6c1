"""What a call leaves behind for its record."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.call.events import CallEvent
from gateway.call.outcome import Outcome


@dataclass(frozen=True)
class CallSummary:
    """One ended call (or this instance's part of it): who, when, how it ended, what it used."""

    call_sid: str
    stream_sid: str
    account_sid: str
    caller: str
    called: str
    agent: str  # the Live model
    started_at: datetime
    ended_at: datetime
    outcome: Outcome
    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0
    tokens_by_modality: dict[str, int] = field(default_factory=dict)
    switches: int = 0  # Live connection switches
    resumption_handle: str = field(default="", repr=False)  # lets anyone holding it resume the conversation
    # An outbound call (see gateway.call.answering): who answered, how long it took to know, and what the
    # agent did about a machine.
    direction: str = ""
    answered_by: str = ""
    amd_wait_ms: int | None = None
    amd_duration_ms: int | None = None
    machine_action: str = ""
    barge_ins_local: int = 0  # the caller talked over the agent and the gateway's detector cleared the line
    barge_ins_server: int = 0  # ... and Live's `interrupted` did
    barge_ins_guarded: int = 0  # sounds a guard kept from counting as barge-ins (echo, music, noise)
    stalls: int = 0  # caller turns the agent left unanswered past STALL_TIMEOUT_S
    stall_recoveries: int = 0  # of which the agent answered after a nudge or a new connection
    carrier: str = "twilio"  # which line carried the call (see gateway.call.line.Started)
    recording_url: str = ""  # this part's recording (RECORDING=gateway), told by the app once the line ended
    recording_s: float | None = None
    events: tuple[CallEvent, ...] = ()  # what happened when (gateway.call.events), for the console
