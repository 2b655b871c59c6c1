"""The rules of a call, as state that never awaits: what the `Call` consults before every action."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.call.playout import Playout
from gateway.call.resumption import Resumption
from gateway.call.tool_calls import ToolCalls
from gateway.call.transcript import Transcript
from gateway.call.turns import CallerSpeech, Heard, StallWatchdog
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
    speech: CallerSpeech = field(default_factory=CallerSpeech)
    watchdog: StallWatchdog = field(default_factory=StallWatchdog)

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
        self.watchdog.agent_answered()
        return True

    def agent_transcript(self, text: str) -> None:
        if self.playout.discarding:
            return  # the rest of a turn the caller cut off: never heard, so never said
        if self.transcript.trailing:
            # The end of a turn whose generation Live has finished: its line takes it, and no new turn is
            # under way (a caller talking over the playout is still cleared).
            self.transcript.trail(text)
            return
        self.playout.agent_transcript()
        self.resumption.agent_spoke()
        self.watchdog.agent_answered()
        # Stamped with the turn's audio sent so far; a transcript that comes before the turn's first
        # audio (the local backend sends each sentence's words first) belongs at the turn's start, not
        # where the previous turn ended.
        self.transcript.heard("agent", text, self.playout.sent_s if self.playout.sending else 0.0)

    def caller_transcript(self, text: str) -> bool:
        """Live transcribed the caller. True: the caller talks over a finished reply still playing out, so
        clear the line (then `cleared`)."""
        talked_over = self.playout.talked_over()
        self.transcript.heard("caller", text)
        return talked_over

    def caller_interim(self) -> bool:
        """An interim (provisional) transcript of the caller: not recorded, but, like a final one, True when
        the caller talks over a finished reply still playing out (clear the line, then `cleared`)."""
        return self.playout.talked_over()

    def handle_update(
        self, handle: str, resumable: bool, now: float, consumed_index: int | None = None
    ) -> None:
        if self.resumption.handle_update(handle, resumable, now, consumed_index):
            self.transcript.handle_updated()

    @property
    def cut_off(self) -> bool:
        """The current turn was cut off already (its late audio is being dropped): Live's `interrupted` for
        it needs no second clear (the gateway's own barge-in was first)."""
        return self.playout.discarding

    def interrupted(self, now: float = 0.0) -> LineAction | None:
        """Live says the caller talked over the agent (the line is being cleared). The line action this
        withdraws ("wait, one more thing": the agent may ask again), if any."""
        if self.playout.sending and not self.playout.discarding:
            self.transcript.cut(self.playout.heard_s(now))
        self.transcript.cut_held(now)
        self.playout.interrupted()
        return self.tools.withdraw()

    def cleared(self, now: float = 0.0) -> LineAction | None:
        """The line's playout was cleared because the caller talked over it; the line action withdrawn."""
        if self.playout.sending:
            self.transcript.cut(self.playout.heard_s(now))
        self.transcript.cut_held(now)
        self.playout.cleared()
        return self.tools.withdraw()

    # --- the caller's speech (local detection) ---

    def caller_heard(self, heard: Heard, now: float) -> bool:
        """What a caller frame meant for the call. True: the caller started talking over the agent's audio
        playing out on the line, and barge-in is the gateway's: clear the line now (then `barged_in`)."""
        if heard.speaking:
            self.watchdog.caller_sound(now)
        if not self.playout.playing:
            self.speech.agent_quiet()
        return heard.onset and self.playout.playing and self.speech.rules.barge_in == "local"

    def barged_in(self, now: float) -> LineAction | None:
        """The gateway cleared the line for the caller's speech: the rest of a turn still being generated is
        dropped (Live's own `interrupted` will follow, or its turn ends unheard); what the caller never heard
        is cut from the transcript. The line action withdrawn, if any."""
        if self.playout.sending or self.playout.generating:
            if self.playout.sending:
                self.transcript.cut(self.playout.heard_s(now))
            self.playout.interrupted()
        else:
            self.playout.cleared()
        self.transcript.cut_held(now)
        self.speech.agent_quiet()
        return self.tools.withdraw()

    def agent_audio_sent(self, seconds: float, now: float) -> bool:
        """`seconds` of the agent's audio went to the line. True for a turn's first: a new turn is heard, and
        a line still held for the turn before it is over (its words are all in)."""
        first = self.playout.audio_sent(seconds, now)
        if first:
            self.transcript.turn_ended()
            self.transcript.release(now)  # the held lines already heard; the rest play before this turn
            queued = self.transcript.heard_until
            if queued is not None and queued > now:
                self.playout.started_at = queued  # heard once what is queued before it has played
        return first

    def turn_complete(self, now: float) -> str | None:
        """Live ended the agent's turn: the turn's mark, to send after its audio and tail (None if nothing
        of it reached the line). Until `turn_over`, the turn is still in progress: a line action asked for
        meanwhile waits for it. The turn's transcript line is held until the caller has heard the turn
        (`played`) or talked over it (a clear cuts it where they did)."""
        mark = self.playout.turn_complete(now)
        if mark is not None and self.playout.started_at is not None:
            self.transcript.hold(self.playout.started_at, self.playout.sent_s)
        return mark

    def live_turn_ended(self) -> None:
        """Live's turnComplete (after its generationComplete, on models that send one): words of the agent's
        that come now belong to its next turn."""
        self.transcript.turn_ended()

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
        if took is not None and not self.playout.marks:  # the line has played out everything sent
            self.transcript.release()
        return took, (None if took is None else self.tools.played(name))

    # --- switching connections ---

    def begin_switch(self) -> bool:
        """The call is leaving its Live connection: from now on the caller's audio is held, and everything
        since the handle will be replayed. True when a turn was in progress: end it (its tail and mark go
        out; nothing waits for the rest of it)."""
        self.resumption.begin_switch()
        self.transcript.replaying()
        return self.playout.in_turn
