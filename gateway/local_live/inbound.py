"""A session's inbound audio path: resample, VAD, recognition. Synchronous, run off the event loop.

One ``Inbound`` per session, fed in order by that session's input task. It turns audio and activity
signals into ``SpeechStarted`` / ``SpeechEnded`` events; the async session decides what they mean
(barge-in, transcription, reply).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gateway.audio import Resampler, resample_block

from .asr import CallerAdaptation, RecognizerPool, Utterance
from .protocol import VadSettings
from .vad import FRAME_MS, FrameVad, Segmenter, VadParams

PREROLL_MS = 300  # audio kept from before the start decision, so the first syllable reaches the recogniser


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started talking (the VAD committed to speech, or `activityStart`)."""


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The caller stopped talking: what the recognizer made of the utterance, and its length."""

    text: str
    audio_s: float


InboundEvent = SpeechStarted | SpeechEnded


class To16k:
    """Input at any rate -> 16 kHz, with the gateway's streaming resamplers (state kept across chunks, so
    chunk edges add no clicks for the recogniser to trip on); one-shot resampling for odd rates."""

    def __init__(self) -> None:
        self._streams: dict[int, Resampler] = {}

    def __call__(self, pcm: bytes, rate: int) -> bytes:
        if rate == 16000 or not pcm:
            return pcm
        stream = self._streams.get(rate)
        if stream is None:
            try:
                stream = self._streams[rate] = Resampler(rate, 16000)
            except ValueError:  # a ratio the streaming filters do not cover, e.g. 44.1 kHz
                return resample_block(pcm, rate, 16000)
        return stream.process(pcm)


class Inbound:
    """A session's input side: caller audio at any rate -> VAD (or the client's activity markers) ->
    recognizer, as speech events."""

    def __init__(self, settings: VadSettings, pool: RecognizerPool) -> None:
        self.automatic = not settings.disabled
        self._pool = pool
        self._vad = FrameVad() if self.automatic else None
        self._segmenter = Segmenter(VadParams.from_settings(settings))
        self._preroll: deque[bytes] = deque(maxlen=max(1, round(PREROLL_MS / FRAME_MS)))
        self._utterance: Utterance | None = None
        self.audio_in_s = 0.0
        self._to_16k = To16k()
        self._caller = CallerAdaptation()  # the recognizer's adaptation to this caller, across utterances

    def audio(self, pcm: bytes, rate: int) -> list[InboundEvent]:
        pcm = self._to_16k(pcm, rate)
        self.audio_in_s += len(pcm) / 32000
        if not self.automatic:
            # Manual activity: only audio between activityStart and activityEnd counts.
            if self._utterance is not None:
                self._utterance.add(pcm)
            return []
        assert self._vad is not None
        events: list[InboundEvent] = []
        for frame, prob in self._vad.frames(pcm):
            decision = self._segmenter.push(prob)
            if self._utterance is None:
                self._preroll.append(frame)
                if decision == "start":
                    self._utterance = Utterance(self._pool, self._caller)
                    for buffered in self._preroll:
                        self._utterance.add(buffered)
                    self._preroll.clear()
                    events.append(SpeechStarted())
            else:
                self._utterance.add(frame)
                if decision == "end":
                    events.append(self._finish())
        return events

    def _finish(self) -> SpeechEnded:
        utterance, self._utterance = self._utterance, None
        assert utterance is not None
        text = utterance.finish()
        return SpeechEnded(text, utterance.duration_s)

    def activity_start(self) -> list[InboundEvent]:
        if self.automatic or self._utterance is not None:
            return []  # the real service ignores (or rejects) these with automatic VAD; be lenient
        self._utterance = Utterance(self._pool, self._caller)
        return [SpeechStarted()]

    def activity_end(self) -> list[InboundEvent]:
        if self.automatic or self._utterance is None:
            return []
        return [self._finish()]

    def stream_end(self) -> list[InboundEvent]:
        """audioStreamEnd: the caller's audio paused; flush whatever utterance is open."""
        if not self.automatic or self._utterance is None:
            return []
        self._segmenter.reset()
        assert self._vad is not None
        self._vad.reset()
        return [self._finish()]

    def close(self) -> None:
        if self._utterance is not None:
            self._utterance.abandon()
            self._utterance = None
