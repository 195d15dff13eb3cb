"""Fixtures shared by tests/ and hil-tests/: real programs on loopback ports, stopped by PID."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from edge.vision.manifest import ModelError, ModelStore
from sim.localsite import Broker, Postgres, mosquitto_path

# speed is measured by benchmarks, not asserted: no per-example deadline (the suite runs in two
# workers on two cores, where one slow example says nothing about the code)
settings.register_profile("cityedge", deadline=None)
settings.load_profile("cityedge")


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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Postgres]:
    """One throwaway PostgreSQL cluster for the session (``make test`` installs postgresql)."""
    cluster = Postgres.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(postgres_cluster: Postgres, request: pytest.FixtureRequest) -> str:
    """A fresh database in the session's cluster, for one test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return postgres_cluster.create_database(f"{name}_{os.getpid()}")
