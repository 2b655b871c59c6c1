"""Who picks up a simulated outbound call, and what Twilio's answering-machine detection says about them.

The Twilio stand-in (`gateway.devtools.twilio_api`) plays the callee with the caller simulator, so the
gateway's side of an outbound call is the product's own: signed webhook, media stream, callbacks.

- a person says "Hello?" and listens (then hangs up after `talk_s`); Twilio's detector calls them `human`
  once their greeting is followed by `SPEECH_END_THRESHOLD_S` of silence (its default
  MachineDetectionSpeechEndThreshold);
- a voicemail plays its greeting, a beep, then records silence (hanging up after `record_s`); with
  `DetectMessageEnd` Twilio reports `machine_end_beep` as the beep ends (`BEEP_DETECT_S` later);
- busy, no answer and failed never pick up: only status callbacks.

The callees' words are synthesised offline with the local backend's synthesiser (another voice than the
agent's), once per process.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from typing import Literal

from gateway.devtools.simulator import RATE, CallScript

CalleeKind = Literal["person", "voicemail", "busy", "no_answer", "failed"]
PERSON_HELLO = "Hello?"
VOICEMAIL_GREETING = (
    "Hi, you have reached Ada. I cannot take your call right now. Please leave a message after the tone."
)
SPEECH_END_THRESHOLD_S = 1.2  # Twilio's default MachineDetectionSpeechEndThreshold (1200 ms)
BEEP_DETECT_S = 0.1  # from the end of the beep to Twilio's machine_end_beep
BEEP_HZ, BEEP_S = 1000.0, 0.5
LEAD_S = 0.4  # a callee's silence between picking up and speaking
BEFORE_BEEP_S = 0.4
NOT_ANSWERED = {"busy": "busy", "no_answer": "no-answer", "failed": "failed"}  # kind -> CallStatus


@dataclass(frozen=True)
class Callee:
    """One simulated callee."""

    kind: CalleeKind = "person"
    ring_s: float = 1.0  # rings this long before answering (or before busy / no-answer)
    talk_s: float = 8.0  # a person stays this long after their hello, then hangs up
    record_s: float = 25.0  # a voicemail records this long after the beep, then hangs up
    greeting: str = VOICEMAIL_GREETING  # a voicemail's (a person says PERSON_HELLO)

    @property
    def answers(self) -> bool:
        return self.kind in ("person", "voicemail")


@dataclass(frozen=True)
class Pickup:
    """What an answering callee does on the line, on the stream's timeline (seconds from its start)."""

    script: CallScript
    answered_by: str  # what Twilio's AMD reports
    amd_at_s: float  # when Twilio reports it
    speech_end_s: float  # the end of the callee's hello, or of its greeting
    beep_end_s: float | None = None  # a voicemail: the end of the beep


def pickup(callee: Callee) -> Pickup:
    """The line of a callee that answers."""
    if callee.kind == "person":
        hello = _speech(PERSON_HELLO)
        end = LEAD_S + len(hello) / 2 / RATE
        script = CallScript(hello, leading_silence_s=LEAD_S, trailing_silence_s=callee.talk_s)
        return Pickup(script, "human", end + SPEECH_END_THRESHOLD_S, end)
    if callee.kind != "voicemail":
        raise ValueError(f"a {callee.kind} callee does not pick up")
    greeting = _speech(callee.greeting)
    audio = greeting + bytes(int(BEFORE_BEEP_S * RATE) * 2) + beep()
    speech_end = LEAD_S + len(greeting) / 2 / RATE
    beep_end = LEAD_S + len(audio) / 2 / RATE
    # The machine records until the gateway hangs up, or gives up after record_s.
    script = CallScript(
        audio, leading_silence_s=LEAD_S, hang_up=False, max_duration_s=beep_end + callee.record_s
    )
    return Pickup(script, "machine_end_beep", beep_end + BEEP_DETECT_S, speech_end, beep_end)


def beep(hz: float = BEEP_HZ, seconds: float = BEEP_S, level: float = 0.5) -> bytes:
    """An answering machine's tone: PCM16LE at 8 kHz."""
    n = int(seconds * RATE)
    peak = int(level * 32767)
    return struct.pack(f"<{n}h", *(int(peak * math.sin(2 * math.pi * hz * i / RATE)) for i in range(n)))


@functools.lru_cache(maxsize=8)
def _speech(text: str) -> bytes:
    from gateway.local_live.tts import MALE_VARIANT, synthesize_repeatably

    return synthesize_repeatably(text, rate=RATE, variant=MALE_VARIANT, wpm=150)
