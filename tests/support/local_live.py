"""Helpers for the local Live backend's tests: a caller's voice and a thin raw Live client.

The caller speaks with the same espeak-ng synthesiser as the backend but another voice (female variant
"f5", which PocketSphinx recognises best among espeak's voices by our measurement), at 16 kHz, with a
little noise so that the signal is not digitally perfect.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets

from gateway.local_live import tts
from tests.support.audio import room_noise

MODEL = "models/gemini-2.5-flash-native-audio-preview-12-2025"
CALLER_VARIANT = "f5"


def caller_speech(text: str, *, rate: int = 16000, lead_s: float = 0.3, tail_s: float = 0.9) -> bytes:
    """What a caller saying ``text`` sounds like: speech with a little room noise before and after."""
    said = tts.synthesize_repeatably(text, rate=rate, variant=CALLER_VARIANT, wpm=150)  # the same every run
    speech = np.frombuffer(said, dtype="<i2")
    rng = np.random.default_rng(len(text))
    noisy = np.clip(speech + rng.normal(0, 20, speech.size), -32768, 32767).astype("<i2").tobytes()
    return room_noise(lead_s, rate) + noisy + room_noise(tail_s, rate, seed=1)


def b64(data: bytes, urlsafe: bool = False) -> str:
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()


def setup_message(**extra: Any) -> dict[str, Any]:
    setup: dict[str, Any] = {
        "model": MODEL,
        "generationConfig": {"responseModalities": ["AUDIO"]},
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
    }
    setup.update(extra)
    return {"setup": setup}


@dataclass
class Received:
    message: dict[str, Any]
    at: float
    binary: bool


@dataclass
class LiveClient:
    """A raw Live client over websockets: JSON in text frames, every server message recorded."""

    ws: Any
    log: list[Received] = field(default_factory=list)

    @classmethod
    async def connect(cls, url: str, setup: dict[str, Any] | None = None) -> LiveClient:
        # No flow control: a test reads what it wants and closes, and a client that paused reading with
        # unread replies queued would not see the server's close frame (close() then waits 10 s).
        ws = await websockets.connect(url, max_size=None, max_queue=None)
        client = cls(ws)
        if setup is not None:
            await client.send(setup)
            first = await client.recv()
            assert first == {"setupComplete": {}}, first
        return client

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        message = json.loads(raw)
        self.log.append(Received(message, time.monotonic(), isinstance(raw, bytes)))
        return message

    async def send_audio(
        self, pcm: bytes, *, rate: int = 16000, chunk_ms: int = 40, pace: float = 0.0, urlsafe: bool = False
    ) -> None:
        """Send PCM in chunks; ``pace`` 1.0 is real time, 0 is as fast as possible."""
        step = rate * chunk_ms // 1000 * 2
        for i in range(0, len(pcm), step):
            await self.send(
                {
                    "realtimeInput": {
                        "audio": {
                            "data": b64(pcm[i : i + step], urlsafe),
                            "mimeType": f"audio/pcm;rate={rate}",
                        }
                    }
                }
            )
            if pace:
                await asyncio.sleep(chunk_ms / 1000 / pace)

    async def until(self, predicate: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Receive until ``predicate(message)``; returns everything received on the way, that one included."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            got.append(message)
            if predicate(message):
                return got

    async def close(self) -> None:
        await self.ws.close()


def is_turn_complete(m: dict[str, Any]) -> bool:
    return bool(m.get("serverContent", {}).get("turnComplete"))


def audio_of(messages: list[dict[str, Any]]) -> bytes:
    out = b""
    for m in messages:
        for part in m.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
            if "inlineData" in part:
                assert part["inlineData"]["mimeType"] == "audio/pcm;rate=24000"
                out += base64.b64decode(part["inlineData"]["data"])
    return out


def texts(messages: list[dict[str, Any]], kind: str) -> str:
    return "".join(m.get("serverContent", {}).get(kind, {}).get("text", "") for m in messages)
