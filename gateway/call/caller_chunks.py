"""How much of the caller's audio goes to Live in one message.

Lines carry a frame every 20 ms, speech or not, and each message to Live costs a send (a system call, the
WebSocket framing, a wake-up of the event loop): the largest single item of a call's CPU. Live takes chunks of
20 to 100 ms (Google's ADK guide calls 10-20 ms ultra-low latency and 50-100 ms balanced). While the caller
may be speaking, and for a while after, frames go two to a message (`LIVE_SPEECH_CHUNK_MS`, 40 ms): half the
sends of frame by frame, for at most 20 ms more before Live hears a frame (10 ms on average). The gateway's
own barge-in does not wait on it (it hears the caller on the line), and the end of a turn is waited on by
Live's detector for hundreds of milliseconds of silence anyway. In a longer quiet (the caller listening to the
agent, or thinking) frames are sent several together (`LIVE_QUIET_CHUNK_MS`): nothing there is waiting on
them, and the first sound sends what is held with it, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAME_MS = 20
# Frames keep going one by one this long after the caller's last sound, beyond the silence Live's detector
# waits for to end a turn (`silenceDurationMs`), so the end of a turn is heard on time.
AFTER_SILENCE_MS = 700
MAX_QUIET_CHUNK_MS = 100  # the largest chunk the Live API reference calls usual
SPEECH_CHUNK_MS = 40  # LIVE_SPEECH_CHUNK_MS's default
CHUNK_CHOICES_MS = (20, 40, 60, 80, 100)  # whole frames, up to the largest usual chunk
# A frame whose peak is above this (PCM16; about -44 dBFS) is not quiet: the soft start of a word goes in
# speech chunks. Digital silence and a quiet line's idle noise stay below it; a noisy line goes in speech
# chunks throughout (a smaller saving there, and no harm).
QUIET_PEAK = 200


@dataclass
class CallerChunks:
    """The rule, for one call: `speech_frames` frames per message while the caller may be speaking,
    `quiet_frames` in a quiet (1: every frame as it comes)."""

    quiet_frames: int = MAX_QUIET_CHUNK_MS // FRAME_MS
    after_sound_frames: int = (500 + AFTER_SILENCE_MS) // FRAME_MS
    speech_frames: int = SPEECH_CHUNK_MS // FRAME_MS
    since_sound: int | None = None  # frames since the caller's last sound (None: no sound yet)

    @classmethod
    def of_ms(cls, quiet_chunk_ms: int, silence_ms: int, speech_chunk_ms: int | None = None) -> CallerChunks:
        """The rule for chunks of `speech_chunk_ms` while the caller may be speaking (None: the default, or
        the quiet chunk if that is smaller) and `quiet_chunk_ms` in a quiet, each one of `CHUNK_CHOICES_MS`,
        with Live's detector ending a turn after `silence_ms`."""
        if speech_chunk_ms is None:
            speech_chunk_ms = min(SPEECH_CHUNK_MS, quiet_chunk_ms)
        for what, ms in (("quiet", quiet_chunk_ms), ("speech", speech_chunk_ms)):
            if ms not in CHUNK_CHOICES_MS:
                raise ValueError(f"a {what} chunk is one of {CHUNK_CHOICES_MS} ms, not {ms}")
        if speech_chunk_ms > quiet_chunk_ms:
            raise ValueError(
                f"a speech chunk ({speech_chunk_ms} ms) is larger than a quiet one ({quiet_chunk_ms} ms)"
            )
        return cls(
            quiet_chunk_ms // FRAME_MS,
            (silence_ms + AFTER_SILENCE_MS) // FRAME_MS,
            speech_chunk_ms // FRAME_MS,
        )

    def heard(self, sound: bool) -> None:
        """A caller frame came (`sound`: loud enough, or heard, to be the caller's voice)."""
        if sound:
            self.since_sound = 0
        elif self.since_sound is not None and self.since_sound <= self.after_sound_frames:
            self.since_sound += 1

    def send_now(self, sound: bool, unsent: int) -> bool:
        """A caller frame came (as `heard`); `unsent` frames are waiting, this one included. True: send them
        all now, as one message."""
        self.heard(sound)
        speaking_lately = self.since_sound is not None and self.since_sound <= self.after_sound_frames
        return unsent >= (self.speech_frames if speaking_lately else self.quiet_frames)
