"""How much caller audio goes to Live per message: two frames (or one) around speech, several in a quiet."""

from __future__ import annotations

import pytest

from gateway.call.caller_chunks import CallerChunks


def sends(rule: CallerChunks, sounds: str) -> list[int]:
    """Feed frames ('x' a sound, '.' quiet); the size of each message sent, in frames."""
    sizes, unsent = [], 0
    for mark in sounds:
        unsent += 1
        if rule.send_now(mark == "x", unsent):
            sizes.append(unsent)
            unsent = 0
    return sizes


def test_a_quiet_goes_five_frames_a_message_and_speech_frame_by_frame():
    rule = CallerChunks(quiet_frames=5, after_sound_frames=3, speech_frames=1)
    assert sends(rule, "." * 12) == [5, 5]  # two frames still held
    assert sends(CallerChunks(5, 3, 1), "...xx") == [4, 1]  # the first sound sends what is held with it


def test_speech_goes_two_frames_a_message_by_default():
    rule = CallerChunks(quiet_frames=5, after_sound_frames=3)
    assert rule.speech_frames == 2
    assert sends(rule, "xxxxx") == [2, 2]  # the fifth frame waits for the sixth
    # The first sound sends what the quiet held with it; then two by two, the hangover too.
    assert sends(CallerChunks(5, 3), "..x" + "xxx" + "..." + "." * 5) == [3, 2, 2, 2, 5]
    assert sends(CallerChunks(5, 3), "....x" + "x") == [5]  # the quiet's chunk was full: it took the sound


def test_frames_go_one_by_one_for_a_while_after_the_last_sound():
    rule = CallerChunks(quiet_frames=5, after_sound_frames=3, speech_frames=1)
    # The sound, three frames after it one by one (Live hears the silence that ends the turn on time),
    # then the quiet is batched again.
    assert sends(rule, "x" + "..." + "." * 10) == [1, 1, 1, 1, 5, 5]


def test_twenty_ms_sends_every_frame_and_the_hangover_follows_lives_silence():
    every = CallerChunks.of_ms(20, 500)  # the speech chunk is no larger than the quiet one
    assert every.speech_frames == 1
    assert sends(every, "." * 7) == [1] * 7
    assert sends(every, "x.x") == [1] * 3
    rule = CallerChunks.of_ms(100, 500)
    assert (rule.quiet_frames, rule.after_sound_frames, rule.speech_frames) == (5, 60, 2)  # 500 + 700 ms
    assert CallerChunks.of_ms(40, 2000).after_sound_frames == 135
    assert CallerChunks.of_ms(100, 500, speech_chunk_ms=20).speech_frames == 1
    assert CallerChunks.of_ms(100, 500, speech_chunk_ms=60).speech_frames == 3
    for bad in (0, 10, 30, 120):
        with pytest.raises(ValueError):
            CallerChunks.of_ms(bad, 500)
        with pytest.raises(ValueError):
            CallerChunks.of_ms(100, 500, speech_chunk_ms=bad)
    with pytest.raises(ValueError, match="larger than a quiet one"):
        CallerChunks.of_ms(40, 500, speech_chunk_ms=60)
