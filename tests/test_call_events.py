"""A call's events (gateway.call.events): the pure recorder with times passed in, then the `Call` feeding it
in memory (the story test doubles of tests/test_call.py)."""

from __future__ import annotations

import asyncio

from gateway.call import Call, Outcome
from gateway.call.events import MAX_EVENTS, CallEvents
from gateway.call.line import CallerAudio, Keypress, Played
from gateway.live import protocol as lp
from tests.support.call_doubles import STARTED, MemoryLine, ScriptedLive
from tests.support.waiting import wait_for

FRAME = 0.02


def kinds(events: CallEvents, now: float = 100.0) -> list[tuple[float, str]]:
    return [(round(e.t, 3), e.kind) for e in events.finish(now)]


def speak(events: CallEvents, start: float, end: float) -> None:
    """The caller speaks from `start` to `end`, then is quiet for a second, frame by frame."""
    t = start
    while t < end + 1.0 - 1e-9:
        events.caller_frame(t, t < end - 1e-9, t < end - 1e-9)
        t += FRAME


def test_the_caller_s_speech_ends_after_a_pause_and_the_answer_s_latency_is_measured_from_there() -> None:
    events = CallEvents(origin=10.0)
    speak(events, 11.0, 12.0)  # speaks 1.0 to 2.0 after the call's start
    events.agent_audio(12.7, 0.5, turn=1, first=True)
    events.agent_audio(12.72, 1.0, turn=1, first=False)
    events.agent_played("turn-1", 14.2)
    out = events.finish(20.0)
    assert [(round(e.t, 2), e.kind) for e in out] == [
        (1.0, "caller_start"),
        (2.0, "caller_end"),
        (2.7, "agent_start"),
        (2.7, "response"),
        (4.2, "agent_end"),
    ]
    assert out[3].data == {"turn": 1, "latency_ms": 700}


def test_a_turn_sent_while_the_one_before_plays_out_is_heard_after_it() -> None:
    events = CallEvents(origin=0.0)
    events.agent_audio(1.0, 2.0, turn=1, first=True)  # two seconds of audio, sent at once
    events.agent_audio(1.5, 1.0, turn=2, first=True)  # the next turn arrives while the first plays
    events.agent_played("turn-1", 3.0)  # too late to matter: turn 1 was closed at its audio's end
    events.agent_played("turn-2", 4.0)
    heard = [(1.0, "agent_start"), (3.0, "agent_end"), (3.0, "agent_start"), (4.0, "agent_end")]
    assert kinds(events) == heard


def test_a_barge_in_cuts_the_agent_where_the_caller_heard_it_stop() -> None:
    events = CallEvents(origin=0.0)
    events.agent_audio(1.0, 3.0, turn=1, first=True)
    speak(events, 2.0, 2.5)
    events.barge_in(2.2, "local")
    assert kinds(events) == [
        (1.0, "agent_start"), (2.0, "caller_start"), (2.2, "agent_end"), (2.2, "barge_in"),
        (2.5, "caller_end"),
    ]  # fmt: skip
    # A clear after the audio ran out ends the turn where its audio ended, not later.
    late = CallEvents(origin=0.0)
    late.agent_audio(1.0, 0.5, turn=1, first=True)
    late.agent_cut(4.0)
    assert kinds(late)[-1] == (1.5, "agent_end")


def test_an_unfinished_turn_ends_with_its_audio_and_a_caller_still_speaking_at_the_end() -> None:
    events = CallEvents(origin=0.0)
    events.agent_audio(1.0, 2.0, turn=1, first=True)
    events.caller_frame(5.0, True, True)
    assert kinds(events, now=5.5) == [(1.0, "agent_start"), (3.0, "agent_end"), (5.0, "caller_start"),
                                      (5.02, "caller_end")]  # fmt: skip


def test_marks_that_are_not_the_turn_s_do_not_end_it() -> None:
    events = CallEvents(origin=0.0)
    events.agent_audio(1.0, 5.0, turn=2, first=True)
    events.agent_played("hang_up-1", 1.5)
    events.agent_played("turn-1", 1.6)
    assert kinds(events, now=3.0) == [(1.0, "agent_start"), (3.0, "agent_end")]


def test_the_caller_s_speech_ends_with_its_last_voiced_frame_not_the_detector_s_hangover() -> None:
    events = CallEvents(origin=0.0)
    for i in range(25):  # voiced for 0.5 s, then the detector holds on for 0.5 s of quiet
        events.caller_frame(1.0 + i * FRAME, True, True)
    for i in range(25):
        events.caller_frame(1.5 + i * FRAME, True, False)
    for i in range(30):
        events.caller_frame(2.0 + i * FRAME, False, False)
    events.agent_audio(2.7, 1.0, turn=1, first=True)
    out = events.finish(5.0)
    assert [(round(e.t, 2), e.kind) for e in out][:2] == [(1.0, "caller_start"), (1.5, "caller_end")]
    assert out[3].data["latency_ms"] == 1200


def test_events_are_bounded() -> None:
    events = CallEvents(origin=0.0)
    for i in range(MAX_EVENTS + 5):
        events.dtmf(float(i), "1")
    assert len(events.events) == MAX_EVENTS and events.dropped == 5


# --- the Call feeds it ----------------------------------------------------------------------------------

AGENT_24K = bytes(960)
LOUD_8K = b"\x00\x40" * 160


async def until(predicate, timeout: float = 2.0) -> None:
    await wait_for(predicate, timeout=timeout, interval=0.001)


async def test_the_call_records_its_turns_barge_ins_keys_and_switches() -> None:
    line, live = MemoryLine(), ScriptedLive()
    call = Call(line, STARTED, live.open, lp.LiveConfig(), connect_retry_delays_s=(0.0,))
    task = asyncio.create_task(call.run())
    conn = await live.connection(0)
    conn.say(lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    await until(lambda: line.actions("mark") == ["turn-1"])
    line.put(Played("turn-1"), Keypress("5"))
    await until(lambda: call.stats.dtmf == "5")
    conn.say(lp.AgentAudio(AGENT_24K), lp.Interrupted())
    await until(lambda: call.stats.barge_ins == 1)
    conn.say(lp.ResumptionUpdate("h1", True))
    await until(lambda: call.resumption_handle == "h1")
    conn.say(lp.GoAway(0.0))
    await live.connection(1)
    await until(lambda: len(call.stats.switches) == 1)
    call.hang_up_by_operator()
    async with asyncio.timeout(2):
        await task
    assert call.stats.outcome is Outcome.OPERATOR_HUNG_UP
    summary = call.summary()
    assert [e.kind for e in summary.events] == [
        "agent_start", "agent_end", "dtmf", "agent_start", "agent_end", "barge_in", "switch",
        "operator_hang_up",
    ]  # fmt: skip
    by_kind = {e.kind: e for e in summary.events}
    assert by_kind["barge_in"].data == {"source": "server"} and by_kind["dtmf"].data == {"digit": "5"}
    assert by_kind["switch"].data["reason"].startswith("go_away")
    times = [e.t for e in summary.events]
    assert times == sorted(times) and times[0] >= 0


async def test_the_caller_s_speech_is_recorded_from_the_line() -> None:
    loud_frames = 10
    line, live = MemoryLine(), ScriptedLive()
    call = Call(line, STARTED, live.open, lp.LiveConfig(), connect_retry_delays_s=(0.0,), barge_in="server")
    task = asyncio.create_task(call.run())
    conn = await live.connection(0)
    line.put(*[CallerAudio(LOUD_8K)] * loud_frames)
    await until(lambda: call.stats.frames_in == loud_frames and not call.state.resumption.unsent)  # all sent
    await asyncio.sleep(0.55)  # then a pause long enough to end the caller's speech (CALLER_END_GAP_S)
    line.put(CallerAudio(bytes(320)))
    await until(lambda: any(e.kind == "caller_end" for e in call.events.events))
    conn.say(lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    await until(lambda: line.actions("mark") == ["turn-1"])
    line.put(Played("turn-1"))
    await until(lambda: any(e.kind == "agent_end" for e in call.events.events))
    call.hang_up_by_operator()
    async with asyncio.timeout(2):
        await task
    events = call.summary().events
    assert [e.kind for e in events][:4] == ["caller_start", "caller_end", "agent_start", "response"]
    response = next(e for e in events if e.kind == "response")
    assert response.data["latency_ms"] >= 0


async def test_a_tool_call_and_the_hang_up_it_asks_for_are_recorded() -> None:
    from tests.test_call import agent_with_tools, tool_call

    line, live = MemoryLine(), ScriptedLive()
    call = Call(line, STARTED, live.open, lp.LiveConfig(), connect_retry_delays_s=(0.0,),
                prepare=agent_with_tools())  # fmt: skip
    task = asyncio.create_task(call.run())
    conn = await live.connection(0)
    conn.say(lp.AgentAudio(AGENT_24K), tool_call("end_call"), lp.TurnComplete())
    await until(lambda: line.actions("mark") == ["turn-1", "hang_up-1"])
    line.put(Played("turn-1"), Played("hang_up-1"))
    async with asyncio.timeout(2):
        await task
    events = call.summary().events
    assert [e.kind for e in events] == ["agent_start", "tool_call", "agent_end", "hang_up"]
    assert events[1].data == {"name": "end_call"}
