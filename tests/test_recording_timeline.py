"""The recording's rules (gateway.recording.timeline), in milliseconds: where each side is heard."""

from __future__ import annotations

import numpy as np

from gateway.recording.timeline import Timeline

RATE = 8000  # 8 samples a millisecond


def tone(ms: float, value: int) -> bytes:
    return np.full(int(ms * RATE / 1000), value, dtype="<i2").tobytes()


def channels(stereo: bytes) -> tuple[np.ndarray, np.ndarray]:
    frames = np.frombuffer(stereo, dtype="<i2").reshape(-1, 2)
    return frames[:, 0], frames[:, 1]


def at(samples: np.ndarray, ms: float) -> int:
    return int(samples[int(ms * RATE / 1000)])


def feed_caller(timeline: Timeline, until_ms: float, value: int = 1, every_ms: float = 20) -> bytes:
    """Caller frames arriving every 20 ms, each ending when it arrives; what the timeline hands over."""
    out = b""
    t = timeline.taken_ms
    while t < until_ms:
        t += every_ms
        timeline.caller(tone(every_ms, value), t)
        out += timeline.take(t)
    return out


def test_caller_frames_are_placed_at_line_time() -> None:
    timeline = Timeline(RATE, start_ms=1000.0)
    out = b""
    for i in range(1, 51):  # one second of frames, from 1000 ms on the clock
        timeline.caller(tone(20, i), 1000 + 20 * i)
        out += timeline.take(1000 + 20 * i)
    out += timeline.finish(2000)
    caller, agent = channels(out)
    assert len(caller) == RATE  # one second, not a sample more or less
    assert at(caller, 0) == 1 and at(caller, 999) == 50
    assert not agent.any()


def test_jitter_is_not_a_gap_but_a_pause_in_the_line_is_silence() -> None:
    timeline = Timeline(RATE, start_ms=0.0)
    out = feed_caller(timeline, 200)
    # jitter: the next frames arrive 30 ms late, then together; the caller's side stays seamless
    timeline.caller(tone(20, 2), 250)
    timeline.caller(tone(20, 2), 251)
    out += timeline.take(251)
    # the line sends nothing from 240 ms to 1240 ms: silence there, and the next frame ends when it arrived
    timeline.caller(tone(20, 3), 1260)
    out += timeline.take(1260) + timeline.finish(1260)
    caller, _ = channels(out)
    assert at(caller, 199) == 1 and at(caller, 200) == 2 and at(caller, 239) == 2
    assert at(caller, 300) == 0 and at(caller, 1239) == 0
    assert at(caller, 1240) == 3 and len(caller) == 1260 * 8


def test_frames_read_late_at_the_start_of_the_call_are_placed_from_its_start() -> None:
    """The call opens Live before it reads the line: the first frames wait, then are read at once."""
    timeline = Timeline(RATE, start_ms=0.0)
    for i in range(45):  # 900 ms of frames, all read at 900 ms
        timeline.caller(tone(20, 1 + i), 900)
    out = timeline.take(900)
    for t in range(920, 2001, 20):  # then each as it comes
        timeline.caller(tone(20, 99), t)
        out += timeline.take(t)
    out += timeline.finish(2000)
    caller, _ = channels(out)
    assert at(caller, 0) == 1 and at(caller, 799) == 40 and at(caller, 899) == 45 and at(caller, 900) == 99
    assert len(caller) == 2000 * 8


def test_agent_audio_buffered_faster_than_real_time_is_heard_in_real_time() -> None:
    """A 3 s reply queued in 300 ms (Live streams faster than real time, the carrier buffers it): heard from
    its first chunk for three seconds, each chunk after the one before, not when it was queued."""
    timeline = Timeline(RATE, start_ms=0.0)
    out = feed_caller(timeline, 1000)
    for i in range(10):  # ten 300 ms chunks, one every 30 ms from 1000 ms on
        timeline.agent(tone(300, 10 + i), 1000 + 30 * i)
    out += feed_caller(timeline, 5000)
    out += timeline.finish(5000)
    caller, agent = channels(out)
    assert len(agent) == 5 * RATE
    assert at(agent, 999) == 0
    assert at(agent, 1000) == 10 and at(agent, 1299) == 10 and at(agent, 1300) == 11
    assert at(agent, 3999) == 19 and at(agent, 4000) == 0
    assert (caller == 1).all()  # the caller's side is untouched by the agent's


def test_a_clear_cuts_the_reply_where_the_caller_barged_in() -> None:
    timeline = Timeline(RATE, start_ms=0.0)
    out = feed_caller(timeline, 500)
    timeline.agent(tone(4000, 7), 500)  # four seconds queued at once
    out += feed_caller(timeline, 1700)
    timeline.clear(1700)  # the caller talked over it: the carrier drops the rest
    out += feed_caller(timeline, 3000)
    timeline.agent(tone(500, 9), 3000)  # the next reply starts when it is queued, not after the cut one
    out += feed_caller(timeline, 4000) + timeline.finish(4000)
    _, agent = channels(out)
    assert at(agent, 500) == 7 and at(agent, 1699) == 7
    assert at(agent, 1700) == 0 and at(agent, 2999) == 0
    assert at(agent, 3000) == 9 and at(agent, 3499) == 9 and at(agent, 3500) == 0


def test_what_was_still_queued_when_the_line_ended_was_never_heard() -> None:
    timeline = Timeline(RATE, start_ms=0.0)
    out = feed_caller(timeline, 200)
    timeline.agent(tone(2000, 5), 200)
    out += feed_caller(timeline, 1000)
    out += timeline.finish(1000)  # the line closed at 1000 ms with 1.2 s still queued
    _, agent = channels(out)
    assert len(agent) == RATE and at(agent, 999) == 5
    assert timeline.duration_ms == 1000


def test_nothing_is_held_beyond_the_carriers_queue() -> None:
    """Handed over as it becomes final: after a minute of a call, only the queued reply is left."""
    timeline = Timeline(RATE, start_ms=0.0)
    total = len(feed_caller(timeline, 60_000))
    assert total == 60 * RATE * 4
    timeline.agent(tone(2000, 5), 60_000)
    assert timeline.agent_queued_ms == 2000
    total += len(feed_caller(timeline, 61_000))
    assert timeline.agent_queued_ms == 1000


def test_a_prompt_played_before_the_first_frame_is_read_keeps_both_sides_in_place() -> None:
    """A notice is queued at the line's start; the call reads the caller's first frames only once Live is
    set up, two seconds later: they are the first two seconds, beside the notice, not after it."""
    timeline = Timeline(RATE, start_ms=0.0)
    timeline.agent(tone(1500, 8), 0)
    out = timeline.take(2000)
    for i in range(100):  # two seconds of frames, read at once at 2000 ms, then asked for what is final
        timeline.caller(tone(20, 1 + i), 2000)
        out += timeline.take(2000)
    out += timeline.finish(2000)
    caller, agent = channels(out)
    assert len(caller) == 2 * RATE
    assert at(caller, 0) == 1 and at(caller, 1999) == 100
    assert at(agent, 0) == 8 and at(agent, 1499) == 8 and at(agent, 1500) == 0
