"""CenterNet decoding (pure numpy) and the person detector on real photos."""

from __future__ import annotations

import cv2
import numpy as np

from edge.hygiene.people import PersonDetector, decode
from edge.vision.manifest import ModelStore


def test_decode_turns_peaks_into_frame_boxes() -> None:
    peaks = np.zeros((128, 128, 80), np.float32)
    wh = np.zeros((128, 128, 4), np.float32)
    peaks[64, 32, 0] = 0.8  # a person centred at (128, 256) input pixels
    wh[64, 32] = [20, 100, 30, 120]
    peaks[10, 10, 5] = 0.9  # another class: ignored
    peaks[100, 100, 0] = 0.1  # under min_score
    (p,) = decode(peaks, wh, 1024, 512, 0.3)
    assert p.score == np.float32(0.8)
    assert p.box.tolist() == [(128 - 20) * 2, (256 - 100) * 1, (128 + 30) * 2, (256 + 120) * 1]


def test_decode_drops_a_box_nested_in_a_better_one() -> None:
    peaks = np.zeros((128, 128, 1), np.float32)
    wh = np.zeros((128, 128, 4), np.float32)
    peaks[60, 60, 0], wh[60, 60] = 0.7, [40, 100, 40, 100]  # whole body
    peaks[40, 60, 0], wh[40, 60] = 0.5, [10, 10, 10, 10]  # the head alone
    assert len(decode(peaks, wh, 512, 512, 0.3)) == 1
    assert decode(peaks, wh, 512, 512, 0.95) == []


def test_people_found_in_real_photos(model_store: ModelStore) -> None:
    det = PersonDetector(model_store)
    for name, at_least in (("obama.jpg", 1), ("sample1.jpg", 3)):
        img = cv2.imread(str(model_store.asset(name)))
        assert img is not None
        assert len(det.detect(img)) >= at_least, name
    assert det.detect(np.full((480, 640, 3), 128, np.uint8)) == []
