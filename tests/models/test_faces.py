"""The real faces of the registry photos are committed data: the detector on this machine
still finds exactly them, and a face more or less is reported."""

from __future__ import annotations

import copy

from edge.vision.manifest import ModelStore
from models.train import faces


def test_the_detector_here_finds_exactly_the_committed_faces(model_store: ModelStore) -> None:
    found = faces.detect(model_store, faces.TRAIN_PHOTOS + faces.TEST_PHOTOS)
    assert faces.differences(faces.committed(), found) == []


def test_training_and_measuring_use_other_people() -> None:
    assert not set(faces.TRAIN_PHOTOS) & set(faces.TEST_PHOTOS)
    data = faces.committed()
    assert set(data) == set(faces.TRAIN_PHOTOS + faces.TEST_PHOTOS)
    assert sum(len(data[p]) for p in faces.TRAIN_PHOTOS) == 11
    assert sum(len(data[p]) for p in faces.TEST_PHOTOS) == 13
    for face in (f for found in data.values() for f in found):
        x1, y1, x2, y2 = face["box"]
        assert face["score"] >= faces.MIN_SCORE and min(x2 - x1, y2 - y1) >= faces.MIN_PX


def test_a_face_more_less_or_elsewhere_is_reported() -> None:
    want = faces.committed()
    extra = copy.deepcopy(want)
    extra["obama.jpg"].append({"box": [10.0, 10.0, 100.0, 100.0], "landmarks": [], "score": 0.97})
    assert faces.differences(want, extra) == [
        "obama.jpg: the file has 1 faces, the detector finds 2"
    ]
    moved = copy.deepcopy(want)
    x1, y1, x2, y2 = moved["biden.jpg"][0]["box"]
    moved["biden.jpg"][0]["box"] = [x1 + 60, y1, x2 + 60, y2]
    (line,) = faces.differences(want, moved)
    assert line.startswith("biden.jpg: face [") and "overlaps no detected face" in line
