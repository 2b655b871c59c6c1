"""Turn-taking rules (gateway.call.turns) without a clock or a socket, and the caller's speech detector
(gateway.call.voice) on labelled recordings the project generates (gateway.devtools.turn_corpus)."""

from __future__ import annotations

import pytest

from gateway.call.state import CallState
from gateway.call.transcript import CUT
from gateway.call.turns import FRAME_S, CallerSpeech, Heard, StallWatchdog, TurnRules
from gateway.call.voice import VoiceMeter, hear, level_dbfs
from gateway.devtools import turn_corpus as tc


def feed(
    speech: CallerSpeech, frames: list[tuple[float, bool, float | None]], t0: float = 0.0
) -> list[Heard]:
    """(level dBFS, voiced, model probability or None) per frame -> what each meant."""
    out = []
    for i, (level, voiced, probability) in enumerate(frames):
        now = t0 + (i + 1) * FRAME_S
        gated = speech.gate(level)
        p = probability if speech.wants_probability(gated and voiced, now) else None
        out.append(speech.frame(gated and voiced, p, now))
    return out


def onsets(heard: list[Heard]) -> list[int]:
    return [i for i, h in enumerate(heard) if h.onset]


def test_an_onset_needs_the_minimum_speech_and_the_model_agreeing():
    speech = CallerSpeech(TurnRules(min_speech_s=0.08))
    quiet = [(-60.0, False, None)] * 20
    heard = feed(speech, quiet + [(-25.0, True, 0.9)] * 6)
    assert onsets(heard) == [23]  # the 4th voiced frame: 80 ms of speech
    assert heard[-1].speaking and speech.onsets == 1


def test_the_model_saying_no_gives_the_candidate_up_and_rests():
    rules = TurnRules(confirm_window_s=0.2, confirm_backoff_s=1.0)
    speech = CallerSpeech(rules)
    music = [(-60.0, False, None)] * 10 + [(-24.0, True, 0.1)] * 40  # voiced to WebRTC, not to the model
    assert onsets(feed(speech, music)) == []
    assert speech.guarded >= 1
    # While resting, the model is not asked, even about voiced frames.
    assert not speech.wants_probability(True, 0.95)


def test_a_blip_or_a_click_is_not_speech_and_never_wakes_the_model():
    speech = CallerSpeech()
    frames = [(-60.0, False, None)] * 10 + [(-20.0, True, 0.99)] + [(-60.0, False, None)] * 5
    assert onsets(feed(speech, frames)) == []
    assert speech.candidate_s == 0


def test_the_noise_floor_is_learnt_and_only_frames_well_above_it_are_looked_at():
    speech = CallerSpeech()
    for _ in range(200):
        speech.gate(-42.0)  # a noisy line
    assert speech.floor_db == -42.0
    assert not speech.gate(-38.0)  # within the gate of the floor: noise, not asked about
    assert speech.gate(-25.0)
    # Speech does not become the floor: it rises slowly (3 dB/s).
    for _ in range(50):
        speech.gate(-25.0)
    assert speech.floor_db < -38


def test_the_agents_echo_is_held_back_and_a_caller_speaking_up_is_not():
    speech = CallerSpeech(TurnRules(echo_margin_db=15))
    speech.agent_played(-12.0)  # the agent's loudest frame on the line
    echo = [(-32.0, True, 0.95)] * 30  # -20 dB below it: speech to every detector, but only echo
    assert onsets(feed(speech, echo)) == []
    assert speech.guarded == 1  # one burst held back, counted once
    caller = [(-22.0, True, 0.95)] * 6
    assert onsets(feed(speech, caller, t0=1.0)) == [3]
    speech.agent_quiet()
    assert speech.threshold_db() < -35  # the agent is done: a quieter caller counts again


def test_a_line_with_loud_echo_raises_the_bar_for_itself():
    speech = CallerSpeech(TurnRules(echo_margin_db=15, echo_headroom_db=10))
    speech.agent_played(-12.0)
    assert speech.threshold_db() == -27.0  # nothing learnt yet: the agent's level less the margin
    # The line carries the agent's echo only 10 dB down (a loud speakerphone): over that first bar.
    echo = [-24.0, -22.0, -26.0] * 20
    assert speech.gate(echo[0])
    for level in echo[1:]:
        speech.gate(level)
    # A second of it heard while the agent played out: only what clears the line's echo by 10 dB counts.
    assert speech.echo_db == -24.0 and speech.threshold_db() == -14.0
    assert onsets(feed(speech, [(level, True, 0.95) for level in echo], t0=2.0)) == []
    assert onsets(feed(speech, [(-10.0, True, 0.95)] * 6, t0=4.0)) == [3]  # a caller who speaks up
    speech.agent_quiet()
    assert speech.threshold_db() < -30  # the agent is done: no echo to clear


def test_the_turn_ends_after_the_configured_silence():
    speech = CallerSpeech(TurnRules(end_silence_s=0.1))
    heard = feed(speech, [(-25.0, True, 0.9)] * 5 + [(-60.0, False, None)] * 8)
    ends = [i for i, h in enumerate(heard) if h.end]
    assert ends == [4 + 5]  # five silent frames after the last voiced one
    assert not speech.speaking


def test_the_watchdog_nudges_then_switches_then_gives_up():
    dog = StallWatchdog(timeout_s=5.0)
    assert dog.wait(0.0, busy=False) is None  # nothing to wait for before the caller speaks
    dog.caller_sound(10.0)
    assert dog.wait(12.0, busy=False) == 3.0
    assert dog.wait(12.0, busy=True) is None  # a tool is running: the model waits for it, not stalled
    assert dog.take_step(14.0, busy=False) is None  # not due yet
    assert dog.take_step(15.0, busy=False) == "nudge"
    assert dog.take_step(20.0, busy=False) == "switch"
    assert dog.take_step(25.0, busy=False) == "give_up"
    assert dog.stalls == 1 and dog.recoveries == 0


def test_the_agent_answering_stands_the_watchdog_down_and_counts_a_recovery():
    dog = StallWatchdog(timeout_s=5.0)
    dog.caller_sound(0.0)
    dog.agent_answered()  # answered in time: no stall
    assert dog.due is None and dog.stalls == 0 and dog.recoveries == 0
    dog.caller_sound(10.0)
    assert dog.take_step(15.0, busy=False) == "nudge"
    dog.caller_sound(16.0)  # the caller speaks again: their new turn is waited on afresh
    assert dog.take_step(20.0, busy=False) is None and dog.take_step(21.0, busy=False) == "nudge"
    dog.agent_answered()
    assert dog.stalls == 2 and dog.recoveries == 1


def playing_state(barge_in: str = "local") -> CallState:
    """The agent's turn playing out since t=100: each transcript fragment came just before its audio."""
    state = CallState(speech=CallerSpeech(TurnRules(barge_in=barge_in)))
    state.agent_transcript("Your order shipped ")
    assert state.agent_audio()
    state.playout.audio_sent(0.5, now=100.0)
    state.agent_transcript("on Wednesday and arrives Friday.")
    state.playout.audio_sent(1.5, now=100.1)
    return state


def test_local_onset_over_the_agent_is_a_barge_in_that_cuts_what_was_never_heard():
    state = playing_state()
    onset = Heard(onset=True, speaking=True)
    assert state.caller_heard(onset, 100.8)
    state.barged_in(100.8)  # 0.8 s of the turn was heard: the second fragment's audio began at 0.5 s
    assert state.cut_off  # Live's `interrupted` will need no second clear
    assert state.transcript.flush("agent") == [
        ("agent", f"Your order shipped on Wednesday and arrives Friday. {CUT}")
    ]
    state = playing_state()
    state.barged_in(100.3)  # only 0.3 s heard: the second fragment's audio had not begun
    assert state.transcript.flush("agent") == [("agent", f"Your order shipped {CUT}")]
    assert not state.agent_audio()  # the rest of the cut turn is dropped
    state.agent_transcript("and more")  # and its transcript is not kept as said
    assert state.transcript.flush("agent") == []


def test_no_local_barge_in_when_the_agent_is_silent_or_barge_in_is_lives():
    onset = Heard(onset=True, speaking=True)
    assert not CallState().caller_heard(onset, 1.0)  # nothing playing: a turn, not a barge-in
    assert not playing_state("server").caller_heard(onset, 100.8)
    state = playing_state()
    state.turn_complete(101.0)
    state.turn_over(101.0)  # Live is done, the line still plays the turn out (its mark is out)
    assert state.caller_heard(onset, 101.2)
    state.barged_in(101.2)
    assert not state.playout.marks  # flushed marks prove nothing was heard


def line_frames(recording: tc.Recording) -> list[bytes]:
    return tc.frames(recording.line)


@pytest.fixture(scope="module")
def speech_in_noise() -> tc.Recording:
    return tc.caller_in_noise(seed=0, seconds=20)


def detect(recording: tc.Recording) -> tuple[list[float], list[float]]:
    meter, speech = VoiceMeter(8000), CallerSpeech()
    agent = tc.frames(recording.agent) if recording.agent else []
    starts, ends = [], []
    for i, pcm in enumerate(line_frames(recording)):
        if i < len(agent):
            speech.agent_played(level_dbfs(agent[i]))
        heard = hear(meter, speech, pcm, (i + 1) * FRAME_S)
        if heard.onset:
            starts.append((i + 1) * FRAME_S)
        if heard.end:
            ends.append((i + 1) * FRAME_S)
    return starts, ends


def test_the_detector_finds_each_utterance_in_line_noise_near_its_labelled_edges(speech_in_noise):
    starts, ends = detect(speech_in_noise)
    assert len(starts) == len(speech_in_noise.speech) == len(ends)
    for (start, end), onset, over in zip(speech_in_noise.speech, starts, ends, strict=True):
        assert start < onset < start + 0.3  # within a few frames of the labelled start (and not before)
        assert end + 0.3 < over < end + 0.8  # the configured 0.5 s of silence after the labelled end


def test_music_on_hold_line_noise_and_the_agents_echo_at_minus_20_db_start_no_turn():
    assert detect(tc.music_only(seconds=10)) == ([], [])
    assert detect(tc.noise_only(seconds=10)) == ([], [])
    assert detect(tc.echo_only(-20, seconds=15)) == ([], [])
