"""Fixtures shared by tests/ and hil-tests/: real programs on loopback ports, stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.localsite import Broker, mosquitto_path
from edge.vision.manifest import ModelError, ModelStore


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """The real mosquitto on a free loopback port (``make test`` installs it)."""
    if mosquitto_path() is None:
        pytest.fail("mosquitto is not installed: run 'make sysdeps' (apt-get install mosquitto)")
    broker = Broker.start(tmp_path / "mosquitto")
    yield broker
    broker.proc.stop()


@pytest.fixture(scope="session")
def model_store() -> ModelStore:
    """The built vision models (``make test`` runs ``make models`` first)."""
    try:
        return ModelStore()
    except ModelError as err:
        pytest.fail(f"{err.for_humans()}\n(vision tests need 'make models')")
