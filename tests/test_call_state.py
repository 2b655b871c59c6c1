"""The rules of a call, without sockets or clocks: each test is a few microseconds of pure state."""

from __future__ import annotations

import pytest

from gateway.call.outcome import Outcome, live_failure
from gateway.call.playout import Playout
from gateway.call.resumption import Resumption
from gateway.call.state import CallState
from gateway.call.tool_calls import ToolCalls
from gateway.call.transcript import Transcript
from gateway.live.session import (
    LiveConfigRejected,
    LiveConnectionLost,
    LiveHandleRejected,
    LiveUnreachable,
)
from gateway.tools import LineAction

HANG_UP = LineAction("hang_up")
TRANSFER = LineAction("transfer", "+15005550009")


def speaking(state: CallState, frames: int = 3) -> None:
    """Live streams a turn: audio that reaches the line."""
    for _ in range(frames):
        assert state.agent_audio()
        state.playout.audio_sent()


# --- playout: the agent's side of the line ---


def test_a_turn_is_counted_once_and_its_mark_follows_its_audio():
    playout = Playout()
    assert playout.agent_audio()
    assert playout.audio_sent() is True  # the first audio of the turn starts turn 1
    assert playout.audio_sent() is False
    assert playout.turn == 1 and playout.in_turn
    assert playout.turn_complete(now=10.0) == "turn-1"
    assert playout.in_turn  # until its tail and mark are on the line
    playout.turn_over()
    assert not playout.in_turn and playout.marks == {"turn-1": 10.0}
    assert playout.played("turn-1", now=12.5) == 2.5
    assert playout.marks == {}


def test_a_turn_that_sent_nothing_gets_no_mark():
    playout = Playout()
    playout.agent_transcript()  # a transcript, no audio yet
    assert playout.in_turn
    assert playout.turn_complete(now=1.0) is None and playout.turn == 0
    playout.turn_over()
    assert not playout.in_turn


def test_a_mark_flushed_by_a_clear_proves_nothing():
    playout = Playout()
    playout.agent_audio()
    playout.audio_sent()
    playout.turn_complete(now=1.0)
    playout.interrupted()  # the line is cleared: turn-1's echo will come, flushed
    assert playout.played("turn-1", now=1.2) is None
    assert playout.played("never-sent", now=1.3) is None


def test_audio_of_an_interrupted_turn_is_dropped_until_its_turn_complete():
    playout = Playout()
    playout.agent_audio()
    playout.audio_sent()
    playout.interrupted()
    assert not playout.sending
    assert playout.agent_audio() is False  # late audio of the interrupted turn
    assert playout.turn_complete(now=2.0) is None  # nothing of it was sent after the clear: no mark
    playout.turn_over()
    assert playout.agent_audio() is True  # the next turn plays
    assert playout.audio_sent() and playout.turn == 2


def test_talking_over_a_finished_reply_that_still_plays_out_clears_it():
    playout = Playout()
    playout.agent_audio()
    playout.audio_sent()
    assert playout.talked_over() is False  # still generating: Live will say `interrupted` itself
    playout.turn_complete(now=1.0)
    playout.turn_over()
    assert playout.talked_over() is True  # Live is done, the line still plays: the gateway clears it
    playout.played("turn-1", now=3.0)
    assert playout.talked_over() is False  # heard to the end: nothing to clear


# --- tool calls and the line action ---


def test_a_hang_up_asked_mid_turn_waits_for_the_turn_and_its_mark_echo():
    state = CallState()
    speaking(state)
    state.tools.started("t1")
    state.tools.answered("t1")
    assert state.ask(HANG_UP, "t1", now=1.0) is None  # mid-turn: the mark follows the turn
    assert state.turn_complete(now=2.0) == "turn-1"
    assert state.turn_over(now=2.0) == "hang_up-1"  # after the turn's tail and mark
    assert state.played("turn-1", now=3.0) == (1.0, None)  # the turn played: not yet the action's mark
    took, action = state.played("hang_up-1", now=3.1)
    assert took is not None and action == HANG_UP
    assert not state.tools.busy


def test_a_line_action_asked_while_the_turn_s_tail_goes_out_still_follows_the_turn():
    state = CallState()
    speaking(state)
    assert state.turn_complete(now=1.0) == "turn-1"
    # The tool answers while the Call is still sending the turn's tail and mark.
    assert state.ask(HANG_UP, "t1", now=1.0) is None
    assert state.turn_over(now=1.0) == "hang_up-1"


def test_a_line_action_asked_between_turns_is_marked_at_once():
    state = CallState()
    mark = state.ask(TRANSFER, "t1", now=5.0)
    assert mark == "transfer-0" and state.playout.marks == {"transfer-0": 5.0}
    assert state.turn_complete(now=6.0) is None
    assert state.turn_over(now=6.0) is None  # not marked twice
    assert state.played(mark, now=6.0)[1] == TRANSFER


def test_a_flushed_action_mark_does_not_hang_up_and_talking_over_withdraws_the_action():
    state = CallState()
    speaking(state)
    state.ask(HANG_UP, "t1", now=1.0)
    state.turn_complete(now=2.0)
    state.turn_over(now=2.0)
    assert state.caller_transcript("wait") is True  # talked over the goodbye while it played out
    assert state.cleared() == HANG_UP  # withdrawn: the agent may ask again
    assert state.played("hang_up-1", now=2.5) == (None, None)  # the flushed echo carries nothing out
    assert not state.tools.busy


def test_an_interruption_withdraws_the_pending_line_action():
    state = CallState()
    speaking(state)
    state.ask(HANG_UP, "t1", now=1.0)
    assert state.interrupted() == HANG_UP
    assert state.turn_complete(now=2.0) is None and state.turn_over(now=2.0) is None


def test_cancelling_the_tool_call_that_asked_withdraws_its_action_only():
    tools = ToolCalls()
    tools.started("a")
    tools.started("b")
    tools.answered("a")
    tools.ask(HANG_UP, "a", in_turn=True, turn=1)
    assert tools.cancelled(["b"]) is None and tools.action == HANG_UP and not tools.running
    assert tools.cancelled(["a"]) == HANG_UP and not tools.busy


# --- transcripts ---


def test_fragments_make_one_line_per_utterance():
    transcript = Transcript()
    for part in ("hel", "lo ", "there "):
        transcript.heard("caller", part)
    transcript.heard("agent", "hi")
    assert transcript.caller_speaking
    assert transcript.flush("caller") == [("caller", "hello there")]
    assert transcript.flush() == [("agent", "hi")]
    assert transcript.flush() == []


def test_a_replayed_utterance_is_not_logged_twice():
    transcript = Transcript()
    transcript.heard("caller", "my name is ada")
    assert transcript.flush() == [("caller", "my name is ada")]
    transcript.heard("caller", "and I")  # unfinished when the connection switches
    transcript.replaying()
    assert not transcript.caller_speaking  # its words come again, whole, from the replayed audio
    transcript.heard("caller", "my name is ada")  # the new connection transcribes the replay
    assert transcript.flush() == []
    transcript.heard("caller", "and I live in london")
    assert transcript.flush() == [("caller", "and I live in london")]


def test_an_utterance_replayed_on_two_switches_in_a_row_is_still_logged_once():
    transcript = Transcript()
    transcript.heard("caller", "hello")
    assert transcript.flush() == [("caller", "hello")]
    transcript.replaying()  # first switch: "hello" is replayed
    transcript.heard("caller", "hello")
    assert transcript.flush() == []
    transcript.replaying()  # the new connection breaks before any new handle: replayed again
    transcript.heard("caller", "hello")
    assert transcript.flush() == []


def test_a_new_handle_means_nothing_before_it_is_replayed():
    state = CallState()
    state.caller_transcript("one")
    state.transcript.flush()
    state.handle_update("h1", resumable=True, now=0.0)
    state.begin_switch()
    state.caller_transcript("two")
    assert state.transcript.flush() == [("caller", "two")]


# --- resumption: handles, held audio, replay ---


def test_audio_since_the_handle_is_replayed_then_audio_held_during_the_switch():
    res = Resumption()
    assert res.keep(b"a") and res.keep(b"b")
    res.unsent_sent(1)  # a and b went out together
    res.handle_update("h1", resumable=True, now=0.0)  # covers a and b
    assert res.keep(b"c")
    res.unsent_sent(2)
    res.begin_switch()
    assert res.switching and not res.keep(b"d")  # the caller talks during the switch
    assert res.hold(b"d")
    sent = []
    while (frame := res.next_held()) is not None:
        sent.append(frame)
    assert sent == [b"c", b"d"] and not res.switching
    assert res.keep(b"e")  # straight to the new connection again


def test_a_handle_leaves_the_frames_not_sent_yet_to_be_sent_and_replayed():
    res = Resumption()
    assert res.keep(b"a")
    res.unsent_sent(1)
    assert res.keep(b"b") and res.keep(b"c")  # a quiet: held for one message
    assert res.handle_update("h1", resumable=True, now=0.0)  # covers a, not what it never got
    assert list(res.since_handle) == [b"b", b"c"] and res.unsent_frames() == [b"b", b"c"]
    res.begin_switch()  # the replay carries them; nothing is left to send on the old connection
    assert res.unsent == 0 and list(res.held or []) == [b"b", b"c"]


def test_a_non_resumable_update_keeps_the_old_handle_and_its_audio():
    res = Resumption()
    res.handle_update("h1", resumable=True, now=0.0)
    res.keep(b"x")
    assert res.handle_update("", resumable=False, now=0.0) is False
    assert res.handle_update("h2", resumable=False, now=0.0) is False
    assert res.handle == "h1" and list(res.since_handle) == [b"x"]


def test_the_hold_is_bounded_and_counts_what_it_drops():
    res = Resumption(max_frames=3)
    res.broke()  # a send found the connection broken
    assert [res.hold(bytes([i])) for i in range(5)] == [True, True, True, False, False]
    assert res.dropped == 2 and list(res.held or []) == [b"\x02", b"\x03", b"\x04"]
    for i in range(10):
        res.keep(bytes([i]))
    assert len(res.since_handle) == 3  # the replay is bounded the same way


def test_keypresses_during_a_switch_are_held_and_told_after_it():
    res = Resumption()
    assert res.keypress("1") is True
    res.begin_switch()
    assert res.keypress("2") is False and res.keypress("3") is False
    assert res.take_keys() == ["2", "3"] and res.take_keys() == []


def test_go_away_sets_a_deadline_with_a_margin_for_the_new_setup():
    res = Resumption()
    assert res.wait(now=100.0, caller_sound_at=None) == (None, "")
    res.go_away(time_left_s=60.0, now=100.0)
    assert res.wait(now=100.0, caller_sound_at=None) == (55.0, "go_away_deadline")  # 5 s margin at most
    res.go_away(time_left_s=4.0, now=100.0)
    assert res.wait(now=100.0, caller_sound_at=None) == (3.0, "go_away_deadline")  # a quarter of it
    assert res.wait(now=200.0, caller_sound_at=None) == (0.0, "go_away_deadline")
    res.begin_switch()
    assert res.switch_by is None


def test_a_connection_silent_after_the_caller_spoke_has_stalled_whatever_the_buffers():
    res = Resumption(stall_s=8.0)
    assert res.wait(now=10.0, caller_sound_at=9.0) == (None, "")  # it has said nothing yet: not judged
    res.heard(now=10.0)
    assert res.wait(now=11.0, caller_sound_at=9.5) == (None, "")  # it spoke after the caller's sound
    assert res.wait(now=13.0, caller_sound_at=12.0) == (7.0, "stalled")  # silent since the caller spoke
    res.heard(now=14.0)
    assert res.wait(now=14.0, caller_sound_at=12.0) == (None, "")  # it answered: alive
    res.go_away(time_left_s=4.0, now=14.0)
    assert res.wait(now=15.0, caller_sound_at=14.5) == (2.0, "go_away_deadline")  # the nearer deadline
    res.begin_switch()
    assert res.wait(now=20.0, caller_sound_at=19.0) == (None, "")  # a new connection starts unjudged


def test_too_many_barren_connections_in_a_row_give_up_but_one_that_spoke_resets_the_count():
    res = Resumption(max_barren=3)
    assert res.connection_lost(heard_from_server=False) is False
    assert res.connection_lost(heard_from_server=False) is False
    assert res.connection_lost(heard_from_server=True) is False  # that one worked for a while
    assert [res.connection_lost(heard_from_server=False) for _ in range(3)] == [False, False, True]


def test_a_rejected_handle_starts_afresh():
    res = Resumption(handle="old")
    res.handle_rejected()
    assert res.handle == ""


# --- the moment between turns ---


def between_turns_state() -> CallState:
    state = CallState()
    state.handle_update("h1", resumable=True, now=0.0)
    assert state.between_turns
    return state


def test_no_moment_between_turns_without_a_handle_that_covers_the_conversation():
    state = CallState()
    assert not state.between_turns  # no handle at all
    state.handle_update("h1", resumable=True, now=0.0)
    speaking(state)
    state.turn_complete(now=1.0)
    state.turn_over(now=1.0)
    assert not state.between_turns  # the agent spoke after the handle: not covered yet
    state.handle_update("h2", resumable=True, now=0.0)
    assert state.between_turns


@pytest.mark.parametrize(
    "busy",
    ["agent speaking", "caller speaking", "tool running", "line action waiting"],
)
def test_a_go_away_switch_waits_while_either_side_is_mid_turn_or_a_tool_is_busy(busy):
    state = between_turns_state()
    state.resumption.go_away(time_left_s=30.0, now=0.0)
    assert state.switch_now()
    state = between_turns_state()
    state.resumption.go_away(time_left_s=30.0, now=0.0)
    if busy == "agent speaking":
        state.agent_transcript("let me")
        state.handle_update("h2", resumable=True, now=0.0)  # even with a handle after the transcript began
    elif busy == "caller speaking":
        state.caller_transcript("I was")
    elif busy == "tool running":
        state.tools.started("t1")
    else:
        state.ask(HANG_UP, "t1", now=0.0)
    assert not state.between_turns and not state.switch_now()


def test_begin_switch_ends_a_turn_in_progress_and_replays_the_caller():
    state = between_turns_state()
    speaking(state)
    state.caller_transcript("unfinished")
    assert state.begin_switch() is True
    assert not state.transcript.caller_speaking and state.resumption.switching
    assert not state.resumption.handle_fresh  # the new connection has to earn a handle of its own
    assert between_turns_state().begin_switch() is False


# --- outcomes ---


def test_what_a_live_failure_means_for_the_call():
    assert live_failure(LiveConfigRejected("x", 1007), opening=True) is Outcome.LIVE_CONFIG_ERROR
    assert live_failure(LiveConfigRejected("x", 1007), opening=False) is Outcome.LIVE_CONFIG_ERROR
    assert live_failure(LiveUnreachable("x"), opening=True) is Outcome.LIVE_UNAVAILABLE
    assert live_failure(LiveHandleRejected("x", 1008), opening=False) is Outcome.LIVE_LOST
    # Connections that set up and then die, the last with a POLICY_VIOLATION: Live accepted the
    # configuration every time, so the call was lost, not misconfigured (and the caller hears the apology).
    assert live_failure(LiveConnectionLost("x", 1008), opening=False) is Outcome.LIVE_LOST
    failures = (Outcome.LIVE_LOST, Outcome.LIVE_UNAVAILABLE, Outcome.LIVE_CONFIG_ERROR)
    assert all(outcome.is_failure for outcome in failures)
    assert not Outcome.CALLER_HUNG_UP.is_failure and Outcome.MOVED == "moved"


def test_a_handle_issued_on_setup_of_a_switched_connection_does_not_cover_the_replay():
    res = Resumption()
    res.handle_update("h1", resumable=True, now=0.0)  # the first connection: it covers what was said
    res.keep(b"said")  # after h1: replayed on the next connection
    res.begin_switch()
    assert res.next_held() == b"said" and res.next_held() is None
    # The new connection's first message is a handle issued on setup, before it took the replay in.
    assert res.handle_update("h2", resumable=True, now=1.0) is False
    assert res.handle == "h2" and list(res.since_handle) == [b"said"] and not res.handle_fresh
    res.heard(now=1.0)
    assert res.handle_update("h3", resumable=True, now=2.0) is True  # a later one covers it
    assert not res.since_handle and res.handle_fresh


def test_a_turn_whose_words_come_before_its_audio_keeps_them_when_cut():
    # The local backend sends a sentence's transcript before its audio: after a first turn of 3 s, the
    # second turn's words must not be stamped at 3 s (where nothing of the second turn was heard yet).
    state = CallState()
    state.agent_transcript("First answer. ")
    state.agent_audio_sent(3.0, now=0.0)
    state.turn_complete(now=1.0)
    state.turn_over(now=1.0)
    assert state.transcript.flush("agent") == []  # held until the caller has heard it
    state.played("turn-1", now=3.1)
    assert state.transcript.flush("agent") == [("agent", "First answer.")]
    state.agent_transcript("Sorry, I cannot transfer this call.")
    state.agent_audio_sent(2.0, now=10.0)
    state.barged_in(now=11.0)  # the caller heard 1 s of it
    assert state.transcript.flush("agent") == [("agent", "Sorry, I cannot transfer this call. [cut]")]


def _finished_turn(state: CallState) -> None:
    """A 4 s turn: its first sentence's words before its audio, the second's 2.5 s in; Live finishes it at
    0.5 s (it streams faster than the line plays), and the line plays it out until 4 s."""
    state.agent_transcript("Hello there. ")
    state.agent_audio_sent(2.5, now=0.0)
    state.agent_transcript("How can I help you today?")
    state.agent_audio_sent(1.5, now=0.3)
    assert state.turn_complete(now=0.5) == "turn-1"
    state.turn_over(now=0.5)
    assert state.transcript.flush() == []  # not heard yet


@pytest.mark.parametrize("clear", ["cleared", "barged_in", "interrupted"])
def test_talking_over_a_finished_reply_still_playing_cuts_its_line_where_the_caller_did(clear):
    """Live had finished the turn, the line had not: the caller heard 2 s of 4, so the second sentence was
    never said to them, whichever way the clear came (Live's transcript, the gateway's detector)."""
    state = CallState()
    _finished_turn(state)
    getattr(state, clear)(now=2.0)
    assert state.transcript.flush() == [("agent", "Hello there. [cut]")]
    state.played("turn-1", now=2.05)  # the flushed mark's echo proves nothing, and changes nothing
    assert state.transcript.flush() == []


def test_a_finished_reply_heard_to_its_end_is_one_whole_line_whenever_it_comes_out():
    state = CallState()
    _finished_turn(state)
    state.played("turn-1", now=4.1)
    assert state.transcript.flush("caller") == [("agent", "Hello there. How can I help you today?")]
    state = CallState()
    _finished_turn(state)
    state.cleared(now=4.05)  # the caller spoke after it had all played, before the mark came back
    assert state.transcript.flush() == [("agent", "Hello there. How can I help you today?")]
    state = CallState()
    _finished_turn(state)
    state.agent_transcript(" Anything else?")  # Live's transcript trails its audio: still turn 1's words
    state.live_turn_ended()
    state.agent_transcript("And another thing.")  # a second turn, queued behind the first
    state.agent_audio_sent(1.0, now=1.0)
    assert state.transcript.flush("caller") == []  # the first still plays
    state.agent_audio_sent(0.5, now=1.2)
    assert state.turn_complete(now=1.3) == "turn-2"
    state.turn_over(now=1.3)
    state.played("turn-1", now=4.0)
    state.played("turn-2", now=5.5)
    assert state.transcript.flush() == [
        ("agent", "Hello there. How can I help you today? Anything else?"),
        ("agent", "And another thing."),
    ]


def test_the_caller_talking_over_a_reply_cuts_the_turn_queued_behind_it_too():
    """Turn 2 was sent while turn 1 still played: a clear at 2 s cuts turn 1 there, and turn 2, which would
    have been heard from 4 s, was not heard at all."""
    state = CallState()
    _finished_turn(state)
    state.live_turn_ended()
    state.agent_transcript("And another thing.")
    state.agent_audio_sent(1.0, now=1.0)
    state.cleared(now=2.0)
    assert state.transcript.flush() == [("agent", "Hello there. [cut]")]


def test_a_barge_in_while_the_turn_s_tail_goes_out_cuts_the_held_line_once():
    state = CallState()
    state.agent_transcript("Hello there. ")
    state.agent_audio_sent(2.5, now=0.0)
    state.turn_complete(now=0.5)  # held; the tail and the mark are on their way (`turn_over` not yet)
    state.barged_in(now=1.0)
    assert state.transcript.flush() == [("agent", "Hello there. [cut]")]  # not a second, bare "[cut]"


def test_the_replay_goes_in_chunks_with_each_frame_s_number_and_ends_the_switch_when_empty():
    res = Resumption()
    for frame in (b"a", b"b", b"c"):
        assert res.keep(frame)
    res.unsent_sent(1)
    res.begin_switch()
    res.hold(b"d")  # said during the switch
    assert res.next_held_chunk(2) == [(b"a", 0), (b"b", 1)]
    assert res.next_held_chunk(2) == [(b"c", 2), (b"d", 3)] and res.switching
    assert res.next_held_chunk(2) == [] and not res.switching
