"""How much caller audio goes to Live per message: every frame at once around speech, several in a quiet."""

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
    rule = CallerChunks(quiet_frames=5, after_sound_frames=3)
    assert sends(rule, "." * 12) == [5, 5]  # two frames still held
    assert sends(CallerChunks(5, 3), "...xx") == [4, 1]  # the first sound sends what is held with it


def test_frames_go_one_by_one_for_a_while_after_the_last_sound():
    rule = CallerChunks(quiet_frames=5, after_sound_frames=3)
    # The sound, three frames after it one by one (Live hears the silence that ends the turn on time),
    # then the quiet is batched again.
    assert sends(rule, "x" + "..." + "." * 10) == [1, 1, 1, 1, 5, 5]


def test_twenty_ms_sends_every_frame_and_the_hangover_follows_lives_silence():
    assert sends(CallerChunks.of_ms(20, 500), "." * 7) == [1] * 7
    rule = CallerChunks.of_ms(100, 500)
    assert (rule.quiet_frames, rule.after_sound_frames) == (5, 60)  # 500 ms + 700 ms of 20 ms frames
    assert CallerChunks.of_ms(40, 2000).after_sound_frames == 135
    for bad in (0, 10, 120):
        with pytest.raises(ValueError):
            CallerChunks.of_ms(bad, 500)
