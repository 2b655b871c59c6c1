from __future__ import annotations

import pytest

from gateway.config import load_settings
from gateway.logs import configure_logging


@pytest.fixture(autouse=True, scope="session")
def _logging() -> None:
    configure_logging("json", "info")


def settings_for(live_url: str, **env: str):
    """Gateway settings pointed at a test Live peer; no .env file is read."""
    return load_settings({"GEMINI_LIVE_URL": live_url, **env}, env_file=None)
