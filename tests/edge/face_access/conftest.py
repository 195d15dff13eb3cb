"""Fixtures of the face tests (``model_store`` comes from the root conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.vision.manifest import ModelStore
from tests.edge.face_access.harness import Harness, make_harness


@pytest.fixture
async def harness(
    tmp_path: Path, model_store: ModelStore, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    """A running face_access app with p-obama enrolled (``indirect`` params override config)."""
    async for h in make_harness(tmp_path, model_store, getattr(request, "param", {})):
        yield h
