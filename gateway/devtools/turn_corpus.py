"""Labelled phone-line recordings for measuring turn-taking: where the caller's speech starts and ends is
known to the frame, because the recordings are built from parts.

Every part is generated offline and deterministically (a seed each): the caller's and the agent's voices
are eSpeak NG (`gateway.local_live.tts`, two different voices), the line's noise is band-limited hiss with
mains hum and the odd click, music on hold is a synthesised chord progression, and the agent's own voice
comes back from the caller's side (echo) delayed and attenuated. Everything goes through mu-law and back,
as a Twilio line carries it: PCM16LE mono at 8 kHz, 20 ms frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gateway.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.local_live import tts

RATE = 8000
FRAME = 160  # samples per 20 ms frame
FRAME_S = 0.02

CALLER_SENTENCES = (
    "Hi, I'd like to check the status of my order please.",
    "Yes, it was placed last Tuesday.",
    "No, wait, that's not what I meant.",
    "Can you tell me what time you close today?",
    "Sorry, could you repeat that?",
    "I want to speak to somebody about my bill.",
    "Okay.",
    "Stop, stop, I already know that.",
    "My account number is four five six seven.",
    "That's great, thank you so much.",
)
AGENT_SENTENCES = (
    "Thanks for calling. I can help you with orders, billing and opening hours.",
    "Your order shipped on Wednesday and should arrive within three to five working days.",
    "We are open from nine in the morning until six in the evening, Monday to Saturday.",
    "Let me look that up for you. It will only take a moment while I check the system.",
)


def dbfs(x: np.ndarray) -> float:
    """RMS level relative to full scale."""
    rms = float(np.sqrt(np.mean(np.square(x.astype(np.float64))))) if x.size else 0.0
    return 20 * math.log10(max(rms, 1e-9) / 32768)


def _at_level(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    """Scale speech so its active level (frames within 20 dB of its loudest) is `level_dbfs`."""
    frames = x[: x.size // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
    active = frames[rms > rms.max() / 10]
    current = 20 * math.log10(float(np.sqrt(np.mean(active**2))) / 32768)
    return x.astype(np.float64) * 10 ** ((level_dbfs - current) / 20)


def voice(
    text: str, *, agent: bool, level_dbfs: float = -20.0, wpm: int = 170, repeatably: bool = False
) -> np.ndarray:
    """`text` spoken by the caller (a male voice) or the agent (a female one) at 8 kHz, leading and
    trailing silence trimmed, at `level_dbfs` active level (float samples). `repeatably`: the same samples
    in every run and process (`tts.synthesize_repeatably`, which loads its own engine each time)."""
    variant = tts.FEMALE_VARIANT if agent else tts.MALE_VARIANT
    say = tts.synthesize_repeatably if repeatably else tts.synthesize
    pcm = say(text, rate=RATE, variant=variant, wpm=wpm)
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    loud = np.flatnonzero(np.abs(x) > 300)
    x = x[loud[0] : loud[-1] + 1] if loud.size else x
    return _at_level(x, level_dbfs)


def line_noise(seconds: float, seed: int, level_dbfs: float = -55.0) -> np.ndarray:
    """A phone line's background: hiss in 300-3400 Hz, 50 Hz hum and its harmonics, a click now and then."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.normal(0, 1, n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    hiss = np.fft.irfft(spectrum, n)
    hiss *= 10 ** (level_dbfs / 20) * 32768 / (np.sqrt(np.mean(hiss**2)) + 1e-12)
    t = np.arange(n) / RATE
    hum = sum(np.sin(2 * math.pi * 50 * k * t) / k for k in (1, 3, 5)) * 10 ** ((level_dbfs - 6) / 20) * 32768
    clicks = np.zeros(n)
    for at in rng.integers(0, max(1, n - 40), size=max(1, int(seconds / 4))):
        clicks[at : at + 40] += rng.normal(0, 1, 40) * 10 ** (-30 / 20) * 32768 * np.hanning(40)
    return hiss + hum + clicks


def music_on_hold(seconds: float, seed: int, level_dbfs: float = -24.0) -> np.ndarray:
    """A chord progression with a melody over it, band-limited as a phone line carries it."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    out = np.zeros(n)
    chords = ((261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7))
    beat = int(0.5 * RATE)
    for start in range(0, n, beat):
        chord = chords[(start // (4 * beat)) % len(chords)]
        melody = chord[int(rng.integers(0, 3))] * 2
        seg = slice(start, min(n, start + beat))
        tt = t[seg] - t[start]
        env = np.exp(-3 * tt)
        for f in chord:
            out[seg] += 0.3 * np.sin(2 * math.pi * f * t[seg]) + 0.1 * np.sin(4 * math.pi * f * t[seg])
        out[seg] += 0.6 * env * np.sin(2 * math.pi * melody * t[seg])
    out *= 10 ** (level_dbfs / 20) * 32768 / (np.sqrt(np.mean(out**2)) + 1e-12)
    return out


def phone_line(x: np.ndarray) -> bytes:
    """Float samples -> PCM16LE as they arrive from a Twilio line (clipped, through mu-law and back)."""
    pcm = np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm))


@dataclass
class Recording:
    """A labelled recording of the caller's side of a line, and what the agent played meanwhile."""

    name: str
    line: bytes  # PCM16LE 8 kHz, what the gateway receives from the caller
    speech: list[tuple[float, float]] = field(default_factory=list)  # the caller's (start, end), seconds
    agent: bytes = b""  # PCM16LE 8 kHz the agent played on the line at the same times (zeros: none)

    @property
    def seconds(self) -> float:
        return len(self.line) / 2 / RATE


def _place(track: np.ndarray, part: np.ndarray, at: int) -> None:
    end = min(track.size, at + part.size)
    track[at:end] += part[: end - at]


def caller_in_noise(seed: int = 0, seconds: float = 40.0, caller_dbfs: float = -22.0) -> Recording:
    """Caller utterances with pauses of 0.8 to 2.5 s, over line noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    track = line_noise(seconds, seed)
    speech = []
    at = int(0.7 * RATE)
    i = int(rng.integers(0, len(CALLER_SENTENCES)))
    while True:
        part = voice(CALLER_SENTENCES[i % len(CALLER_SENTENCES)], agent=False, level_dbfs=caller_dbfs)
        if at + part.size > n - RATE:
            break
        _place(track, part, at)
        speech.append((at / RATE, (at + part.size) / RATE))
        at += part.size + int(rng.uniform(0.8, 2.5) * RATE)
        i += 1
    return Recording("caller speech in line noise", phone_line(track), speech)


def agent_talk(seconds: float, level_dbfs: float = -18.0) -> np.ndarray:
    """The agent speaking on and on, short pauses between sentences."""
    n = int(seconds * RATE)
    track = np.zeros(n)
    at, i = 0, 0
    while at < n:
        part = voice(AGENT_SENTENCES[i % len(AGENT_SENTENCES)], agent=True, level_dbfs=level_dbfs)
        _place(track, part, at)
        at += part.size + int(0.35 * RATE)
        i += 1
    return track


def echo_only(echo_db: float, seed: int = 1, seconds: float = 60.0, delay_s: float = 0.12) -> Recording:
    """No caller speech: line noise, and the agent's voice coming back `echo_db` below what was played."""
    agent = agent_talk(seconds)
    track = line_noise(seconds, seed)
    d = int(delay_s * RATE)
    track[d:] += agent[: agent.size - d] * 10 ** (echo_db / 20)
    return Recording(f"agent echo at {echo_db:g} dB", phone_line(track), [], phone_line(agent))


def music_only(seed: int = 2, seconds: float = 30.0) -> Recording:
    """Music on hold over line noise: no speech."""
    return Recording("music on hold", phone_line(line_noise(seconds, seed) + music_on_hold(seconds, seed)))


def noise_only(seed: int = 3, seconds: float = 60.0) -> Recording:
    return Recording("line noise", phone_line(line_noise(seconds, seed)))


def barge_ins_over_echo(
    echo_db: float, seed: int = 4, seconds: float = 60.0, caller_dbfs: float = -22.0, delay_s: float = 0.12
) -> Recording:
    """The agent talks throughout (echoed at `echo_db`), and the caller talks over it now and then."""
    base = caller_in_noise(seed, seconds, caller_dbfs)
    agent = agent_talk(seconds)
    track = np.frombuffer(base.line, "<i2").astype(np.float64)
    d = int(delay_s * RATE)
    track[d:] += agent[: agent.size - d] * 10 ** (echo_db / 20)
    return Recording(
        f"caller over agent echo at {echo_db:g} dB", phone_line(track), base.speech, phone_line(agent)
    )


def frames(pcm: bytes) -> list[bytes]:
    step = FRAME * 2
    return [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]
