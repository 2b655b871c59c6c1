"""CPU per 20 ms frame on the gateway's whole per-frame path, both directions, without sockets.

Inbound:  Twilio `media` JSON -> parse -> mu-law 8k decoded to PCM16 (the line) -> the call's per-frame
          state -> PCM 16k -> Live `realtimeInput` JSON.
Outbound: Live `serverContent` JSON (24 kHz PCM) -> parse -> the call's per-frame state -> PCM 8k ->
          mu-law (the line) -> Twilio `media` JSON.

Each step is what `TwilioLine` (gateway/twilio/line.py) and `Call` (gateway/call/call.py) do per frame:
`receive` / `play` of the line, `_caller_to_agent` + `_watch_for_stall` + `_send_caller_audio` and
`_relay` + `_play` of the call, called directly, without the awaits around them (in a running event loop, as
the stall watch moves the relay's `asyncio.timeout`). The "codec and protocol only" rows leave out the
call's state and bookkeeping (`CallState`, `SpeechEnd`, `CallStats`), so the cost of those shows as the
difference. Socket I/O and the event loop are measured by the load harness (benchmarks/bench_load.py).
Run: python benchmarks/bench_frame_path.py
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
from machine import describe

from gateway.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from gateway.call.call import LIVE_OUTPUT_RATE, CallStats
from gateway.call.line import CallerAudio
from gateway.call.state import CallState
from gateway.live import protocol as lp
from gateway.metrics import SpeechEnd
from gateway.twilio import protocol as tp
from gateway.twilio.line import NARROWBAND

FRAMES = 20_000
STREAM_SID = "MZ" + "0" * 32
INPUT_RATE = 16000  # Live's input rate, as the Call is configured by default


def speech_like(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * math.pi * f * t) / k for k, f in enumerate((220, 470, 910, 1800, 3100), 1))
    return (x / np.abs(x).max() * 12000).astype("<i2").tobytes()


def measure(step: Callable[[object], object], inputs: list) -> tuple[float, float]:
    samples = []
    for item in inputs:
        t0 = time.perf_counter_ns()
        step(item)
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


# --- caller -> agent -------------------------------------------------------------------------------------


def inbound_path(live_wait: asyncio.Timeout) -> Callable[[str], str | None]:
    """TwilioLine.receive, then Call._caller_to_agent (with _watch_for_stall on a loud frame) and
    _send_caller_audio, for one `media` message. `live_wait` stands for the relay loop's timeout."""
    stats, state, speech_end = CallStats(), CallState(), SpeechEnd()
    resampler = Resampler(NARROWBAND.in_rate, INPUT_RATE)
    state.resumption.heard(time.monotonic())  # Live has spoken (the greeting): the stall watch is on
    loop = asyncio.get_running_loop()
    watched_at = 0.0  # Call._watched_at
    sent = [0]  # client messages sent on the connection (LiveSession.next_index - 1)

    def watch_for_stall() -> None:
        """Call._watch_for_stall, line for line (a call per loud frame, as in the Call)."""
        nonlocal watched_at
        wait, sound_at = live_wait, speech_end.last_voice
        if wait is None or sound_at is None or sound_at - watched_at < 1.0:
            return  # on most loud frames
        watched_at = sound_at
        wait_s, _reason = state.resumption.wait(time.monotonic(), sound_at)
        if wait_s is None:
            return
        when = loop.time() + wait_s
        scheduled = wait.when()
        if scheduled is None or when < scheduled or when - scheduled > 1.0:
            wait.reschedule(when)

    def step(msg: str) -> str | None:
        # The line: parse, check the stream, decode mu-law to PCM at the line's rate.
        event = tp.parse(msg)
        sid = getattr(event, "stream_sid", "")
        if sid and STREAM_SID and sid != STREAM_SID:
            raise tp.ProtocolError("streamSid is not this stream's")
        assert isinstance(event, tp.Media)
        audio = CallerAudio(ulaw_to_pcm16(event.payload))
        # The call: count, watch for the end of speech (and, on a loud frame, for a stalled Live), keep
        # for replay, resample, Live's message.
        assert isinstance(audio, CallerAudio)
        stats.frames_in += 1
        if speech_end.frame(audio.pcm):
            watch_for_stall()
        if state.resumption.keep(audio.pcm):
            message = lp.audio_message(resampler.process(audio.pcm), INPUT_RATE)
            sent[0] += 1  # LiveSession.send numbers it; the Call notes which frame went in it
            state.resumption.frame_sent(sent[0], state.resumption.last_kept_seq)
            return message
        return None

    return step


def inbound_core() -> Callable[[str], str]:
    """The same codec and protocol work, none of the call's state."""
    resampler = Resampler(NARROWBAND.in_rate, INPUT_RATE)

    def step(msg: str) -> str:
        event = tp.parse(msg)
        assert isinstance(event, tp.Media)
        return lp.audio_message(resampler.process(ulaw_to_pcm16(event.payload)), INPUT_RATE)

    return step


# --- agent -> caller -------------------------------------------------------------------------------------


def outbound_path() -> Callable[[bytes], None]:
    """Call._relay (one Live message) and _play for its audio, then TwilioLine.play."""
    stats, state, speech_end = CallStats(), CallState(), SpeechEnd()
    resampler = Resampler(LIVE_OUTPUT_RATE, NARROWBAND.out_rate)

    def step(msg: bytes) -> None:
        # The call's relay loop, once per Live message: a goAway pending? how long may the receive wait
        # (goAway deadline, stall)? The connection has spoken.
        if state.switch_now():
            raise AssertionError("no goAway in this benchmark")
        state.resumption.wait(time.monotonic(), speech_end.last_voice)
        state.resumption.heard(time.monotonic())
        for event in lp.parse_server_message(msg):
            if not isinstance(event, lp.AgentAudio):
                continue
            if not state.agent_audio():  # an interrupted turn's late audio: dropped
                continue
            out = resampler.process(event.pcm)
            if out:
                state.playout.audio_sent()  # True once per turn (metrics and a log line then)
                stats.frames_out += 1
                stats.bytes_out += len(out)
                # The line: encode to mu-law, Twilio's message.
                tp.media_message(STREAM_SID, pcm16_to_ulaw(out))

    return step


def outbound_core() -> Callable[[bytes], None]:
    """The same codec and protocol work, none of the call's state."""
    resampler = Resampler(LIVE_OUTPUT_RATE, NARROWBAND.out_rate)

    def step(msg: bytes) -> None:
        for event in lp.parse_server_message(msg):
            if isinstance(event, lp.AgentAudio):
                tp.media_message(STREAM_SID, pcm16_to_ulaw(resampler.process(event.pcm)))

    return step


def live_message(pcm: bytes) -> bytes:
    data = base64.b64encode(pcm).decode()
    part = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}
    return json.dumps({"serverContent": {"modelTurn": {"parts": [part]}}}).encode()


async def main() -> None:
    caller = pcm16_to_ulaw(speech_like(FRAMES * 0.02, 8000))
    sender = tp.TwilioSender(STREAM_SID)
    twilio_msgs = [sender.media(caller[i * 160 : (i + 1) * 160], i * 20) for i in range(FRAMES)]
    agent = speech_like(FRAMES * 0.02, 24000)
    live_msgs = [live_message(agent[i * 960 : (i + 1) * 960]) for i in range(FRAMES)]

    # The relay loop's wait for Live, which the stall watch moves. Nothing awaits while the steps run, so
    # it cannot fire; the timing is the same as the Call's (a Timeout rescheduled in a running loop).
    async with asyncio.timeout(None) as live_wait:  # noqa: ASYNC100 (never meant to fire)
        steps = {
            "inbound": (inbound_path(live_wait), twilio_msgs),
            "inbound_core": (inbound_core(), twilio_msgs),
            "outbound": (outbound_path(), live_msgs),
            "outbound_core": (outbound_core(), live_msgs),
        }
        for step, inputs in steps.values():
            measure(step, inputs[:1000])  # warm up
        figures = {name: measure(step, inputs) for name, (step, inputs) in steps.items()}
        live_wait.reschedule(None)

    print("## Per-frame CPU, whole gateway path (no sockets)\n")
    print(f"Machine: {describe('numpy')}; {FRAMES} frames of 20 ms each way, one thread.\n")
    print("| direction | path | p50 (us/frame) | p99 (us/frame) |")
    print("|---|---|---|---|")
    rows = (
        (
            "inbound",
            "Twilio media JSON -> mu-law 8k -> PCM 8k (line) -> call state, stall watch -> PCM 16k "
            "-> Live JSON",
        ),
        ("outbound", "Live JSON (PCM 24k) -> call state -> PCM 8k -> mu-law 8k (line) -> Twilio media JSON"),
        ("inbound_core", "inbound, codec and protocol only (no call state)"),
        ("outbound_core", "outbound, codec and protocol only (no call state)"),
    )
    for name, path in rows:
        p50, p99 = figures[name]
        print(f"| {name.split('_')[0]} | {path} | {p50:.1f} | {p99:.1f} |")
    in_p50, out_p50 = figures["inbound"][0], figures["outbound"][0]
    state_us = in_p50 + out_p50 - figures["inbound_core"][0] - figures["outbound_core"][0]
    per_call_s = (in_p50 + out_p50) * 50 / 1000
    print(
        f"\nBoth directions at 50 frames/s: {per_call_s:.2f} ms of CPU per call-second on these cores "
        "(protocol, audio and the call's per-frame state; socket I/O and the event loop come on top). "
        f"The call's state and bookkeeping: {state_us:.1f} us per frame pair (p50 difference)."
    )


if __name__ == "__main__":
    asyncio.run(main())
