"""1:N search equals brute force; the runner-up distance is to another person."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.face_access.gallery import Gallery


@given(n=st.integers(1, 60), people=st.integers(1, 20), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=100, deadline=None)
def test_search_equals_brute_force(n: int, people: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 128)).astype(np.float32) * 0.1
    ids = [f"p{rng.integers(people)}" for _ in range(n)]
    g = Gallery(ids, t)
    q = rng.normal(size=128).astype(np.float32) * 0.1
    d = np.linalg.norm(t - q, axis=1)
    m = g.search(q)
    assert m is not None
    assert m.person == ids[int(np.argmin(d))]
    assert abs(m.distance - d.min()) < 1e-4
    others = [d[i] for i in range(n) if ids[i] != m.person]
    assert (m.second_distance is None) == (not others)
    if others:
        assert m.second_distance is not None and abs(m.second_distance - min(others)) < 1e-4


def test_empty_and_mismatched() -> None:
    assert Gallery.empty().search(np.zeros(128, np.float32)) is None
    assert len(Gallery.empty()) == 0
    import pytest

    with pytest.raises(ValueError, match="2 people"):
        Gallery(["a", "b"], np.zeros((3, 128), np.float32))
