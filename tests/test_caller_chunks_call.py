"""The Call with chunks: frames held in a quiet, a key, a failed send and a switch, each frame once; speech
two frames to a message, and a turn's end after its last frame.

A wideband line (16 kHz in, Live's own rate) so what Live gets is the line's frames themselves, each made
recognisable and quiet (peak under `QUIET_PEAK`): they go five to a message; loud ones go two to a message.
"""

from __future__ import annotations

import asyncio
import dataclasses

from gateway.call import Call, CallLimits
from gateway.call import call as call_module
from gateway.call.line import CallerAudio, Ended, Keypress, LineAudio
from gateway.call.resumption import Resumption
from gateway.call.turns import Heard
from gateway.live import protocol as lp
from gateway.live.session import LiveConnectionLost
from tests.support.call_doubles import STARTED, MemoryLine, ScriptedConnection, ScriptedLive
from tests.support.waiting import wait_for

QUIET = [bytes(638) + bytes([i, 0]) for i in range(1, 40)]  # 20 ms at 16 kHz, distinct, all but silent
LOUD = b"\x00\x40" * 320
NO_DELAYS = (0.0, 0.0, 0.0)


async def until(predicate, timeout: float = 2.0) -> None:
    await wait_for(predicate, timeout=timeout, interval=0.001)


def start(
    live: ScriptedLive, config: lp.LiveConfig | None = None, **kwargs
) -> tuple[MemoryLine, Call, asyncio.Task[None]]:
    line = MemoryLine(LineAudio(16000, 24000))
    call = Call(
        line, STARTED, live.open, config or lp.LiveConfig(), connect_retry_delays_s=NO_DELAYS, **kwargs
    )
    return line, call, asyncio.create_task(call.run())


async def end(line: MemoryLine, task: asyncio.Task[None]) -> None:
    line.put(Ended("stop"))
    async with asyncio.timeout(2):
        await task


async def test_a_key_goes_after_the_quiet_said_before_it():
    live = ScriptedLive()
    line, _, task = start(live)
    conn = await live.connection(0)
    line.put(*(CallerAudio(f) for f in QUIET[:3]), Keypress("5"), *(CallerAudio(f) for f in QUIET[3:5]))
    await end(line, task)  # the last two go at the end of the call
    assert [kind for kind, _ in conn.indices] == ["audio", "message", "audio"]
    assert conn.audio == [b"".join(QUIET[:3]), b"".join(QUIET[3:5])]


async def test_a_switch_replays_the_sent_and_the_unsent_frames_once_each():
    live = ScriptedLive()
    line, call, task = start(live)
    first = await live.connection(0)
    line.put(*(CallerAudio(f) for f in QUIET[:7]))  # five go in one message, two wait
    await until(lambda: len(first.audio) == 1 and call.state.resumption.unsent == 2)
    first.say(lp.ResumptionUpdate("h1", True))  # covers the five sent, not the two
    await until(lambda: call.resumption_handle == "h1")
    first.lose(LiveConnectionLost("gone", 1011))
    line.put(*(CallerAudio(f) for f in QUIET[7:9]))
    second = await live.connection(1)
    await until(lambda: b"".join(second.audio) == b"".join(QUIET[5:9]))
    await end(line, task)


async def test_transparent_resumption_replays_exactly_what_follows_the_consumed_message():
    live = ScriptedLive()
    config = dataclasses.replace(
        lp.LiveConfig(), platform="vertex", project="p", location="us-central1", transparent_resumption=True
    )
    line, call, task = start(live, config)
    first = await live.connection(0)
    line.put(*(CallerAudio(f) for f in QUIET[:12]))  # messages 1 (frames 0-4) and 2 (5-9); 10, 11 wait
    await until(lambda: len(first.audio) == 2 and call.state.resumption.unsent == 2)
    first.say(lp.ResumptionUpdate("h1", True, consumed_index=1))
    await until(lambda: call.resumption_handle == "h1")
    first.lose(LiveConnectionLost("gone", 1011))
    line.put(CallerAudio(QUIET[12]))
    second = await live.connection(1)
    await until(lambda: b"".join(second.audio) == b"".join(QUIET[5:13]))
    await end(line, task)


class WaitingConnection(ScriptedConnection):
    """A connection whose audio send waits (a full write buffer) until `release`, then fails if broken."""

    release: asyncio.Event | None = None

    async def send_audio(self, pcm: bytes, rate: int) -> int:
        if self.release is not None:
            await self.release.wait()
        return await super().send_audio(pcm, rate)

    async def close(self) -> None:
        self.closed = True
        if self.release is not None:
            self.release.set()  # as websockets does: closing wakes the waiting send, which then raises


class WaitingLive(ScriptedLive):
    async def open(self, config: lp.LiveConfig, handle: str | None) -> ScriptedConnection:
        connection = await super().open(config, handle)
        connection.__class__ = WaitingConnection
        return connection


async def test_a_send_that_fails_once_the_switch_has_begun_is_replayed_once():
    live = WaitingLive()
    line, call, task = start(live)
    first = await live.connection(0)
    first.say(lp.ResumptionUpdate("h1", True))
    await until(lambda: call.resumption_handle == "h1")
    assert isinstance(first, WaitingConnection)
    first.release = asyncio.Event()
    line.put(CallerAudio(LOUD), CallerAudio(LOUD))  # two frames, one message: the loop waits inside the send
    await until(lambda: call.state.resumption.unsent == 2)
    await asyncio.sleep(0.01)
    first.lose(LiveConnectionLost("gone", 1011))  # the agent loop begins the switch meanwhile
    second = await live.connection(1)
    await until(lambda: second.audio and not call.state.resumption.switching)
    await asyncio.sleep(0.02)
    assert second.audio == [LOUD * 2]  # once: kept for the replay, not held again
    await end(line, task)


def test_a_handle_before_the_switch_begins_keeps_the_frames_kept_after_the_break():
    res = Resumption()
    for frame in (b"s1", b"s2"):
        assert res.keep(frame)
    res.unsent_sent(1)
    assert res.keep(b"u1") and res.keep(b"u2") and res.keep(b"u3")  # their send fails:
    res.broke()
    for frame in (b"h1", b"h2"):  # said before the agent loop begins the switch
        assert not res.keep(frame)
        res.hold(frame)
    res.handle_update("h", True, 0.0)  # still buffered on the dying connection: covers s1, s2 only
    res.begin_switch()
    assert list(res.held or []) == [b"u1", b"u2", b"u3", b"h1", b"h2"]


def test_a_transparent_handle_covering_all_that_was_sent_is_fresh_with_a_quiet_unsent():
    res = Resumption(transparent=True)
    assert res.keep(b"a")
    res.unsent_sent(1)
    assert res.keep(b"b")  # a quiet, not sent yet
    assert res.handle_update("h1", True, 0.0, consumed_index=1) and res.handle_fresh


async def test_a_pause_in_the_line_s_audio_sends_the_quiet_held_then_its_end(monkeypatch):
    monkeypatch.setattr(call_module, "AUDIO_PAUSE_S", 0.01)
    live = ScriptedLive()
    line, _, task = start(live)
    conn = await live.connection(0)
    line.put(*(CallerAudio(f) for f in QUIET[:2]))  # then nothing: the line paused
    await until(lambda: any("audioStreamEnd" in m for m in conn.sent))
    assert [kind for kind, _ in conn.indices] == ["audio", "message"]
    assert conn.audio == [b"".join(QUIET[:2])]
    await end(line, task)


def loud(i: int) -> bytes:
    return LOUD[:-2] + bytes([i, 0x40])  # loud and recognisable


async def test_speech_goes_two_frames_to_a_message_and_the_setting_sends_every_frame():
    live = ScriptedLive()
    line, _, task = start(live)
    conn = await live.connection(0)
    said = [loud(i) for i in range(5)]
    line.put(*(CallerAudio(f) for f in said))
    await until(lambda: len(conn.audio) == 2)
    await end(line, task)  # the fifth waited for a sixth: it goes at the end of the call
    assert conn.audio == [said[0] + said[1], said[2] + said[3], said[4]]

    live = ScriptedLive()
    line, _, task = start(live, limits=CallLimits(speech_chunk_ms=20))
    conn = await live.connection(0)
    line.put(*(CallerAudio(f) for f in said))
    await until(lambda: len(conn.audio) == 5)
    await end(line, task)
    assert conn.audio == said


async def test_with_local_turns_the_held_frame_goes_before_the_activity_end(monkeypatch):
    """TURN_DETECTION=local: a frame still waiting for its chunk when the caller's turn ends is sent before
    `activityEnd`, or Live would hear it outside the turn."""
    said = [loud(i) for i in range(3)]
    verdicts = iter([Heard(onset=True, speaking=True), Heard(speaking=True), Heard(end=True)])

    def hear(meter, speech, pcm, now):
        return next(verdicts)

    monkeypatch.setattr(call_module, "hear", hear)
    live = ScriptedLive()
    line, _, task = start(live, lp.LiveConfig(turn_detection="local"))
    conn = await live.connection(0)
    line.put(*(CallerAudio(f) for f in said))
    await until(lambda: "activityEnd" in "".join(conn.sent))
    await end(line, task)
    assert b"".join(conn.audio).endswith(said[2])  # the third frame, alone, went before the end
    kinds = [kind for kind, _ in conn.indices]
    assert kinds[-2:] == ["audio", "message"] and "activityEnd" in conn.sent[-1]


async def test_the_detector_still_hearing_speech_is_no_sound_for_the_chunks(monkeypatch):
    """The detector says "speaking" for half a second after the caller's last voiced frame (its hangover):
    that quiet goes in quiet chunks, counted from the last sound, as with Live's own barge-in. Only sound
    keeps frames in speech chunks (Live's detector times the turn's end from it)."""

    def hear(meter, speech, pcm, now):
        return Heard(speaking=True)

    monkeypatch.setattr(call_module, "hear", hear)
    live = ScriptedLive()
    line, _, task = start(live)
    conn = await live.connection(0)
    line.put(*(CallerAudio(f) for f in QUIET[:5]))
    await until(lambda: len(conn.audio) == 1)
    await end(line, task)
    assert conn.audio == [b"".join(QUIET[:5])]
