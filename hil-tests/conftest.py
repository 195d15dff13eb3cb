"""Fixtures for hardware-in-the-loop scenarios (helpers live in ``hil.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hil import Subscriber

from sim.localsite import Proc


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "hil-tests" in str(item.path):
            item.add_marker(pytest.mark.hil)


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[[int], Subscriber]]:
    made: list[Subscriber] = []

    def make(port: int) -> Subscriber:
        s = Subscriber(port)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; stopped by PID at the end whatever happens."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()
