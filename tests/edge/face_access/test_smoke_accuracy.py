"""SMOKE TEST of recognition accuracy on the few real photos that registries ship.

This is not an accuracy measurement: there are 3 distinct photos of one person (Obama, US
government portraits, from face_recognition's test images), 1 of another (Biden), and about 20
unlabelled faces in face-api's group photos. It checks that the converted model, the alignment
and the threshold behave as expected on real faces, and records the numbers in the model card.

The threshold is derived from the impostor distribution only: the smallest distance between two
faces known to be different people (faces in the same group photo; the labelled people against
everyone in the group photos; Obama against Biden), less a 5% margin. The configured default
must not be more permissive than that, and the genuine pairs are then checked against it.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from edge.face_access.config import FaceAccessConfig
from edge.face_access.pipeline import FacePipeline, QualitySettings
from edge.vision.manifest import ModelStore
from tests.edge.face_access.scenes import read

LABELLED = {
    "obama.jpg": "obama",
    "obama2.jpg": "obama",
    "obama3.jpg": "obama",
    "biden.jpg": "biden",
}
GROUPS = [f"sample{i}.jpg" for i in range(1, 7)]
MARGIN = 0.05


def embeddings(p: FacePipeline, store: ModelStore, file: str, every_face: bool) -> list[np.ndarray]:
    img = read(store.asset(file))
    scale = min(1.0, 1280 / max(img.shape[:2]))
    rgb = cv2.cvtColor(
        cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
    )
    faces = p.detector.detect(rgb)
    if not every_face:
        faces = [max(faces, key=lambda f: f.size)]
    out = []
    for face in faces:
        chip = p.align(rgb, face)
        if p.quality(face, chip).ok:
            out.append(p.embed(chip))
    return out


@pytest.fixture(scope="module")
def data(model_store: ModelStore) -> tuple[dict[str, list[np.ndarray]], list[list[np.ndarray]]]:
    p = FacePipeline(model_store, quality=QualitySettings(min_face_px=40, max_yaw_deg=35))
    p.warm()
    labelled: dict[str, list[np.ndarray]] = {}
    for file, who in LABELLED.items():
        labelled.setdefault(who, []).extend(embeddings(p, model_store, file, every_face=False))
    groups = [embeddings(p, model_store, f, every_face=True) for f in GROUPS]
    return labelled, groups


def test_smoke_threshold_from_impostors(
    data: tuple[dict[str, list[np.ndarray]], list[list[np.ndarray]]],
) -> None:
    labelled, groups = data
    assert len(labelled["obama"]) == 3 and len(labelled["biden"]) == 1
    group_faces = [e for g in groups for e in g]
    assert len(group_faces) >= 15, "the group photos should give about 20 usable faces"

    impostor = [
        float(np.linalg.norm(a - b)) for g in groups for a, b in itertools.combinations(g, 2)
    ]
    impostor += [
        float(np.linalg.norm(a - b)) for who in labelled.values() for a in who for b in group_faces
    ]
    impostor += [float(np.linalg.norm(a - b)) for a in labelled["obama"] for b in labelled["biden"]]
    genuine = [
        float(np.linalg.norm(a - b)) for a, b in itertools.combinations(labelled["obama"], 2)
    ]

    threshold = min(impostor) * (1 - MARGIN)
    default = FaceAccessConfig.model_fields["threshold"].default
    print(
        f"\nSMOKE TEST (not an accuracy figure): {len(impostor)} impostor pairs, "
        f"min {min(impostor):.3f}, 1% {np.quantile(impostor, 0.01):.3f}, median {np.median(impostor):.3f}; "
        f"{len(genuine)} genuine pairs {sorted(round(g, 3) for g in genuine)}; "
        f"derived threshold {threshold:.3f}, configured default {default}"
    )
    assert default <= threshold, "the default threshold accepts impostors seen in the smoke set"
    assert max(genuine) <= default, "a genuine pair of the smoke set would be refused"
    assert all(d > default for d in impostor)


def test_liveness_on_the_real_photos_is_recorded(model_store: ModelStore) -> None:
    """The photos are photos: record what the liveness model says about them, assert nothing."""
    p = FacePipeline(model_store)
    p.warm()
    scores = {}
    for file in LABELLED:
        rgb = cv2.cvtColor(read(model_store.asset(file)), cv2.COLOR_BGR2RGB)
        a = p.analyse(rgb, require_quality=False)
        assert a.passive is not None and 0 <= a.passive.score <= 1
        scores[file] = round(a.passive.score, 3)
    print(f"\npassive liveness scores (higher = live) on photos of photos: {scores}")
