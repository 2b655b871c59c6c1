"""A long call against the local backend that says goAway every few seconds and drops connections at random.

The caller must not notice. What is checked is what the gateway did, as the backend recorded it connection by
connection, never what its recogniser made of the audio (PocketSphinx reads the same replayed words
differently from one run to the next, and a busy machine changes where switches fall):

- every caller frame reached a Live connection, in order and unaltered, with no gap between connections; on
  each new connection the gateway replayed what it had sent since the handle it resumed from: never more
  than it keeps, never anything the resumed session had already heard;
- each connection resumed the session from a handle the connection before it had issued (one session, its
  history carried across every switch), and the gateway logged one switch per new connection;
- the caller lines the gateway logged are Live's transcripts, in order, none of them twice; those it left
  out are replays at the start of a resumed connection or words cut off by a switch (and replayed).

Printed with -s: how much caller audio a connection heard after the handle that the next one resumed from was
issued, yet was not replayed there (the resumed session never heard it). The gateway takes a new connection's
first handle (the server issues it on set-up, before the replay arrives) as covering none of the audio it
replayed there: a connection that resumes from such a handle is sent that replay again, and can transcribe
what a connection two or more back already did (`explained` allows for it).
"""

from __future__ import annotations

import asyncio
import functools
import statistics
from itertools import pairwise

import numpy as np
import pytest

from gateway.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from gateway.call import FRAME_S, MAX_REPLAY_S
from gateway.devtools.simulator import RATE, CallScript, place_call
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.local_live.server import ConnectionRecord
from gateway.local_live.tts import MALE_VARIANT, synthesize_repeatably
from gateway.server import running_gateway
from tests.support.audio import room_noise
from tests.support.gateway import logged, settings_for

pytestmark = pytest.mark.e2e

LINES = [
    "hello there", "my name is john", "the weather is lovely today", "i would like a pizza",
    "what time is it", "thank you very much", "i live in london", "see you later",
]  # fmt: skip
PAUSE_S = 3.0  # after each line
TAIL_S = 2.0  # the caller's line stays open this long after the last pause, then they hang up
GOAWAY_AFTER_S, TIME_LEFT_S = 3.0, 2.0  # every connection is closed by the server at most 5 s after it opened
LINE_FRAME = int(RATE * FRAME_S)  # samples in one caller frame on the phone line
FRAME = 640  # one caller frame as Live gets it: 20 ms at 16 kHz, 16-bit
MAX_REPLAY_FRAMES = int(MAX_REPLAY_S / FRAME_S)


def caller_audio() -> bytes:
    """The lines with pauses, all under quiet room noise: no two 20 ms frames of the call are alike, so where
    each connection's audio sits in the call can be found from its content."""
    speech = b"".join(
        synthesize_repeatably(line, rate=RATE, variant=MALE_VARIANT, wpm=150) + bytes(int(PAUSE_S * RATE) * 2)
        for line in LINES
    ) + bytes(int(TAIL_S * RATE) * 2)
    speech = speech[: len(speech) // (2 * LINE_FRAME) * 2 * LINE_FRAME]  # whole frames
    noise = np.frombuffer(room_noise(len(speech) / 2 / RATE, RATE, seed=7), "<i2")
    mixed = np.frombuffer(speech, "<i2").astype(np.int32) + noise
    return np.clip(mixed, -32768, 32767).astype("<i2").tobytes()


def as_live_gets_it(audio: bytes) -> bytes:
    """The caller's audio after the phone line (mu-law, frame by frame) and the gateway's one resampler."""
    to_16k = Resampler(RATE, 16000)
    step = 2 * LINE_FRAME
    return b"".join(
        to_16k.process(ulaw_to_pcm16(pcm16_to_ulaw(audio[i : i + step]))) for i in range(0, len(audio), step)
    )


def place(audio: bytes, call: bytes) -> int:
    """The frame of the call at which a connection's audio begins. Its first frame may differ from the call's:
    the resampler had just read the newest frame, not the one before the replayed ones; from the second
    frame on the audio is the call's, byte for byte."""
    probe = audio[FRAME : 2 * FRAME]
    at = call.find(probe)
    assert at >= 0 and at % FRAME == 0 and call.find(probe, at + 1) < 0, "not a stretch of the call"
    start = at // FRAME - 1
    assert audio[FRAME:] == call[(start + 1) * FRAME : start * FRAME + len(audio)], "altered or reordered"
    return start


def issued(records: list[ConnectionRecord], handle: str) -> tuple[int, int]:
    """(the connection that issued `handle`, how many frames it had received by then)."""
    for k, record in enumerate(records):
        for kind, value, position in record.sent:
            if kind == "handle" and value == handle:
                return k, position // FRAME
    raise AssertionError(f"handle {handle[:8]}... was never issued")


def accounts(records: list[ConnectionRecord], lines: list[str]) -> str:
    """What each connection sent, in order (handles shortened, positions in frames), and the caller lines
    logged: what a failure of `explained` is to be read from (it depends on where switches fell)."""
    out = [f"caller lines logged: {lines}"]
    for k, record in enumerate(records):
        sent = [
            f"{kind}:{value[:6] if kind == 'handle' else value}@{position // FRAME}"
            for kind, value, position in record.sent
            if kind in ("handle", "transcript")
        ]
        resumed = record.resumed_from[:6] if record.resumed_from else None
        out.append(f"connection {k}: resumed from {resumed}, {len(record.audio) // FRAME} frames: {sent}")
    return "\n".join(out)


def transcripts_after(record: ConnectionRecord, handle: str | None) -> int:
    """How many transcripts a connection sent after it issued `handle`."""
    sent = [(kind, value) for kind, value, _ in record.sent]
    return sum(kind == "transcript" for kind, _ in sent[sent.index(("handle", handle)) + 1 :])


def explained(records: list[ConnectionRecord], lines: list[str]) -> bool:
    """Whether the caller lines the gateway logged are accounted for by the transcripts the connections sent:
    each line is one or more consecutive transcripts of one connection, in order, and no transcript is in two
    lines. Left out may be, on a resumed connection, its first transcripts (replays: no more than
    `replayable`); before a switch, the last ones (words the switch cut off, sent after the handle the next
    connection resumed from, so replayed there); and on the last connection the last ones (on their way
    when the caller hung up)."""
    texts = [r.transcripts for r in records]

    @functools.cache
    def replayable(k: int) -> int:
        """How many transcripts of the connections before k are of audio replayed on k: those the one before
        sent after the handle k resumed from, and, if that handle was the one before's first (issued on
        set-up, before its replay came in: the gateway takes it to cover none of that), those that the one
        before's own replay carried, which k is sent again."""
        if k == 0:
            return 0
        before, handle = records[k - 1], records[k].resumed_from
        first = k - 1 > 0 and [kind_value[:2] for kind_value in before.sent[:1]] == [("handle", handle)]
        return transcripts_after(before, handle) + (replayable(k - 1) if first else 0)

    @functools.cache
    def from_connection(k: int, i: int) -> bool:  # lines[i:] from connection k on
        if k == len(records):
            return i == len(lines)
        return any(within(k, i, skip) for skip in range(min(replayable(k), len(texts[k])) + 1))

    @functools.cache
    def within(k: int, i: int, j: int) -> bool:  # lines[i:] from transcript j of connection k on
        if k == len(records) - 1:
            cut_off = len(texts[k])
        else:
            cut_off = transcripts_after(records[k], records[k + 1].resumed_from)
        if len(texts[k]) - j <= cut_off and from_connection(k + 1, i):
            return True
        return i < len(lines) and any(
            "".join(texts[k][j:m]).strip() == lines[i] and within(k, i + 1, m)
            for m in range(j + 1, len(texts[k]) + 1)
        )

    return from_connection(0, 0)


async def test_a_long_call_survives_goaways_and_dropped_connections(capsys):
    options = LocalLiveOptions(
        goaway_after_s=GOAWAY_AFTER_S, goaway_time_left_s=TIME_LEFT_S, drop_rate_per_s=1 / 12,
        record_connections=True,
    )  # fmt: skip
    transcripts: list[tuple[str, str]] = []
    audio = await asyncio.to_thread(caller_audio)
    async with LocalLiveServer(options=options) as live:
        settings = settings_for(live.url(), AGENT_GREETING="none")

        def observe(_sid: str, role: str, text: str) -> None:
            transcripts.append((role, text))

        async with running_gateway(settings, on_transcript=observe) as url:
            result = await place_call(url, CallScript(audio=audio, trailing_silence_s=0.0))
        records, newest = live.connections, live.store.newest()
    switches = [line for line in logged(capsys) if line["event"] == "live_switched"]
    caller_lines = [text for role, text in transcripts if role == "caller"]

    # Where each connection's audio sits in the call. A connection cut before it had two frames cannot be
    # placed (its one frame may be the odd first one): its neighbours are checked against each other.
    call = as_live_gets_it(audio)
    placed = [k for k, r in enumerate(records) if len(r.audio) >= 2 * FRAME]
    starts = {k: place(bytes(records[k].audio), call) for k in placed}
    ends = {k: starts[k] + len(records[k].audio) // FRAME for k in placed}
    replayed = {b: ends[a] - starts[b] for a, b in pairwise(placed)}  # frames sent to both a and b
    covered = {}  # frame of the call up to which the handle each connection resumed from had heard
    for b in placed[1:]:
        issuer, frames = issued(records, records[b].resumed_from or "")
        if issuer in starts:
            covered[b] = starts[issuer] + frames
    unheard = sum(max(0, starts[b] - covered[b]) for b in covered)
    took = sorted(s["took_s"] for s in switches)
    waits = [t.response_latency for t in result.turns if t.response_latency is not None]
    print(
        f"\n{len(records)} connections ({sum(r.dropped for r in records)} dropped), switch time p50 "
        f"{statistics.median(took) * 1000:.0f} ms, max {took[-1] * 1000:.0f} ms; replayed "
        f"{sum(replayed.values()) * FRAME_S:.1f} s in all, at most {max(replayed.values()) * FRAME_S:.1f} s; "
        f"heard after a handle and not replayed from it: {unheard * FRAME_S:.1f} s; "
        f"{sum(len(r.transcripts) for r in records)} transcripts, {len(caller_lines)} caller lines logged; "
        f"longest wait heard {max(waits, default=0) * 1000:.0f} ms over {len(waits)} answered turns"
    )

    assert result.closed_by == "caller"
    assert result.media_frames_sent == len(audio) // 2 // LINE_FRAME
    assert result.duration_s >= len(audio) / 2 / RATE
    # Switches: one per new connection, every one resumed; the server ends each connection within 5 s.
    assert len(switches) == len(records) - 1 and all(s["resumed"] for s in switches)
    assert len(records) >= result.duration_s // (GOAWAY_AFTER_S + TIME_LEFT_S)

    # One session throughout: each connection resumed from a handle the one before it issued, and the
    # newest handle holds that session's history.
    assert records[0].resumed_from is None
    for before, after in pairwise(records):
        assert after.resumed_from in before.handles
    assert {r.session_id for r in records} == {records[0].session_id}
    assert newest is not None and newest.session_id == records[0].session_id

    # Every caller frame reached Live, unaltered and in order: each connection's audio is one stretch of the
    # call, the first from its start, each next one from no later than where the one before stopped, and
    # everything the caller said (all but the silence while they hang up) reached the last one.
    assert placed[0] == 0 and starts[0] == 0
    tail = round(TAIL_S / FRAME_S)
    assert result.media_frames_sent - tail <= ends[placed[-1]] <= result.media_frames_sent
    # Replayed: what the gateway had sent since the handle the new connection resumed from, so never more
    # than it keeps, and nothing the resumed session had heard when that handle was issued.
    for b, frames in replayed.items():
        assert 0 <= frames <= MAX_REPLAY_FRAMES, (b, frames)
        assert b not in covered or starts[b] >= covered[b], (b, starts[b], covered[b])
    # Exact accounting: Live received every frame once, plus the replayed ones once more.
    received = sum(len(records[k].audio) for k in placed)
    assert received == FRAME * (ends[placed[-1]] + sum(replayed.values()))

    # Transcripts: Live's, each logged once, replays left out (see `explained`).
    assert explained(records, caller_lines), accounts(records, caller_lines)
