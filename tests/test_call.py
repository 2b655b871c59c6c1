"""The Call's story driven in memory: a scripted line and scripted Live connections, no sockets, no pacing.

What the pure state decides (tests/test_call_state.py), the Call must carry out in the right order on the
right peer: these tests check that wiring in milliseconds. The end-to-end tests check it over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import time

from gateway.agents import Agent
from gateway.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from gateway.call import Call, CallAgent, CallLimits, Outcome
from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio, Played, Started
from gateway.live import protocol as lp
from gateway.live.session import LiveConfigRejected, LiveConnectionLost, LiveHandleRejected
from gateway.tools import Toolbox
from tests.support.call_doubles import STARTED, MemoryLine, ScriptedConnection, ScriptedLive
from tests.support.waiting import wait_for

FRAME_8K = bytes(320)  # 20 ms of caller silence at 8 kHz
LOUD_8K = b"\x00\x40" * 160  # 20 ms of a loud caller
AGENT_24K = bytes(960)  # 20 ms of agent audio at 24 kHz
NO_DELAYS = (0.0, 0.0, 0.0)


async def until(predicate, timeout: float = 2.0) -> None:
    await wait_for(predicate, timeout=timeout, interval=0.001)


# Every frame in a message of its own (LIVE_SPEECH_CHUNK_MS=20): the counts below are the frames'.
EVERY_FRAME = CallLimits(speech_chunk_ms=20)


def start_call(line: MemoryLine, live: ScriptedLive, **kwargs) -> tuple[Call, asyncio.Task[None]]:
    kwargs.setdefault("connect_retry_delays_s", NO_DELAYS)
    call = Call(line, STARTED, live.open, lp.LiveConfig(), **kwargs)
    return call, asyncio.create_task(call.run())


async def hang_up(line: MemoryLine, task: asyncio.Task[None]) -> None:
    line.put(Ended("stop"))
    async with asyncio.timeout(2):
        await task


def audio_sent(connection: ScriptedConnection) -> int:
    return sum(len(pcm) for pcm in connection.audio)


async def test_audio_crosses_both_ways_resampled_only_where_the_line_needs_it():
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live, greeting="Say hello.")
    first = await live.connection(0)
    await until(lambda: first.sent)
    assert "Say hello." in first.sent[0]  # the greeting goes first
    line.put(*[CallerAudio(FRAME_8K)] * 5)
    await until(lambda: audio_sent(first) >= 5 * 640 - 64)  # 8k -> 16k: twice the bytes (less the delay)
    first.say(lp.AgentAudio(AGENT_24K), lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    await until(lambda: line.actions("mark") == ["turn-1"])
    # 24k -> 8k: a third of the samples, and the resampler's held-back tail flushed before the mark.
    assert [kind for kind, _ in line.sent] == ["play", "play", "play", "mark"]
    assert 2 * 320 < sum(len(pcm) for pcm in line.actions("play")) < 2 * 320 + 64
    await hang_up(line, task)
    assert call.stats.outcome is Outcome.CALLER_HUNG_UP and first.closed and line.closed == ""

    wide_line, wide_live = MemoryLine(LineAudio(16000, 24000)), ScriptedLive()
    call, task = start_call(wide_line, wide_live)
    wide = await wide_live.connection(0)
    wide_line.put(CallerAudio(bytes(640)))
    await until(lambda: wide.audio)
    assert wide.audio == [bytes(640)]  # a wideband line: no resampler either way
    wide.say(lp.AgentAudio(AGENT_24K))
    await until(lambda: wide_line.actions("play"))
    assert wide_line.actions("play") == [AGENT_24K]
    await hang_up(wide_line, task)


async def test_barge_in_clears_the_line_and_drops_the_rest_of_the_interrupted_turn():
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live)
    conn = await live.connection(0)
    conn.say(lp.AgentAudio(AGENT_24K), lp.Interrupted(), lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    await until(lambda: call.stats.late_chunks_dropped == 1)
    assert [kind for kind, _ in line.sent] == ["play", "clear"]  # no mark: nothing of it is left to play
    conn.say(lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    await until(lambda: line.actions("mark") == ["turn-2"])
    await hang_up(line, task)
    assert call.stats.barge_ins == 1


async def test_a_broken_connection_is_resumed_from_the_handle_and_the_caller_audio_since_is_replayed():
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live, limits=EVERY_FRAME)
    first = await live.connection(0)
    line.put(CallerAudio(LOUD_8K))
    await until(lambda: first.audio)
    first.say(lp.ResumptionUpdate("h1", True))
    await until(lambda: call.resumption_handle == "h1")
    frames = [bytes([i]) * 320 for i in range(1, 4)]  # after the handle: the new connection needs them
    line.put(*(CallerAudio(f) for f in frames))
    await until(lambda: len(first.audio) == 4)
    first.lose(LiveConnectionLost("gone", 1011))
    line.put(CallerAudio(bytes([9]) * 320), Keypress("5"))  # during the switch: held, then sent
    second = await live.connection(1)
    assert second.handle == "h1"
    await until(lambda: audio_sent(second) == 4 * 640 and second.sent)  # the replay, then the held frame
    assert "5 key" in second.sent[0]
    await hang_up(line, task)
    assert len(call.stats.switches) == 1 and call.stats.outcome is Outcome.CALLER_HUNG_UP


async def test_a_replayed_utterance_is_logged_once(capsys):
    line, live = MemoryLine(), ScriptedLive()
    heard: list[tuple[str, str]] = []
    _, task = start_call(line, live, on_transcript=lambda sid, role, text: heard.append((role, text)))
    first = await live.connection(0)
    first.say(lp.ResumptionUpdate("h1", True), lp.InputTranscript("book a table"))
    first.say(lp.AgentAudio(AGENT_24K), lp.TurnComplete())  # the agent answers: the caller's line is logged
    await until(lambda: ("caller", "book a table") in heard)
    first.lose(LiveConnectionLost("gone", 1006))
    second = await live.connection(1)
    # The audio since the handle is replayed and transcribed again; then the caller goes on.
    second.say(lp.InputTranscript("book a table"), lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    second.say(lp.InputTranscript("for two"), lp.AgentAudio(AGENT_24K), lp.TurnComplete())
    await until(lambda: ("caller", "for two") in heard)
    await hang_up(line, task)
    assert [text for role, text in heard if role == "caller"] == ["book a table", "for two"]


async def test_connections_that_set_up_and_die_at_once_end_the_call_as_lost_with_an_apology():
    line, live = MemoryLine(), ScriptedLive()
    apologised: list[Outcome] = []

    async def apologise(call: Call) -> None:
        apologised.append(call.stats.outcome)

    call, task = start_call(line, live, on_failure=apologise)
    first = await live.connection(0)
    first.say(lp.ResumptionUpdate("h1", True))  # the first one worked for a while
    first.lose(LiveConnectionLost("policy", 1008))
    for index in (1, 2, 3):  # then three in a row die before the server says a word
        (await live.connection(index)).lose(LiveConnectionLost("policy", 1008, "policy"))
    async with asyncio.timeout(2):
        await task
    assert call.stats.outcome is Outcome.LIVE_LOST and apologised == [Outcome.LIVE_LOST]
    assert line.closed == ""


async def test_a_rejected_handle_goes_on_in_a_fresh_session_and_a_rejected_config_is_not_retried():
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live)
    first = await live.connection(0)
    first.say(lp.ResumptionUpdate("h1", True))
    await until(lambda: call.resumption_handle == "h1")
    live.refusals = [LiveHandleRejected("expired", 1008)]
    first.lose(LiveConnectionLost("gone", 1011))
    second = await live.connection(1)
    assert second.handle is None and call.resumption_handle == ""
    await hang_up(line, task)

    line, live = MemoryLine(), ScriptedLive()
    live.refusals = [LiveConfigRejected("bad voice", 1007)]
    call, task = start_call(line, live)
    async with asyncio.timeout(2):
        await task
    assert call.stats.outcome is Outcome.LIVE_CONFIG_ERROR and live.connections == []


def agent_with_tools():
    agent = Agent(
        "test", lp.LiveConfig(), "", tools=("end_call", "transfer_call"), transfer_targets=("+1555",)
    )

    async def prepare(start: Started, take_prewarmed: bool) -> CallAgent:
        return CallAgent(agent, Toolbox(can_transfer=True))

    return prepare


def tool_call(name: str, **args: str) -> lp.ToolCall:
    return lp.ToolCall((lp.FunctionCall("t-" + name, name, dict(args)),))


async def test_end_call_hangs_up_once_the_goodbye_has_played_not_when_a_clear_flushed_it():
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live, prepare=agent_with_tools())
    conn = await live.connection(0)
    conn.say(lp.AgentAudio(AGENT_24K), tool_call("end_call"), lp.TurnComplete())
    await until(lambda: line.actions("mark") == ["turn-1", "hang_up-1"])
    response = json.loads(conn.sent[-1])["toolResponse"]["functionResponses"][0]
    assert response["name"] == "end_call"
    line.put(Played("turn-1"))
    await asyncio.sleep(0.01)
    assert not task.done()  # the goodbye's turn played, but the hang-up waits for its own mark
    line.put(Played("hang_up-1"))
    async with asyncio.timeout(2):
        await task
    assert call.stats.outcome is Outcome.AGENT_HUNG_UP and line.closed == ""


async def test_a_hang_up_decided_while_the_turn_s_tail_is_sent_still_follows_the_whole_turn():
    line, live = MemoryLine(send_delay_s=0.005), ScriptedLive()  # every send yields, as under backpressure
    call, task = start_call(line, live, prepare=agent_with_tools())
    conn = await live.connection(0)
    conn.say(lp.AgentAudio(AGENT_24K), tool_call("end_call"), lp.TurnComplete())
    await until(lambda: len(line.actions("mark")) == 2)
    kinds = [kind if kind != "mark" else value for kind, value in line.sent]
    assert kinds == [
        "play",
        "play",
        "turn-1",
        "hang_up-1",
    ]  # the tail, then the turn's mark, then the action's
    line.put(Played("turn-1"), Played("hang_up-1"))
    async with asyncio.timeout(2):
        await task
    assert call.stats.outcome is Outcome.AGENT_HUNG_UP


async def test_a_failed_transfer_is_told_to_the_agent_and_the_call_goes_on():
    line, live = MemoryLine(echo_marks=True), ScriptedLive()
    line.transfer_error = RuntimeError("Twilio said no")
    call, task = start_call(line, live, prepare=agent_with_tools())
    conn = await live.connection(0)
    conn.say(tool_call("transfer_call", target="+1555"))
    await until(lambda: any("transfer to +1555 failed" in m for m in conn.sent))
    assert line.actions("transfer") == ["+1555"] and not task.done()
    await hang_up(line, task)
    assert call.stats.outcome is Outcome.CALLER_HUNG_UP


async def test_a_go_away_switch_waits_for_a_running_tool_then_resumes():
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live, prepare=agent_with_tools())
    conn = await live.connection(0)
    call.state.tools.started("slow")  # a tool the model is still waiting on
    conn.say(lp.ResumptionUpdate("h1", True), lp.GoAway(60.0))
    await until(lambda: call.state.resumption.switch_by is not None)
    conn.say(lp.Usage())  # any message: the relay looks for a moment between turns again
    await asyncio.sleep(0.01)
    assert len(live.connections) == 1  # not while the tool runs
    call.state.tools.answered("slow")
    conn.say(lp.Usage())
    second = await live.connection(1)
    assert second.handle == "h1" and conn.closed
    await hang_up(line, task)
    assert call.stats.outcome is Outcome.CALLER_HUNG_UP


async def test_a_connection_that_goes_silent_after_the_caller_spoke_is_given_up_and_resumed():
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live, limits=CallLimits(live_stall_s=0.3))
    first = await live.connection(0)
    first.say(lp.ResumptionUpdate("h1", True))  # it has spoken: from now on its silence means something
    await until(lambda: call.resumption_handle == "h1")
    line.put(CallerAudio(LOUD_8K))  # the caller speaks; Live stops reading and never answers
    second = await live.connection(1)
    assert first.aborted and second.handle == "h1"
    assert call.stats.switches and call.stats.outcome is Outcome.UNKNOWN  # the call goes on
    await hang_up(line, task)


async def test_a_live_endpoint_that_never_answers_ends_in_the_apology_within_the_setup_budget():
    line, live = MemoryLine(), ScriptedLive()
    live.hanging = True
    apologised: list[float] = []

    async def apologise(call: Call) -> None:
        apologised.append(time.monotonic())

    began = time.monotonic()
    call, task = start_call(line, live, on_failure=apologise, limits=CallLimits(live_setup_s=0.3))
    async with asyncio.timeout(2):
        await task
    assert call.stats.outcome is Outcome.LIVE_UNAVAILABLE
    assert len(apologised) == 1 and apologised[0] - began < 0.3 + 0.2  # one budget, not two timeouts


async def test_a_call_the_drain_moved_ends_as_moved_and_one_it_could_not_move_hears_the_apology():
    line, live = MemoryLine(), ScriptedLive()
    call, task = start_call(line, live)
    await live.connection(0)
    call.moved()  # the drain redirected it: Twilio ends this instance's stream
    await hang_up(line, task)
    assert call.stats.outcome is Outcome.MOVED

    line, live = MemoryLine(), ScriptedLive()
    apologised: list[Outcome] = []

    async def apologise(call: Call) -> None:
        apologised.append(call.stats.outcome)

    call, task = start_call(line, live, on_failure=apologise)
    await live.connection(0)
    call.end_unmoved()
    async with asyncio.timeout(2):
        await task
    assert call.stats.outcome is Outcome.NOT_MOVED and apologised == [Outcome.NOT_MOVED]
    assert line.closed == ""


async def test_a_mu_law_line_s_audio_is_kept_for_replay_as_mu_law_and_replayed_as_it_came():
    line, live = MemoryLine(LineAudio(8000, 8000, mulaw=True)), ScriptedLive()
    call, task = start_call(line, live, limits=EVERY_FRAME)
    first = await live.connection(0)
    first.say(lp.ResumptionUpdate("h1", True))
    await until(lambda: call.resumption_handle == "h1")
    said = [ulaw_to_pcm16(bytes([code]) * 160) for code in (0x10, 0x20, 0x30)]  # loud: sent one by one
    line.put(*(CallerAudio(pcm) for pcm in said))
    await until(lambda: len(first.audio) == 3)
    assert list(call.state.resumption.since_handle) == [pcm16_to_ulaw(pcm) for pcm in said]  # half the bytes
    first.lose(LiveConnectionLost("gone", 1011))
    second = await live.connection(1)
    await until(lambda: audio_sent(second) == 3 * 640)
    # Replayed exactly as it came: the same PCM through the call's resampler, whose history carries on.
    again = Resampler(8000, 16000)
    assert b"".join(second.audio) == b"".join([again.process(pcm) for pcm in said * 2][3:])
    await hang_up(line, task)
