"""How much of the caller's audio goes to Live in one message.

Lines carry a frame every 20 ms, speech or not, and each message to Live costs a send (a system call, the
WebSocket framing, a wake-up of the event loop): the largest single item of a call's CPU. Live takes chunks of
20 to 100 ms. While the caller may be speaking, and for a while after, every frame goes at once: Live's
detector hears the start and the end of speech without delay, so neither barge-in nor the reply waits. In a
longer quiet (the caller listening to the agent, or thinking) frames are sent several together: nothing
there is waiting on them, and the first sound sends what is held with it, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAME_MS = 20
# Frames keep going one by one this long after the caller's last sound, beyond the silence Live's detector
# waits for to end a turn (`silenceDurationMs`), so the end of a turn is heard on time.
AFTER_SILENCE_MS = 700
MAX_QUIET_CHUNK_MS = 100  # the largest chunk the Live API reference calls usual
# A frame whose peak is above this (PCM16; about -44 dBFS) is not quiet: the soft start of a word goes frame
# by frame. Digital silence and a quiet line's idle noise stay below it; a noisy line goes frame by frame,
# as every line did before (no saving there, and no harm).
QUIET_PEAK = 200


@dataclass
class CallerChunks:
    """The rule, for one call. `quiet_frames` frames per message in a quiet (1: every frame as it comes)."""

    quiet_frames: int = MAX_QUIET_CHUNK_MS // FRAME_MS
    after_sound_frames: int = (500 + AFTER_SILENCE_MS) // FRAME_MS
    since_sound: int | None = None  # frames since the caller's last sound (None: no sound yet)

    @classmethod
    def of_ms(cls, quiet_chunk_ms: int, silence_ms: int) -> CallerChunks:
        """The rule for a chunk of `quiet_chunk_ms` (20 to 100) in a quiet, with Live's detector ending a turn
        after `silence_ms`."""
        if not FRAME_MS <= quiet_chunk_ms <= MAX_QUIET_CHUNK_MS:
            raise ValueError(f"a quiet chunk is {FRAME_MS} to {MAX_QUIET_CHUNK_MS} ms, not {quiet_chunk_ms}")
        return cls(quiet_chunk_ms // FRAME_MS, (silence_ms + AFTER_SILENCE_MS) // FRAME_MS)

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
        return speaking_lately or unsent >= self.quiet_frames
