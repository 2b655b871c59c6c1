"""The softphone's browser: Debian's Chromium driven by Playwright (sync), its microphone a WAV file.

The console's browser tests use the async helpers of `tests/support/browser.py` (which browser, skip or fail
without it, where screenshots go); the softphone's tests drive the browser from plain functions (sync
Playwright, beside a gateway process) and give it a microphone.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from gateway.devtools.wavfile import write_wav
from gateway.local_live import tts
from tests.support.browser import CHROMIUM, need_chromium
from tests.support.processes import clean_env, free_port, start_gateway, wait_until_serving

CALLER_VARIANT = "f5"  # the espeak-ng voice PocketSphinx hears best (tests/support/local_live.py)


def caller_wav(path: Path, parts: list[tuple[float, str]], rate: int = 16000) -> Path:
    """A caller's microphone as a WAV file: each part is (seconds of silence before, words said), made with
    espeak-ng now. A little noise keeps the signal from being digitally perfect."""
    rng = np.random.default_rng(0)
    chunks = []
    for silence_s, words in parts:
        chunks.append(np.zeros(int(silence_s * rate), dtype=np.int16))
        if words:
            speech = tts.synthesize(words, rate=rate, variant=CALLER_VARIANT, wpm=150)
            chunks.append(np.frombuffer(speech, "<i2"))
    samples = np.concatenate(chunks).astype(np.float64) + rng.normal(0, 8, sum(c.size for c in chunks))
    write_wav(path, np.clip(samples, -32768, 32767).astype("<i2").tobytes(), rate)
    return path


@contextmanager
def chromium(microphone: Path) -> Iterator[Any]:
    """A headless Chromium whose microphone plays `microphone` (looped), permission granted."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",  # root, as CI runs the tests: Chromium's sandbox cannot start
                "--disable-dev-shm-usage",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def gateway_serving(directory: Path, **env: str) -> Iterator[str]:
    """`gateway serve` (the local backend unless `env` says otherwise) as a process of its own, its records
    and log in `directory`; yields its base URL, stops it at the end."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"DATABASE_URL": f"sqlite:///{directory / 'calls.db'}", **env}
    proc = start_gateway(
        clean_env(PORT=str(port), DEVELOPMENT_MODE="true", **env), directory, directory / "log"
    )

    async def serving() -> None:
        async with httpx.AsyncClient() as client:
            await wait_until_serving(client, url, proc, directory / "log", 60)

    try:
        asyncio.run(serving())
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
