"""Crop geometry, evidence crops (blurred faces, JPEG) and their retention."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.hygiene.crops import crop, face_square, head_box
from edge.hygiene.evidence import EvidenceStore, evidence_crop


def test_head_box_and_face_square_geometry() -> None:
    assert head_box((100, 100, 140, 150)) == (72.5, 62.5, 167.5, 157.5)
    assert face_square((0, 0, 10, 20), margin=0.0) == (-5.0, 0.0, 15.0, 20.0)
    img = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    out = crop(img, (-10, -10, 30, 30), 20)  # outside the image: edge pixels
    assert out.shape == (20, 20, 3) and (out[0, 0] == img[0, 0]).all()


def textured(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_evidence_blurs_the_faces_it_is_given() -> None:
    img = textured(400, 400)
    c = evidence_crop(img, (100, 100, 300, 380), [(150, 120, 230, 200)], max_side=1000)
    assert len(c.blurred) == 1 and c.jpeg[:2] == b"\xff\xd8"
    out = cv2.imdecode(np.frombuffer(c.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert out is not None
    assert out.shape[:2] == (c.height, c.width)
    x1, y1, x2, y2 = c.blurred[0]
    face = cv2.Laplacian(cv2.cvtColor(out[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    rest = cv2.Laplacian(cv2.cvtColor(out[-60:, :], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    assert face < rest / 20
    plain = evidence_crop(img, (100, 100, 300, 380), [(150, 120, 230, 200)], blur=False)
    assert plain.blurred == ()


def test_evidence_is_scaled_and_refuses_an_empty_box() -> None:
    c = evidence_crop(textured(480, 640), (0, 0, 640, 480), [], max_side=160)
    assert max(c.width, c.height) == 160
    with pytest.raises(ValueError, match="outside"):
        evidence_crop(textured(100, 100), (200, 200, 300, 300), [])


def test_store_erases_by_age_then_by_count(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "ev", retention_days=1, max_files=2)
    now = 1_000_000.0
    for i, age_days in enumerate((3, 0.5, 0.4, 0.1)):
        p = store.save(f"e{i}", b"\xff\xd8jpeg")
        os.utime(p, (now - age_days * 86400, now - age_days * 86400))
    gone = sorted(p.name for p in store.purge(now))
    assert gone == ["e0.jpg", "e1.jpg"]  # e0 too old, e1 the oldest beyond 2 files
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["e2.jpg", "e3.jpg"]
