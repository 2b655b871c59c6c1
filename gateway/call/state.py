"""The rules of a call, as state that never awaits: what the `Call` consults before every action."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.call.playout import Playout
from gateway.call.resumption import Resumption
from gateway.call.tool_calls import ToolCalls
from gateway.call.transcript import Transcript
from gateway.tools import LineAction


@dataclass
class CallState:
    """The four parts of a call's state, and the rules that span them.

    Each method takes something that happened and answers what to do; the `Call` does it. Nothing here
    touches a socket or a clock (times are passed in), so every rule is tested in microseconds.
    """

    playout: Playout = field(default_factory=Playout)
    resumption: Resumption = field(default_factory=Resumption)
    tools: ToolCalls = field(default_factory=ToolCalls)
    transcript: Transcript = field(default_factory=Transcript)

    @property
    def between_turns(self) -> bool:
        """Neither side mid-turn, no tool running and no line action waiting (their answers belong to this
        connection: a resumed session would not know them), and a handle that covers the conversation: the
        moment to switch Live connections or to move the call to another instance."""
        return (
            self.resumption.handle_fresh
            and not self.playout.generating
            and not self.transcript.caller_speaking
            and not self.tools.busy
        )

    def switch_now(self) -> bool:
        """A goAway is pending and this is a moment between turns: switch connections now."""
        return self.resumption.switch_by is not None and self.between_turns

    # --- what Live says ---

    def agent_audio(self) -> bool:
        """Live sent audio: False to drop it (an interrupted turn's), True to play it."""
        if not self.playout.agent_audio():
            return False
        self.resumption.agent_spoke()
        return True

    def agent_transcript(self, text: str) -> None:
        self.playout.agent_transcript()
        self.resumption.agent_spoke()
        self.transcript.heard("agent", text)

    def caller_transcript(self, text: str) -> bool:
        """Live transcribed the caller. True: the caller talks over a finished reply still playing out, so
        clear the line (then `cleared`)."""
        talked_over = self.playout.talked_over()
        self.transcript.heard("caller", text)
        return talked_over

    def handle_update(self, handle: str, resumable: bool, now: float) -> None:
        if self.resumption.handle_update(handle, resumable, now):
            self.transcript.handle_updated()

    def interrupted(self) -> LineAction | None:
        """Live says the caller talked over the agent (the line is being cleared). The line action this
        withdraws ("wait, one more thing": the agent may ask again), if any."""
        self.playout.interrupted()
        return self.tools.withdraw()

    def cleared(self) -> LineAction | None:
        """The line's playout was cleared because the caller talked over it; the line action withdrawn."""
        self.playout.cleared()
        return self.tools.withdraw()

    def turn_complete(self, now: float) -> str | None:
        """Live ended the agent's turn: the turn's mark, to send after its audio and tail (None if nothing
        of it reached the line). Until `turn_over`, the turn is still in progress: a line action asked for
        meanwhile waits for it."""
        return self.playout.turn_complete(now)

    def turn_over(self, now: float) -> str | None:
        """The turn's tail and mark are on the line: the mark of a line action waiting for it, if any, to
        send next (so its echo proves the whole turn was heard)."""
        self.playout.turn_over()
        action_mark = self.tools.turn_ended(self.playout.turn)
        if action_mark is not None:
            self.playout.mark_sent(action_mark, now)
        return action_mark

    # --- tools ---

    def ask(self, action: LineAction, call_id: str, now: float) -> str | None:
        """A tool asked for a line action: the mark to send now, or None if it follows the current turn."""
        mark = self.tools.ask(action, call_id, in_turn=self.playout.in_turn, turn=self.playout.turn)
        if mark is not None:
            self.playout.mark_sent(mark, now)
        return mark

    # --- what the line says ---

    def played(self, name: str, now: float) -> tuple[float | None, LineAction | None]:
        """A mark came back: (how long its audio took to play, None if a clear flushed it; the line action
        now due, if any: only a mark that was heard carries one out)."""
        took = self.playout.played(name, now)
        return took, (None if took is None else self.tools.played(name))

    # --- switching connections ---

    def begin_switch(self) -> bool:
        """The call is leaving its Live connection: from now on the caller's audio is held, and everything
        since the handle will be replayed. True when a turn was in progress: end it (its tail and mark go
        out; nothing waits for the rest of it)."""
        self.resumption.begin_switch()
        self.transcript.replaying()
        return self.playout.in_turn
