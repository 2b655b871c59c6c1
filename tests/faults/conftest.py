"""The fault suite: each scenario a caller or an operator was hurt by, with the figure it measures asserted
against a bound (see docs/reliability.md). Every test here is also an e2e test: real sockets, real time."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "faults" in item.path.parts:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.e2e)
