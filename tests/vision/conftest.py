"""Fixtures for tests that need the built models (``make test`` runs ``make models`` first)."""

from __future__ import annotations

import pytest

from edge.vision.manifest import ModelError, ModelStore


@pytest.fixture(scope="session")
def model_store() -> ModelStore:
    try:
        return ModelStore()
    except ModelError as err:
        pytest.fail(f"{err.for_humans()}\n(the vision tests need 'make models')")
