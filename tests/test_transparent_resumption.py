"""Transparent session resumption (Vertex AI): each handle says which client message of its connection it
covers (`lastConsumedClientMessageIndex`), and a connection switch replays exactly the caller audio after it:
nothing the server already has, nothing it lacks. The rules in memory, then the Call's story in memory."""

from __future__ import annotations

import asyncio
import dataclasses

from gateway.call import Call, CallLimits, Outcome
from gateway.call.line import CallerAudio, LineAudio
from gateway.call.resumption import Resumption
from gateway.live import protocol as lp
from gateway.live.session import LiveConnectionLost
from tests.support.call_doubles import STARTED, MemoryLine, ScriptedLive
from tests.test_call import hang_up, until

FRAMES = [bytes([i]) * 640 for i in range(1, 9)]  # 20 ms at 16 kHz, each one recognisable


def sent_in_order(resumption: Resumption, frames: list[bytes], first_index: int = 1) -> None:
    """Keep and send `frames` as client messages first_index, first_index + 1, ..."""
    for i, frame in enumerate(frames):
        assert resumption.keep(frame)
        resumption.unsent_sent(first_index + i)


def test_a_handle_drops_exactly_the_frames_its_message_index_covers():
    r = Resumption(transparent=True)
    sent_in_order(r, FRAMES[:6])  # messages 1..6 (setup is 0)
    assert r.handle_update("h1", True, 0.0, consumed_index=4) is False  # frames 5 and 6 are not covered
    assert list(r.since_handle) == FRAMES[4:6]
    assert r.handle_update("h2", True, 0.0, consumed_index=6) is True and not r.since_handle
    assert r.handle == "h2" and r.handle_fresh


def test_messages_that_are_not_audio_count_too_and_unsent_frames_stay():
    r = Resumption(transparent=True)
    sent_in_order(r, FRAMES[:2], first_index=2)  # message 1 was the greeting (clientContent)
    r.keep(FRAMES[2])  # kept, not yet sent (the send is under way)
    r.handle_update("h1", True, 0.0, consumed_index=2)
    assert list(r.since_handle) == FRAMES[1:3]
    r.handle_update("h1", True, 0.0, consumed_index=0)  # only the setup: nothing more goes
    assert list(r.since_handle) == FRAMES[1:3]


def test_the_switch_replays_exactly_what_follows_and_the_new_connection_counts_afresh():
    r = Resumption(transparent=True)
    sent_in_order(r, FRAMES[:5])
    r.handle_update("h1", True, 0.0, consumed_index=3)
    r.broke()
    r.keep(FRAMES[5]) or r.hold(FRAMES[5])  # said during the switch
    r.begin_switch()
    replayed = []
    index = 1
    while (frame := r.next_held()) is not None:
        replayed.append(frame)
        r.frame_sent(index, r.replayed_seq)
        index += 1
    assert replayed == FRAMES[3:6]
    # The new connection's first handle covers its setup and the first two replayed frames.
    r.handle_update("h2", True, 0.0, consumed_index=2)
    assert list(r.since_handle) == [FRAMES[5]]


def test_frames_sent_together_are_covered_together():
    r = Resumption(transparent=True)
    sent_in_order(r, FRAMES[:1])  # message 1
    for frame in FRAMES[1:4]:
        assert r.keep(frame)  # a quiet: three frames, one message
    r.unsent_sent(2)
    assert r.keep(FRAMES[4])  # not sent yet
    r.handle_update("h1", True, 0.0, consumed_index=1)
    assert list(r.since_handle) == FRAMES[1:5]
    r.handle_update("h2", True, 0.0, consumed_index=2)
    assert list(r.since_handle) == [FRAMES[4]] and r.unsent_frames() == [FRAMES[4]]


def test_the_replay_bound_still_holds_and_numbers_stay_aligned():
    r = Resumption(transparent=True, max_frames=3)
    sent_in_order(r, FRAMES[:5])  # only the last three are kept
    assert list(r.since_handle) == FRAMES[2:5] and r.first_seq == 2
    r.handle_update("h1", True, 0.0, consumed_index=3)  # frame 3 was message 3
    assert list(r.since_handle) == FRAMES[3:5]


def test_a_frame_sent_again_is_covered_only_once_its_later_copy_is():
    # TURN_DETECTION=local: the speech onset (frames 3 and 4) goes again inside the activity (messages 6, 7);
    # Live discarded the first copies, so a handle covering them but not the second copies keeps them.
    r = Resumption(transparent=True)
    sent_in_order(r, FRAMES[:5])  # messages 1..5
    r.frame_sent(6, 2)  # activityStart was message 6 in reality; the re-sends are numbered as sent
    r.frame_sent(7, 3)
    r.handle_update("h1", True, 0.0, consumed_index=5)
    assert list(r.since_handle) == FRAMES[2:5]
    r.handle_update("h2", True, 0.0, consumed_index=7)
    assert not r.since_handle


def test_without_transparency_a_handle_covers_everything_sent_before_it():
    r = Resumption()
    sent_in_order(r, FRAMES[:3])
    assert r.handle_update("h1", True, 0.0, consumed_index=1) is True and not r.since_handle


async def test_the_call_replays_exactly_the_frames_after_the_consumed_message():
    line, live = (
        MemoryLine(LineAudio(16000, 24000)),
        ScriptedLive(),
    )  # wideband: frames go through as they are
    config = dataclasses.replace(
        lp.LiveConfig(), platform="vertex", project="p", location="us-central1", transparent_resumption=True
    )
    # Every frame in a message of its own (LIVE_QUIET_CHUNK_MS=20): the indices below are the frames'.
    limits = CallLimits(quiet_chunk_ms=20)
    call = Call(line, STARTED, live.open, config, limits=limits, connect_retry_delays_s=(0.0, 0.0, 0.0))
    task = asyncio.create_task(call.run())
    first = await live.connection(0)
    line.put(*(CallerAudio(f) for f in FRAMES[:6]))
    await until(lambda: len(first.audio) == 6)
    assert [i for i, (kind, _) in enumerate(first.indices, 1) if kind == "audio"] == [1, 2, 3, 4, 5, 6]
    first.say(lp.ResumptionUpdate("h1", True, consumed_index=4))
    await until(lambda: call.resumption_handle == "h1")
    first.lose(LiveConnectionLost("gone", 1011))
    line.put(CallerAudio(FRAMES[6]))  # during the switch: held, then sent after the replay
    second = await live.connection(1)
    await until(lambda: len(second.audio) == 3)
    assert second.handle == "h1" and second.audio == [FRAMES[4], FRAMES[5], FRAMES[6]]
    await hang_up(line, task)
    assert call.stats.outcome is Outcome.CALLER_HUNG_UP
