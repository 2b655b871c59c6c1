"""An outbound call's story in memory: the agent is held back until it is known who answered, then it goes
on (a person), hangs up (a machine), or leaves its message and hangs up once it has been heard."""

from __future__ import annotations

import asyncio
import json

from gateway.call import Call, OutboundRole, Outcome
from gateway.call.line import CallerAudio, Ended, Played
from gateway.live import protocol as lp
from gateway.outbound.variables import speak
from tests.support.call_doubles import STARTED, MemoryLine, ScriptedLive
from tests.support.waiting import wait_for

AGENT_24K = bytes(960)
LOUD_8K = b"\x00\x40" * 160
MESSAGE = "Hi Ada, this is Acme: your appointment is on Friday."


async def until(predicate, timeout: float = 2.0) -> None:
    await wait_for(predicate, timeout=timeout, interval=0.001)


def said(conn) -> list[str]:
    """The texts the Call asked the agent to speak (client turns)."""
    return [json.loads(m)["clientContent"]["turns"][0]["parts"][0]["text"] for m in conn.sent]


def outbound_call(line: MemoryLine, live: ScriptedLive, **role) -> tuple[Call, asyncio.Task[None]]:
    role.setdefault("voicemail", MESSAGE)
    call = Call(line, STARTED, live.open, lp.LiveConfig(), outbound=OutboundRole(**role))
    return call, asyncio.create_task(call.run())


async def test_what_the_agent_says_before_a_person_is_known_reaches_the_line_then_in_order():
    line, live = MemoryLine(), ScriptedLive()
    call, task = outbound_call(line, live, opening="Hello Ada", machine="leave_message")
    conn = await live.connection(0)
    voicemail = await live.connection(1)  # opened while the detector listens, in case it is a machine
    line.put(*[CallerAudio(LOUD_8K)] * 2)  # "hello?" (two frames: one message)
    await until(lambda: conn.audio)
    conn.say(lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    await asyncio.sleep(0.01)
    assert line.sent == [] and conn.sent == []  # nobody is known to be listening: nothing said, no greeting
    call.answered_by("human", 1800)
    await until(lambda: line.actions("mark"))
    assert [kind for kind, _ in line.sent][-1] == "mark" and line.actions("play")
    assert conn.sent == []  # the callee spoke and the agent answered: no opening asked for
    await until(lambda: voicemail.closed)
    assert voicemail.sent == []  # a person: the voicemail's connection is closed unused
    line.put(Ended("stop"))
    await task
    assert call.stats.outcome is Outcome.CALLEE_HUNG_UP  # the person called hung up, not a caller
    summary = call.summary()
    assert (summary.direction, summary.answered_by, summary.amd_duration_ms) == ("outbound", "human", 1800)
    assert summary.amd_wait_ms is not None and summary.machine_action == ""


async def test_a_machine_hears_the_message_after_the_beep_and_the_call_hangs_up_once_it_has_played():
    line, live = MemoryLine(), ScriptedLive()
    call, task = outbound_call(line, live, machine="leave_message")
    conn = await live.connection(0)
    conn.say(lp.AgentAudio(AGENT_24K))  # the agent answers the greeting: held, then dropped
    await asyncio.sleep(0.01)
    call.answered_by("machine_end_beep", 5200)
    message = await live.connection(1)  # a session of its own, which heard neither greeting nor beep
    await until(lambda: message.sent)
    assert said(message) == [speak(MESSAGE)] and said(conn) == []
    line.put(*[CallerAudio(LOUD_8K)] * 2)  # the machine records: nothing of it goes to Live any more
    message.say(lp.AgentAudio(AGENT_24K), lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    await until(lambda: len(line.actions("mark")) == 2)
    assert line.actions("mark") == ["turn-1", "hang_up-1"] and line.closed is None
    # While the message plays, the call's session catches up with the greeting it heard: its transcript
    # would look like the callee talking over the message, its answer would be recorded. Both dropped.
    late = (
        lp.InputTranscript("after the tone"),
        lp.Interrupted(),
        lp.AgentAudio(AGENT_24K),
        lp.TurnComplete(),
    )
    conn.say(*late)
    await asyncio.sleep(0.02)
    assert "clear" not in [kind for kind, _ in line.sent] and len(line.actions("play")) >= 2
    assert len(conn.audio) == 0 and message.closed
    line.put(Played("turn-1"), Played("hang_up-1"))  # the message has been heard whole
    await asyncio.wait_for(task, 2)
    assert call.stats.outcome is Outcome.AGENT_HUNG_UP and line.closed == ""
    assert (call.summary().answered_by, call.summary().machine_action) == ("machine_end_beep", "message_left")


async def test_a_machine_is_hung_up_on_at_once_with_hang_up_and_a_silent_person_is_greeted_in_time():
    line, live = MemoryLine(), ScriptedLive()
    call, task = outbound_call(line, live, machine="hang_up")
    await live.connection(0)
    call.answered_by("machine_end_silence")
    await asyncio.wait_for(task, 2)
    assert call.stats.outcome is Outcome.AGENT_HUNG_UP and line.closed == "" and line.actions("play") == []
    assert call.summary().machine_action == "hung_up"

    line, live = MemoryLine(), ScriptedLive()
    call, task = outbound_call(line, live, opening="Hello Ada", wait_s=0.05)  # no AMD result ever comes
    conn = await live.connection(0)
    await until(lambda: conn.sent)
    assert said(conn) == [speak("Hello Ada")]
    line.put(Ended("stop"))
    await task
    assert call.summary().answered_by == "timeout"
