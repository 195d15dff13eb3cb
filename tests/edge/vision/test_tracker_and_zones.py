"""IoU tracker and point-in-polygon."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.vision.imageops import point_in_polygon
from edge.vision.tracker import IouTracker, iou


def box(x: float, y: float, w: float = 100, h: float = 200) -> np.ndarray:
    return np.array([x, y, x + w, y + h], np.float64)


def test_a_person_moving_keeps_one_id_and_a_newcomer_gets_another() -> None:
    tr = IouTracker(timeout_s=1.0)
    ids = [tr.update([box(10 * k, 0)], k * 0.2)[0].id for k in range(10)]
    assert len(set(ids)) == 1
    a, b = tr.update([box(90, 0), box(400, 0)], 2.0)
    assert a.id == ids[0] and b.id != a.id
    # gone longer than the timeout: a new id
    assert tr.update([box(90, 0)], 4.0)[0].id not in (a.id, b.id)


def test_iou_table() -> None:
    a = np.array([[0, 0, 10, 10]], np.float64)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float64)
    assert iou(a, b).round(4).tolist() == [[1.0, 0.3333, 0.0]]
    assert iou(a, np.zeros((0, 4))).shape == (1, 0)


SQUARE = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float64)
CONCAVE = np.array([[0, 0], [10, 0], [10, 10], [5, 4], [0, 10]], np.float64)


@pytest.mark.parametrize(
    ("poly", "x", "y", "inside"),
    [
        (SQUARE, 5, 5, True),
        (SQUARE, 0, 5, True),  # on an edge
        (SQUARE, 10, 10, True),  # a corner
        (SQUARE, 11, 5, False),
        (SQUARE, -0.01, 5, False),
        (CONCAVE, 5, 8, False),  # in the notch
        (CONCAVE, 5, 2, True),
        (CONCAVE, 1, 8, True),
    ],
)
def test_point_in_polygon(poly: np.ndarray, x: float, y: float, inside: bool) -> None:
    assert point_in_polygon(x, y, poly) is inside


@settings(max_examples=200, deadline=None)
@given(st.floats(-20, 20), st.floats(-20, 20))
def test_square_agrees_with_bounds(x: float, y: float) -> None:
    assert point_in_polygon(x, y, SQUARE) == (0 <= x <= 10 and 0 <= y <= 10)
