from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.logs import configure_logging


@pytest.fixture(autouse=True, scope="session")
def _logging() -> None:
    configure_logging("json", "info")


# Call records of tests go to a throw-away SQLite file, not the working directory's default.
_RECORDS_DIR = Path(tempfile.mkdtemp(prefix="gateway-test-records-"))


def settings_for(live_url: str, **env: str):
    """Gateway settings pointed at a test Live peer; no .env file is read."""
    env.setdefault("DATABASE_URL", f"sqlite:///{_RECORDS_DIR / 'calls.sqlite3'}")
    return load_settings({"GEMINI_LIVE_URL": live_url, **env}, env_file=None)
