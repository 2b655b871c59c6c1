"""A real browser for the tests: Debian's Chromium driven by Playwright (never a downloaded browser).

One browser per test module (starting one costs about a second). Without /usr/bin/chromium the tests skip,
saying why, except in CI (CI set), where they fail: `.ci/run` installs it. Screenshots go to
`test-artifacts/` (or GATEWAY_TEST_ARTIFACTS), kept after the run to be looked at.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]


def artifacts_dir(*parts: str) -> Path:
    """Where screenshots are kept: GATEWAY_TEST_ARTIFACTS, else test-artifacts/ in the checkout."""
    base = Path(os.environ.get("GATEWAY_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def need_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI runs the browser tests: {CHROMIUM} is missing (.ci/run installs Debian's chromium)")
    pytest.skip(f"no {CHROMIUM}: `apt-get install chromium` to run the browser tests")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium, closed at the end."""
    need_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # --no-sandbox: CI and these machines run tests as root, where Chromium's sandbox cannot start.
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, module: str, name: str) -> Path:
    """A full-page screenshot kept as a test artifact."""
    path = artifacts_dir(module) / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
