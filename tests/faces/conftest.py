"""Fixtures for tests that need the built models (``make test`` runs ``make models`` first)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.faces.pipeline import FacePipeline
from edge.vision.manifest import ModelError, ModelStore
from tests.faces.harness import Harness, make_harness


@pytest.fixture(scope="session")
def model_store() -> ModelStore:
    try:
        return ModelStore()
    except ModelError as err:
        pytest.fail(f"{err.for_humans()}\n(the vision tests need 'make models')")


@pytest.fixture(scope="session")
def pipeline(model_store: ModelStore) -> FacePipeline:
    p = FacePipeline(model_store)
    p.warm()
    return p


@pytest.fixture
async def harness(
    tmp_path: Path, model_store: ModelStore, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    """A running face_access app with p-obama enrolled (``indirect`` params override config)."""
    async for h in make_harness(tmp_path, model_store, getattr(request, "param", {})):
        yield h
