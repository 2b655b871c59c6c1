"""How a call ended: one word each, in logs, metrics and records."""

from __future__ import annotations

from enum import StrEnum

from gateway.live.session import LiveConfigRejected, LiveError


class Outcome(StrEnum):
    """How a call ended. The values are the words logs, metrics and records carry."""

    UNKNOWN = "unknown"  # still running
    CLOSED_BEFORE_START = "closed_before_start"  # the line ended before it said who was calling
    NO_START = "no_start"  # the line never said who was calling
    REFUSED = "refused"  # the stream was refused at admission (bad or reused token, say)
    CALLER_HUNG_UP = "caller_hung_up"  # the person who called hung up
    CALLEE_HUNG_UP = "callee_hung_up"  # an outbound call: the person (or machine) the agent called hung up
    CALLER_GONE = "caller_gone"  # the line broke under a send, or the call ended during a transfer
    MEDIA_IDLE = "media_idle"  # the line stopped carrying audio
    MAX_DURATION = "max_duration"
    AGENT_HUNG_UP = "agent_hung_up"  # `end_call`, once the goodbye was heard
    TRANSFERRED = "transferred"
    LIVE_CLOSED = "live_closed"  # Live ended the session normally
    LIVE_CONFIG_ERROR = "live_config_error"  # Live refused the configuration: no retry can help
    LIVE_UNAVAILABLE = "live_unavailable"  # no Live session could be opened for the call
    LIVE_LOST = "live_lost"  # the Live session was lost and could not be brought back
    MOVED = "moved"  # handed to another instance during a drain
    NOT_MOVED = "not_moved"  # a drain could not hand it to another instance (Twilio's API): ended, apologised
    OPERATOR_HUNG_UP = "operator_hung_up"  # someone hung it up from the console
    ERROR = "error"  # a bug

    @property
    def is_failure(self) -> bool:
        """The gateway failed the caller (Live could not carry the call, or a drain could not move it): they
        hear an apology rather than dead air or a cut."""
        return self in (
            Outcome.LIVE_CONFIG_ERROR,
            Outcome.LIVE_UNAVAILABLE,
            Outcome.LIVE_LOST,
            Outcome.NOT_MOVED,
        )


def live_failure(exc: LiveError, *, opening: bool) -> Outcome:
    """The outcome of a call that Live failed, while its first session was opening or later."""
    if isinstance(exc, LiveConfigRejected):
        return Outcome.LIVE_CONFIG_ERROR
    return Outcome.LIVE_UNAVAILABLE if opening else Outcome.LIVE_LOST
