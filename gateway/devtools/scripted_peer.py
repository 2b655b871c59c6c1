"""A minimal-cost scripted Live peer for load runs: the real Live wire protocol, no recognizer or synthesizer.

It is a WebSocket server at Google's paths that answers `setup` with `setupComplete` (JSON in binary frames,
as Gemini sends it), and stands in for the model with a cheap energy detector on the caller's 16 kHz audio:

* the caller stops talking (a run of quiet frames) -> after a short "thinking" pause, a reply of generated
  24 kHz speech-like audio streamed in chunks faster than real time, then `turnComplete`;
* the caller starts talking while a reply is still streaming -> `interrupted`, then `turnComplete`;
* a user turn in text (the gateway's greeting) -> a reply too;
* after each turn, when the setup asks for session resumption, a resumable `sessionResumptionUpdate`, as
  Live sends one whenever the session can be resumed (not while generating or running a tool), so the
  gateway keeps only the caller's audio since (`PeerOptions.handles=False`: never, the gateway's worst case).

So a load run measures the gateway, not a model. Everything needed to measure latency is stamped on
`time.monotonic()`, which is one clock for every process on the machine, so the load harness can match the
peer's stamps with its own even when the peer runs in another process:

* every `realtimeInput` audio message's arrival (the k-th one is the caller's k-th media frame);
* every reply chunk's send time, per reply turn, and when `interrupted` was sent.

A session is tied to a harness call by DTMF: the harness presses the call's index as digits then `#`, and the
gateway passes each key on as a text turn ("The caller pressed the 7 key ...").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import math
import re
import time
import warnings
from array import array
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway.live.protocol import LIVE_PATH

with warnings.catch_warnings():  # as in gateway.audio: deprecated on 3.11/3.12, audioop-lts on 3.13+
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["PeerOptions", "PeerSessionRecord", "PeerTurn", "ScriptedPeer", "run_scripted_peer"]

LIVE_PATHS = frozenset(LIVE_PATH.format(version=v) for v in ("v1alpha", "v1beta"))
OUT_RATE = 24000
# The gateway hand-builds this exact prefix (live_protocol.audio_message); anything else goes through json.
_AUDIO_PREFIX = '{"realtimeInput":{"audio":{"data":"'
FRAME_BYTES = 640  # 20 ms of 16 kHz PCM16: the caller's frame as the gateway sends it (LIVE_INPUT_RATE)


def _frame_bytes(message: str, data_end: int) -> int:
    """20 ms of PCM16 at the rate an audio message's mimeType gives after its data (16 kHz if none)."""
    at = message.find("rate=", data_end)
    if at < 0:
        return FRAME_BYTES
    digits = message[at + 5 : message.find('"', at)]
    return int(digits) // 50 * 2 if digits.isdigit() and int(digits) >= 50 else FRAME_BYTES


_SETUP_COMPLETE = b'{"setupComplete":{}}'
_INTERRUPTED = b'{"serverContent":{"interrupted":true}}'
_TURN_COMPLETE = b'{"serverContent":{"turnComplete":true}}'
_KEY = re.compile(r"pressed the ([0-9*#]) key")


@dataclass(frozen=True)
class PeerOptions:
    """How the scripted peer hears the end of the caller's speech and paces its replies."""

    speech_rms: float = 300.0  # 16 kHz frame RMS above this is speech (silence from the gateway is ~0)
    end_of_speech_s: float = 0.2  # this much quiet ends the caller's turn
    think_s: float = 0.05  # pause before the reply starts, as a model takes a moment
    chunk_s: float = 0.04  # reply audio per message
    speedup: float = 2.0  # reply streamed this many times faster than real time
    reply_s: tuple[float, float] = (0.8, 2.0)  # reply length range, varied per turn
    handles: bool = True  # a resumable handle after each turn, if the setup asks for resumption


@dataclass
class PeerTurn:
    """One reply: when each chunk was sent, and when it was interrupted (None: it completed)."""

    started: float
    cause: str  # "speech" or "text"
    chunk_times: array = field(default_factory=lambda: array("d"))
    interrupted_at: float | None = None
    completed_at: float | None = None


@dataclass
class PeerSessionRecord:
    """What one Live session saw and did; plain data, so it can cross a process boundary."""

    opened: float
    path: str = ""
    setup_done: float = 0.0
    call_id: int | None = None  # from the DTMF digits, once `#` arrived
    # Arrival of each 20 ms of the caller's audio (a message in a quiet carries several: each counts), and
    # whether it was silent (the harness's pauses are digital silence; the gateway may send them together).
    audio_times: array = field(default_factory=lambda: array("d"))
    audio_silent: array = field(default_factory=lambda: array("b"))
    audio_last: array = field(default_factory=lambda: array("b"))  # the last 20 ms of its message
    audio_messages: int = 0  # realtimeInput audio messages that carried them
    voiced_frames: int = 0
    texts: int = 0
    turns: list[PeerTurn] = field(default_factory=list)
    error: str = ""
    closed: float = 0.0


def speech_like(seconds: float, rate: int, seed: int = 0, amplitude: float = 9000.0) -> np.ndarray:
    """Voiced-speech-like int16: a few harmonics of a wandering pitch under a ~4 Hz syllable envelope."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 120 + 30 * np.sin(2 * math.pi * 0.7 * t + rng.uniform(0, 6.3))
    phase = 2 * math.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in (1, 2, 3, 5, 8))
    envelope = 0.55 + 0.45 * np.sin(2 * math.pi * 4.0 * t + rng.uniform(0, 6.3))
    x = x * envelope
    return (x / np.abs(x).max() * amplitude).astype("<i2")


def _reply_messages(chunk_s: float, seconds: float = 4.0) -> list[bytes]:
    """The reply audio, pre-encoded once as complete Live messages: a reply costs the peer only sends."""
    pcm = speech_like(seconds, OUT_RATE, seed=24).tobytes()
    step = round(chunk_s * OUT_RATE) * 2
    out = []
    for i in range(0, len(pcm) - step + 1, step):
        data = base64.b64encode(pcm[i : i + step]).decode("ascii")
        part = {"inlineData": {"mimeType": f"audio/pcm;rate={OUT_RATE}", "data": data}}
        out.append(json.dumps({"serverContent": {"modelTurn": {"parts": [part]}}}).encode())
    return out


class _Session:
    """One Live session's state machine: caller VAD in, replies out."""

    def __init__(
        self,
        ws: ServerConnection,
        record: PeerSessionRecord,
        options: PeerOptions,
        replies: list[bytes],
        resumption: dict[str, Any] | None = None,
    ) -> None:
        self.ws = ws
        # The setup's sessionResumption (None: not asked for): handles are sent, numbered per session, with
        # the last client message they cover when it asks to be transparent. Setup is client message 0.
        self.resumption = resumption if options.handles else None
        self.client_messages = 1
        self.handles = 0
        self.record = record
        self.options = options
        self.replies = replies
        self.quiet_needed = max(1, round(options.end_of_speech_s / 0.02))
        self.speaking = False
        self.quiet = 0
        self.digits = ""
        self.reply: asyncio.Task[None] | None = None
        self.turn_count = 0

    async def run(self) -> None:
        try:
            async for raw in self.ws:
                now = time.monotonic()  # first: queueing inside this process counts, nothing after it
                self.client_messages += 1
                if isinstance(raw, str) and raw.startswith(_AUDIO_PREFIX):
                    end = raw.find('"', len(_AUDIO_PREFIX))
                    await self._on_audio(raw[len(_AUDIO_PREFIX) : end], now, _frame_bytes(raw, end))
                else:
                    await self._on_other(raw, now)
        except ConnectionClosed:
            pass
        finally:
            if self.reply is not None:
                self.reply.cancel()
            self.record.closed = time.monotonic()

    async def _on_audio(self, b64: str, now: float, frame_bytes: int = FRAME_BYTES) -> None:
        self.record.audio_messages += 1
        try:
            pcm = binascii.a2b_base64(b64)
        except binascii.Error:
            self.record.audio_times.append(now)
            self.record.audio_silent.append(0)
            self.record.audio_last.append(1)
            return
        for start in range(0, max(1, len(pcm)), frame_bytes):  # as Live would: 20 ms at a time
            self.record.audio_last.append(start + frame_bytes >= len(pcm))
            await self._on_frame(pcm[start : start + frame_bytes], now)

    async def _on_frame(self, pcm: bytes, now: float) -> None:
        self.record.audio_times.append(now)
        pcm = pcm[: len(pcm) // 2 * 2]
        self.record.audio_silent.append(not any(pcm))
        voiced = audioop.rms(pcm, 2) > self.options.speech_rms
        if voiced:
            self.record.voiced_frames += 1
            self.quiet = 0
            if not self.speaking:
                self.speaking = True
                if self.reply is not None and not self.reply.done():
                    await self._interrupt()
        elif self.speaking:
            self.quiet += 1
            if self.quiet >= self.quiet_needed:
                self.speaking = False
                self._start_reply("speech")

    async def _on_other(self, raw: str | bytes, now: float) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            await self.ws.close(1007, "invalid JSON")
            return
        realtime = msg.get("realtimeInput") or msg.get("realtime_input") or {}
        if "audio" in realtime:  # audio in another spelling than the gateway's: same handling
            await self._on_audio(str(realtime["audio"].get("data", "")), now)
            return
        text = realtime.get("text")
        content = msg.get("clientContent") or msg.get("client_content")
        if content:
            text = " ".join(p.get("text", "") for t in content.get("turns", ()) for p in t.get("parts", ()))
        if text:
            self.record.texts += 1
            self._on_text(text)

    def _on_text(self, text: str) -> None:
        key = _key_pressed(text)
        if key is None:  # a user turn in words (the greeting): the agent answers it
            self._start_reply("text")
        elif key == "#":
            if self.digits.isdigit():
                self.record.call_id = int(self.digits)
            self.digits = ""
        else:
            self.digits += key

    def _start_reply(self, cause: str) -> None:
        if self.reply is not None and not self.reply.done():
            return  # one reply at a time, as the model does
        turn = PeerTurn(started=time.monotonic(), cause=cause)
        self.record.turns.append(turn)
        self.reply = asyncio.create_task(self._stream_reply(turn))

    async def _stream_reply(self, turn: PeerTurn) -> None:
        opts = self.options
        low, high = opts.reply_s
        # Lengths vary per turn but deterministically, so runs are comparable.
        seconds = low + (high - low) * ((self.turn_count * 0.618034) % 1.0)
        self.turn_count += 1
        chunks = min(len(self.replies), max(1, round(seconds / opts.chunk_s)))
        await asyncio.sleep(opts.think_s)
        pace = opts.chunk_s / opts.speedup
        deadline = time.monotonic()
        for i in range(chunks):
            turn.chunk_times.append(time.monotonic())
            await self.ws.send(self.replies[i])
            deadline += pace
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        turn.completed_at = time.monotonic()
        await self.ws.send(_TURN_COMPLETE)
        await self._send_handle()

    async def _interrupt(self) -> None:
        assert self.reply is not None
        self.reply.cancel()
        turn = self.record.turns[-1]
        turn.interrupted_at = time.monotonic()
        await self.ws.send(_INTERRUPTED)
        await self.ws.send(_TURN_COMPLETE)
        await self._send_handle()

    async def _send_handle(self) -> None:
        """The turn is over: the session can be resumed from here (what Live says whenever it can)."""
        if self.resumption is None:
            return
        self.handles += 1
        update: dict[str, Any] = {"newHandle": f"scripted-{id(self):x}-{self.handles}", "resumable": True}
        if self.resumption.get("transparent"):
            update["lastConsumedClientMessageIndex"] = str(self.client_messages - 1)
        await self.ws.send(json.dumps({"sessionResumptionUpdate": update}).encode())


def _key_pressed(text: str) -> str | None:
    """The key in the gateway's DTMF text turn, or None for any other text."""
    match = _KEY.search(text)
    if match:
        return match.group(1)
    if "pressed" in text:  # worded differently: accept a lone key character
        keys = [c for c in text if c in "0123456789*#"]
        if len(keys) == 1:
            return keys[0]
    return None


class ScriptedPeer:
    """`async with ScriptedPeer() as peer:` then point GEMINI_LIVE_URL at `peer.url()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, options: PeerOptions | None = None) -> None:
        self.host = host
        self.port = port
        self.options = options or PeerOptions()
        self.records: list[PeerSessionRecord] = []
        self._replies = _reply_messages(self.options.chunk_s)
        self._server: Server | None = None

    def url(self, version: str = "v1alpha") -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://{self.host}:{port}" + LIVE_PATH.format(version=version)

    async def __aenter__(self) -> ScriptedPeer:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=_check_path,
            compression=None,
            max_size=2**24,
            ping_interval=None,  # the gateway pings; hundreds of idle timers here would only cost CPU
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def take_records(self) -> list[PeerSessionRecord]:
        """The records so far (finished sessions and live ones), and start a new list."""
        records, self.records = self.records, []
        return records

    async def _handle(self, ws: ServerConnection) -> None:
        record = PeerSessionRecord(opened=time.monotonic(), path=ws.request.path if ws.request else "")
        self.records.append(record)
        try:
            first = json.loads(await ws.recv())
        except (ValueError, ConnectionClosed):
            record.error = "no setup"
            return
        if not isinstance(first, dict) or "setup" not in first:
            record.error = "first message was not setup"
            await ws.close(1007, "the first message must be setup")
            return
        await ws.send(_SETUP_COMPLETE)
        record.setup_done = time.monotonic()
        setup = first["setup"] if isinstance(first["setup"], dict) else {}
        resumption = setup.get("sessionResumption")
        resumption = resumption if isinstance(resumption, dict) else None
        await _Session(ws, record, self.options, self._replies, resumption).run()


def _check_path(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?")[0] not in LIVE_PATHS:
        return connection.respond(HTTPStatus.NOT_FOUND, "not a Live endpoint\n")
    return None


async def run_scripted_peer(host: str, port: int, options: PeerOptions | None = None) -> None:
    """Serve until cancelled (`gateway live-scripted`)."""
    async with ScriptedPeer(host, port, options) as peer:
        print(f"scripted Live peer at {peer.url()}  (GEMINI_LIVE_URL)", flush=True)
        await asyncio.Future()


def add_peer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument(
        "--speedup",
        type=float,
        default=PeerOptions.speedup,
        help="reply audio streamed this many times faster than real time",
    )
    parser.add_argument(
        "--no-handles",
        action="store_true",
        help="never send a session resumption handle (the gateway then keeps its whole replay window)",
    )


def options_from_args(args: argparse.Namespace) -> PeerOptions:
    return PeerOptions(speedup=args.speedup, handles=not args.no_handles)


def summary(records: list[PeerSessionRecord]) -> dict[str, Any]:
    """A few totals, for logs and tests."""
    return {
        "sessions": len(records),
        "identified": sum(r.call_id is not None for r in records),
        "audio_frames": sum(len(r.audio_times) for r in records),
        "turns": sum(len(r.turns) for r in records),
        "interrupted": sum(t.interrupted_at is not None for r in records for t in r.turns),
    }
