"""Turn-taking in the Call's story, in memory: the gateway's own barge-in, client-driven activity, the
pause told to Live, and the stall watchdog against a scripted Live that freezes after `interrupted`.

The caller's speech is real (eSpeak NG through a phone line, gateway.devtools.turn_corpus) so the real
detector hears it; nothing here waits on a clock but the watchdog's own (tiny) timeout.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.call import Call, Outcome
from gateway.call import call as call_module
from gateway.call.line import CallerAudio
from gateway.call.transcript import CUT
from gateway.call.turns import TurnRules
from gateway.devtools import turn_corpus as tc
from gateway.live import protocol as lp
from gateway.live.session import LiveConnectionLost
from tests.support.call_doubles import STARTED, MemoryLine, ScriptedConnection, ScriptedLive
from tests.support.waiting import wait_for

AGENT_24K = bytes(960)  # 20 ms of (silent) agent audio at 24 kHz
NO_DELAYS = (0.0, 0.0, 0.0)


async def until(predicate, timeout: float = 5.0) -> None:
    await wait_for(predicate, timeout=timeout, interval=0.001)


@pytest.fixture(scope="module")
def caller_speech() -> list[bytes]:
    """0.4 s of line noise, an utterance, then 1 s of line noise: 20 ms frames at 8 kHz."""
    said = tc.voice("Stop, stop, I already know that.", agent=False, level_dbfs=-22)
    noise = tc.line_noise(0.4 + said.size / tc.RATE + 1.0, seed=5)
    noise[int(0.4 * tc.RATE) : int(0.4 * tc.RATE) + said.size] += said
    return tc.frames(tc.phone_line(noise))


def start_call(line: MemoryLine, live: ScriptedLive, **kwargs) -> tuple[Call, asyncio.Task[None]]:
    kwargs.setdefault("connect_retry_delays_s", NO_DELAYS)
    config = kwargs.pop("config", lp.LiveConfig())
    call = Call(line, STARTED, live.open, config, **kwargs)
    return call, asyncio.create_task(call.run())


async def hang_up(line: MemoryLine, task: asyncio.Task[None]) -> None:
    from gateway.call.line import Ended

    line.put(Ended("stop"))
    async with asyncio.timeout(5):
        await task


def frames_sent(connection: ScriptedConnection) -> int:
    """20 ms frames of 16 kHz audio sent (in a quiet several go in one message)."""
    return sum(len(pcm) for pcm in connection.audio) // 640


def sent_kinds(connection: ScriptedConnection) -> list[str]:
    """The realtimeInput/clientContent messages the Call sent, by their field (audio is counted apart)."""
    out = []
    for message in connection.sent:
        body = json.loads(message)
        inner = body.get("realtimeInput") or {}
        out.extend(inner.keys() if inner else body.keys())
    return out


async def test_local_barge_in_clears_the_line_before_live_says_a_word(caller_speech):
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live)
    conn = await live.connection(0)
    conn.say(*[lp.AgentAudio(AGENT_24K)] * 50)  # a second of the agent's turn on its way to the line
    # All of it on the line (else what is still on its way when the caller's speech is confirmed is dropped
    # too, and the count below depends on the scheduler).
    await until(lambda: len(line.actions("play")) == 50)
    line.put(*(CallerAudio(f) for f in caller_speech))
    await until(lambda: line.actions("clear"))
    assert call.stats.barge_ins_local == 1  # Live has said nothing about it yet
    conn.say(lp.AgentAudio(AGENT_24K))  # the rest of the turn, sent before Live heard the caller: dropped
    conn.say(lp.Interrupted(), lp.TurnComplete())  # Live agrees, later: no second clear
    await until(lambda: call.stats.late_chunks_dropped == 1 and not call.state.cut_off)
    await hang_up(line, task)
    assert line.actions("clear") == [None]
    assert (call.stats.barge_ins, call.stats.barge_ins_server) == (1, 0)
    assert call.summary().barge_ins_local == 1


async def test_with_barge_in_server_only_lives_interrupted_clears_the_line(caller_speech):
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live, barge_in="server")
    conn = await live.connection(0)
    conn.say(*[lp.AgentAudio(AGENT_24K)] * 50)
    await until(lambda: len(line.actions("play")) >= 40)
    line.put(*(CallerAudio(f) for f in caller_speech))
    await until(lambda: frames_sent(conn) >= len(caller_speech) - 1)  # every frame heard and passed on
    assert line.actions("clear") == []
    conn.say(lp.Interrupted(), lp.TurnComplete())
    await until(lambda: line.actions("clear"))
    await hang_up(line, task)
    assert (call.stats.barge_ins_local, call.stats.barge_ins_server) == (0, 1)


async def test_a_cut_turn_keeps_only_what_the_caller_heard_in_the_transcript(caller_speech):
    line, live = MemoryLine(), ScriptedLive()
    lines: list[tuple[str, str]] = []
    _, task = start_call(line, live, on_transcript=lambda sid, role, text: lines.append((role, text)))
    conn = await live.connection(0)
    # The first sentence's words come with its first audio; the second's only after 20 s of audio, which
    # the caller (who talks over it at once) never hears.
    conn.say(lp.OutputTranscript("Thanks for calling. "), *[lp.AgentAudio(AGENT_24K)] * 1000)
    conn.say(lp.OutputTranscript("Your order shipped on Wednesday."), lp.AgentAudio(AGENT_24K))
    await until(lambda: len(line.actions("play")) >= 1000)
    line.put(*(CallerAudio(f) for f in caller_speech))
    await until(lambda: lines)
    assert lines == [("agent", f"Thanks for calling. {CUT}")]
    await hang_up(line, task)


async def test_local_turn_detection_marks_the_callers_speech_and_resends_its_start(caller_speech):
    line, live = MemoryLine(), ScriptedLive()
    config = lp.LiveConfig(turn_detection="local")
    assert lp.build_setup(config)["setup"]["realtimeInputConfig"]["automaticActivityDetection"] == {
        "disabled": True
    }
    call, task = start_call(line, live, config=config)
    conn = await live.connection(0)
    line.put(*(CallerAudio(f) for f in caller_speech))
    await until(lambda: "activityEnd" in sent_kinds(conn))
    assert sent_kinds(conn) == ["activityStart", "activityEnd"]  # and never audioStreamEnd
    # The frames before the onset was confirmed went again after activityStart: Live dropped the first copy.
    assert frames_sent(conn) > len(caller_speech)
    await hang_up(line, task)
    assert call.stats.barge_ins == 0  # the agent was not speaking: a turn, not a barge-in


async def test_with_local_turn_detection_the_replay_on_a_new_connection_is_an_activity(caller_speech):
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live, config=lp.LiveConfig(turn_detection="local"))
    first = await live.connection(0)
    first.say(lp.ResumptionUpdate("h1", True))
    await until(lambda: call.resumption_handle == "h1")
    line.put(*(CallerAudio(f) for f in caller_speech))
    await until(lambda: "activityEnd" in sent_kinds(first))
    first.lose(LiveConnectionLost("gone", 1011))  # before Live answered: the new one must hear it all
    second = await live.connection(1)
    await until(lambda: "activityEnd" in sent_kinds(second))
    assert sent_kinds(second) == ["activityStart", "activityEnd"]
    assert frames_sent(second) == len(caller_speech)  # the whole utterance, inside the activity
    await hang_up(line, task)


@pytest.mark.parametrize("turn_detection, expected", [("server", ["audioStreamEnd"]), ("local", [])])
async def test_a_pause_in_the_callers_audio_is_told_to_live_only_with_its_own_detection(
    monkeypatch, turn_detection, expected
):
    monkeypatch.setattr(call_module, "AUDIO_PAUSE_S", 0.01)
    line, live = MemoryLine(), ScriptedLive()
    _, task = start_call(line, live, config=lp.LiveConfig(turn_detection=turn_detection))
    conn = await live.connection(0)
    line.put(*[CallerAudio(b"\x00\x40" * 160)] * 2)  # a sound: sent at once, two frames to a message
    await until(lambda: conn.audio)
    if expected:
        await until(lambda: sent_kinds(conn) == expected)
    else:
        await asyncio.sleep(0.05)  # the line says nothing for five times the pause
        assert sent_kinds(conn) == expected
    await hang_up(line, task)


def frozen_after_interruption(conn: ScriptedConnection) -> None:
    """What users report: the model is interrupted, then never says another word (the socket stays up)."""
    conn.say(lp.ResumptionUpdate("h1", True))
    conn.say(*[lp.AgentAudio(AGENT_24K)] * 50)


async def test_the_stall_watchdog_nudges_then_switches_then_apologises_and_hangs_up(caller_speech):
    line, live = MemoryLine(), ScriptedLive()
    failed: list[Call] = []

    async def on_failure(call: Call) -> None:
        failed.append(call)

    call, task = start_call(line, live, turns=TurnRules(stall_timeout_s=0.05), on_failure=on_failure)
    first = await live.connection(0)
    frozen_after_interruption(first)
    await until(lambda: len(line.actions("play")) >= 40)
    line.put(*(CallerAudio(f) for f in caller_speech))
    await until(lambda: line.actions("clear"))
    first.say(lp.Interrupted(), lp.TurnComplete())  # ... and then nothing, ever
    await until(lambda: any(call_module.STALL_NUDGE[:40] in m for m in first.sent))
    second = await live.connection(1)  # the nudge went unanswered: a new connection, resumed
    assert second.handle == "h1" and first.aborted
    await until(lambda: any(call_module.STALL_NUDGE[:40] in m for m in second.sent))  # asked there too
    async with asyncio.timeout(5):
        await task  # unanswered there as well: the apology, then the line closes
    assert call.stats.outcome is Outcome.LIVE_LOST and failed == [call] and line.closed == ""
    summary = call.summary()
    assert (summary.stalls, summary.stall_recoveries) == (1, 0)


async def test_an_agent_that_answers_the_nudge_is_a_recovery(caller_speech):
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live, turns=TurnRules(stall_timeout_s=0.05))
    conn = await live.connection(0)
    sent = conn.send

    async def answering_the_nudge(message: str) -> None:  # at once: before the next step can be due
        await sent(message)
        if call_module.STALL_NUDGE in message:
            conn.say(lp.AgentAudio(AGENT_24K), lp.TurnComplete())

    conn.send = answering_the_nudge  # type: ignore[method-assign]
    line.put(*(CallerAudio(f) for f in caller_speech))
    await until(lambda: line.actions("mark"))
    await hang_up(line, task)
    assert (call.summary().stalls, call.summary().stall_recoveries) == (1, 1)
    assert len(live.connections) == 1 and call.stats.outcome is Outcome.CALLER_HUNG_UP


async def test_a_running_tool_holds_the_watchdog(caller_speech):
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live, turns=TurnRules(stall_timeout_s=0.05))
    conn = await live.connection(0)
    call.state.tools.started("slow-tool")  # the model waits for a tool's answer: not a stall
    line.put(*(CallerAudio(f) for f in caller_speech))
    await until(lambda: frames_sent(conn) >= len(caller_speech) - 1)
    await asyncio.sleep(0.2)  # four timeouts' worth
    assert not any(call_module.STALL_NUDGE[:40] in m for m in conn.sent)
    await hang_up(line, task)
