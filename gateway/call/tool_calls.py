"""Tool calls in progress, and the line action (hang up, transfer) one of them asked for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.tools import LineAction


@dataclass
class ToolCalls:
    """The tool calls Live is waiting on, and what to do to the line once the agent has been heard.

    A line action waits for a mark sent after the agent's current turn (or at once, when no turn is in
    progress): its echo, not one a `clear` caused, proves the goodbye was heard. Talking over the agent, or
    Live cancelling the tool call that asked, withdraws it: the agent may ask again.
    """

    running: set[str] = field(default_factory=set)  # ids of tool calls not yet answered
    action: LineAction | None = None
    action_call: str = ""  # the tool call that asked for it: its cancellation withdraws it
    action_mark: str = ""  # the mark whose echo carries it out ("" until that mark is sent)

    @property
    def busy(self) -> bool:
        """A tool runs or a line action waits: their answers belong to this Live connection."""
        return bool(self.running) or self.action is not None

    def started(self, call_id: str) -> None:
        self.running.add(call_id)

    def answered(self, call_id: str) -> None:
        """The tool answered: a cancellation from now on only withdraws its line action."""
        self.running.discard(call_id)

    def cancelled(self, ids: Iterable[str]) -> LineAction | None:
        """Live cancelled these calls. The line action withdrawn with them, if one of them asked for it."""
        ids = set(ids)
        self.running -= ids
        return self.withdraw() if self.action_call in ids else None

    def ask(self, action: LineAction, call_id: str, *, in_turn: bool, turn: int) -> str | None:
        """A tool asked for `action`. The name of the mark to send now when no turn is in progress (only
        what is already queued is waited for); None when the mark follows the current turn."""
        self.action, self.action_call, self.action_mark = action, call_id, ""
        return None if in_turn else self._mark(turn)

    def turn_ended(self, turn: int) -> str | None:
        """The agent's turn ended: the name of the action's mark to send after it, if one is due."""
        if self.action is not None and not self.action_mark:
            return self._mark(turn)
        return None

    def played(self, name: str) -> LineAction | None:
        """A mark (not flushed) came back: the action it carries, now due, if any."""
        if self.action is None or name != self.action_mark:
            return None
        return self.withdraw()

    def withdraw(self) -> LineAction | None:
        """Forget the pending action; it is returned (for the log), or None if there was none."""
        action = self.action
        self.action, self.action_call, self.action_mark = None, "", ""
        return action

    def _mark(self, turn: int) -> str:
        assert self.action is not None
        self.action_mark = f"{self.action.kind}-{turn}"
        return self.action_mark
