"""A call's two sides on one time axis, as the caller heard them: the rules of a recording, pure.

The line tells us when each caller frame arrived and when we queued agent audio; it does not tell us when
the caller heard that audio. A carrier buffers what we send faster than real time and plays it out at its
own pace, so a reply queued in 300 ms is heard over the next few seconds, after whatever was queued before
it, and a `clear` drops whatever had not been heard yet. `Timeline` places both sides on the caller's clock:

- caller frames at line time: a carrier sends the caller's side without a break (silence too), from the
  line's start, so each frame follows the previous one without a seam, the first at the start. When frames
  are read is not when they were sent (jitter, a busy loop, the call still opening Live while the first ones
  wait in the socket), so reading times place nothing, unless a frame is read more than `gap_ms` after the
  previous one: then the line sent nothing meanwhile (a browser's line may pause), and the frame is placed
  where it ends when it was read, with silence before it;
- agent audio where the carrier plays it: from max(now, the end of what was queued before);
- a `clear` at `now` cuts the agent audio not yet heard: everything placed after `now` is dropped;
- silence wherever nobody spoke.

No clock, no I/O: every method is given the time (milliseconds on any monotonic clock), so the rules are
unit-tested in microseconds. Audio is PCM16LE mono at `rate`, both sides (the recorder resamples first).
`take` hands over the stereo samples no later event can change (caller left, agent right), so nothing is
held whole: only what the carrier has yet to play out, and the last moments of the caller's side.
"""

from __future__ import annotations

import numpy as np

# A caller frame read this much later than the previous one leaves a gap (silence): the line sent nothing
# meanwhile. Less than this is jitter, or a loop busy for a moment, not a pause in the line.
GAP_MS = 500.0


class Timeline:
    """The stereo picture of one call (or one instance's part of it), built as events come."""

    def __init__(self, rate: int, start_ms: float, gap_ms: float = GAP_MS) -> None:
        self.rate = rate
        self._origin_ms = start_ms
        self._gap_ms = gap_ms
        self._taken = 0  # samples handed over (both channels): the start of the buffers below
        self._caller = bytearray()  # caller samples from `_taken` on, zeros where the line sent nothing
        self._agent = bytearray()  # agent samples from `_taken` on, zeros where nobody spoke
        self._caller_end = 0  # sample index where the caller's latest frame ends
        self._agent_end = 0  # sample index where the agent audio queued so far will have played out
        self._caller_read_ms: float | None = None  # when the latest caller frame was read

    def _samples(self, ms: float) -> int:
        return round(ms * self.rate / 1000)

    def _at(self, now_ms: float) -> int:
        """The sample index of `now` on the call's axis (never before what was already handed over)."""
        return max(self._samples(now_ms - self._origin_ms), self._taken)

    @property
    def duration_ms(self) -> float:
        """How long the recording is so far, handed over or not."""
        return max(self._taken, self._caller_end, self._agent_end) * 1000 / self.rate

    @property
    def taken_ms(self) -> float:
        return self._taken * 1000 / self.rate

    def caller(self, pcm: bytes, now_ms: float) -> None:
        """A caller frame that arrived at `now`."""
        n = len(pcm) // 2
        paused = self._caller_read_ms is not None and now_ms - self._caller_read_ms > self._gap_ms
        self._caller_read_ms = now_ms
        start = max(self._caller_end, self._taken, self._at(now_ms) - n if paused else 0)
        self._put(self._caller, start, pcm[: n * 2])
        self._caller_end = start + n

    def agent(self, pcm: bytes, now_ms: float) -> None:
        """Agent audio queued on the line at `now`: heard once what was queued before it has played."""
        n = len(pcm) // 2
        start = max(self._at(now_ms), self._agent_end)
        self._put(self._agent, start, pcm[: n * 2])
        self._agent_end = start + n

    def clear(self, now_ms: float) -> None:
        """The line's queue was cleared at `now`: agent audio not heard by then never will be."""
        cut = self._at(now_ms)
        if self._agent_end > cut:
            del self._agent[(cut - self._taken) * 2 :]
            self._agent_end = cut

    @property
    def agent_queued_ms(self) -> float:
        """Agent audio placed after what was handed over: the carrier's queue, as far as we know it."""
        return max(0, self._agent_end - self._taken) * 1000 / self.rate

    def take(self, now_ms: float) -> bytes:
        """The stereo frames that no later event can change, as interleaved PCM16LE (left: caller): up to
        the caller's latest frame (frames still unread go after it), never past `now` (a clear may come).
        A line that stops sending holds the agent's side back only until its call's idle timeout."""
        return self._take_until(min(self._caller_end, self._at(now_ms)))

    def finish(self, now_ms: float) -> bytes:
        """The rest, at the end of the line: the caller's last frame, and agent audio heard by `now` (what
        was still queued when the line closed was never played)."""
        horizon = max(self._caller_end, min(self._agent_end, self._at(now_ms)))
        out = self._take_until(horizon)
        self._agent.clear()
        self._agent_end = min(self._agent_end, self._taken)
        return out

    def _take_until(self, horizon: int) -> bytes:
        n = horizon - self._taken
        if n <= 0:
            return b""
        out = np.zeros(2 * n, dtype="<i2")
        for channel, buf in ((0, self._caller), (1, self._agent)):
            have = min(len(buf) // 2, n)
            if have:
                out[channel : 2 * have : 2] = np.frombuffer(buf, dtype="<i2", count=have)
            del buf[: have * 2]
        self._taken = horizon
        return out.tobytes()

    def _put(self, buf: bytearray, start: int, pcm: bytes) -> None:
        """Write `pcm` at sample `start` (never before the buffer's end: each side only moves forward)."""
        offset = (start - self._taken) * 2
        if offset > len(buf):
            buf.extend(bytes(offset - len(buf)))
        buf.extend(pcm)
