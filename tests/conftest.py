"""Fixtures and collection hooks shared by every test module. Helpers live in tests/support, not here."""

from __future__ import annotations

import inspect

import pytest

from gateway.logs import configure_logging


@pytest.fixture(autouse=True, scope="session")
def _logging() -> None:
    configure_logging("json", "info")


# Modules whose real-time tests do not carry `pytest.mark.e2e` themselves yet: which of their tests are e2e.
# Each module should mark its own tests (as all others do); then its entry goes.
_NOT_YET_MARKED = {
    "test_simulator.py": lambda item: "serve" in item.fixturenames,  # a scripted gateway, paced in real time
    "test_load.py": lambda item: "running_gateway" in inspect.getsource(item.function),  # calls through one
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        is_e2e = _NOT_YET_MARKED.get(item.path.name)
        if is_e2e is not None and isinstance(item, pytest.Function) and is_e2e(item):
            item.add_marker(pytest.mark.e2e)
