"""Which client messages a resumption handle covers (transparent resumption, Vertex AI). Pure; no I/O.

With `sessionResumption.transparent` the service sends, with each handle, `lastConsumedClientMessageIndex`:
the last message of this connection (the setup is message 0) whose content the resumable state holds, so the
client replays exactly the messages after it. For the local backend a message is in the state once its audio
has gone through the VAD and can no longer become part of an utterance that is not in the history yet: an
utterance under way, or the pre-roll the VAD keeps before it decides that speech started (an utterance takes
that audio along). Messages are never claimed early: a switch may replay a little silence, never lose speech.
"""

from __future__ import annotations

import threading
from collections import deque


class ConsumedLedger:
    """Fed by the session's input thread, read by the event loop when a handle is issued."""

    def __init__(self, preroll_s: float) -> None:
        self.preroll_s = preroll_s
        self._processed: deque[tuple[int, float]] = deque()  # (message index, audio seconds after it)
        # Where each utterance not yet in the history may begin (the input thread may have started a second
        # one before the event loop took the first in).
        self._starts: deque[float] = deque()
        self._consumed = 0  # the setup
        self._lock = threading.Lock()

    def processed(self, index: int, audio_s: float) -> None:
        """Message `index` went through the VAD; `audio_s` is the session's audio time after it."""
        with self._lock:
            self._processed.append((index, audio_s))

    def speech_started(self, audio_s: float) -> None:
        """The VAD decided speech started in audio after time `audio_s`: its pre-roll goes with it."""
        with self._lock:
            self._starts.append(audio_s - self.preroll_s)

    def speech_ended(self) -> None:
        """The oldest utterance under way is in the history now."""
        with self._lock:
            if self._starts:
                self._starts.popleft()

    def consumed(self, audio_s: float) -> int:
        """The last message the state holds, at audio time `audio_s` (never goes back)."""
        with self._lock:
            limit = self._starts[0] if self._starts else audio_s - self.preroll_s
            while self._processed and self._processed[0][1] <= limit:
                self._consumed = max(self._consumed, self._processed.popleft()[0])
            return self._consumed
