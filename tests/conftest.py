"""Fixtures shared by every test module. Helpers live in tests/support, not here."""

from __future__ import annotations

import pytest

from gateway.logs import configure_logging


@pytest.fixture(autouse=True, scope="session")
def _logging() -> None:
    configure_logging("json", "info")
