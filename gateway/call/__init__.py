"""One phone call: the async story (`call`), the rules it follows as pure state beside it (`state` and its
parts: `playout`, `resumption`, `tool_calls`, `transcript`), and the seam to the caller's line (`line`)."""

from gateway.call.call import (
    Call,
    CallAgent,
    CallLimits,
    CallPreparer,
    CallStats,
    CallWatcher,
    LiveOpener,
    OutboundRole,
    ResumeLookup,
    TranscriptObserver,
)
from gateway.call.outcome import Outcome
from gateway.call.resumption import FRAME_S, MAX_REPLAY_S
from gateway.call.summary import CallSummary

__all__ = [
    "FRAME_S",
    "MAX_REPLAY_S",
    "Call",
    "CallAgent",
    "CallLimits",
    "CallPreparer",
    "CallStats",
    "CallSummary",
    "CallWatcher",
    "LiveOpener",
    "OutboundRole",
    "Outcome",
    "ResumeLookup",
    "TranscriptObserver",
]
