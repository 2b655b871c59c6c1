"""The softphone's browser: Debian's Chromium driven by Playwright (sync), its microphone a WAV file.

Browser tests skip when /usr/bin/chromium is missing, except in CI (where `.ci/run` installs it): there they
fail. Screenshots go under `test-artifacts/` (or `GATEWAY_TEST_ARTIFACTS`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.devtools.wavfile import write_wav
from gateway.local_live import tts
from tests.support.processes import REPO, clean_env, free_port, start_gateway, wait_until_serving

CHROMIUM = "/usr/bin/chromium"
CALLER_VARIANT = "f5"  # the espeak-ng voice PocketSphinx hears best (tests/support/local_live.py)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("GATEWAY_TEST_ARTIFACTS", Path(REPO) / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI installs Debian's chromium (.ci/run)")
        pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
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
