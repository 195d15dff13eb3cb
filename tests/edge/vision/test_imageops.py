"""Pure numpy geometry: NMS tables, similarity transforms (round trips), sharpness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.vision.imageops import (
    apply_affine,
    laplacian_variance,
    nms,
    similarity_transform,
    square,
)


@pytest.mark.parametrize(
    ("boxes", "scores", "threshold", "mode", "kept"),
    [
        ([], [], 0.5, "union", []),
        ([[0, 0, 10, 10]], [0.9], 0.5, "union", [0]),
        # identical boxes: the better score wins
        ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9], 0.5, "union", [1]),
        # IoU 25/175 = 0.14: both kept at 0.5, one at 0.1
        ([[0, 0, 10, 10], [5, 5, 15, 15]], [0.9, 0.8], 0.5, "union", [0, 1]),
        ([[0, 0, 10, 10], [5, 5, 15, 15]], [0.9, 0.8], 0.1, "union", [0]),
        # a small box inside a big one: IoU 0.25 keeps it, 'min' (overlap 1.0) removes it
        ([[0, 0, 20, 20], [5, 5, 15, 15]], [0.9, 0.8], 0.5, "union", [0, 1]),
        ([[0, 0, 20, 20], [5, 5, 15, 15]], [0.9, 0.8], 0.5, "min", [0]),
        # disjoint boxes all stay, in score order
        ([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], [0.1, 0.3, 0.2], 0.3, "union", [1, 2, 0]),
        # a degenerate (zero-area) box overlaps nothing
        ([[0, 0, 10, 10], [3, 3, 3, 3]], [0.9, 0.8], 0.1, "union", [0, 1]),
    ],
)
def test_nms_table(
    boxes: list[list[float]], scores: list[float], threshold: float, mode: str, kept: list[int]
) -> None:
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    got = nms(b, np.array(scores, dtype=np.float64), threshold, mode)  # type: ignore[arg-type]
    assert got.tolist() == kept


def test_square_keeps_the_centre_and_takes_the_longer_side() -> None:
    out = square(np.array([[10.0, 20.0, 30.0, 60.0]]))
    assert out.tolist() == [[0.0, 20.0, 40.0, 60.0]]


points = st.lists(
    st.tuples(st.floats(-500, 500), st.floats(-500, 500)), min_size=3, max_size=8, unique=True
).filter(lambda p: np.ptp(np.array(p), axis=0).min() > 1.0)


@given(
    pts=points,
    angle=st.floats(-math.pi, math.pi),
    scale=st.floats(0.1, 10),
    tx=st.floats(-1000, 1000),
    ty=st.floats(-1000, 1000),
)
@settings(max_examples=200, deadline=None)
def test_similarity_transform_recovers_a_known_transform(
    pts: list[tuple[float, float]], angle: float, scale: float, tx: float, ty: float
) -> None:
    src = np.array(pts)
    c, s = math.cos(angle), math.sin(angle)
    m_true = np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])
    dst = apply_affine(m_true, src)
    m = similarity_transform(src, dst)
    assert np.allclose(m, m_true, atol=1e-6 * max(1.0, abs(tx), abs(ty), scale))
    # and back: the inverse mapping is recovered too
    back = similarity_transform(dst, src)
    assert np.allclose(apply_affine(back, dst), src, atol=1e-5 * max(1.0, float(np.abs(src).max())))


def test_similarity_transform_never_reflects() -> None:
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mirrored = src * np.array([-1.0, 1.0])
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        ([[0, 0]], [[1, 1]], "N >= 2"),
        ([[0, 0], [1, 1]], [[0, 0], [1, 1], [2, 2]], "two N"),
        ([[3, 3], [3, 3]], [[0, 0], [1, 1]], "coincide"),
    ],
)
def test_similarity_transform_refuses_bad_points(
    src: list[list[float]], dst: list[list[float]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        similarity_transform(np.array(src, dtype=float), np.array(dst, dtype=float))


def test_laplacian_variance_is_zero_when_flat_and_grows_with_detail() -> None:
    flat = np.full((50, 50), 128, np.uint8)
    assert laplacian_variance(flat) == 0.0
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (50, 50)).astype(np.uint8)
    blurred = (
        (noisy[:-1, :-1].astype(np.float32) + noisy[1:, 1:] + noisy[:-1, 1:] + noisy[1:, :-1]) / 4
    ).astype(np.uint8)
    assert laplacian_variance(noisy) > 4 * laplacian_variance(blurred) > 0
    assert laplacian_variance(np.zeros((2, 2), np.uint8)) == 0.0
