"""Measurements of the registry models the hygiene app uses, on data with known answers.

Run by ``make models`` once per built file (``build/metrics/<model>.json``), like the trained
models' held-out metrics, so the model cards can quote numbers that a test keeps true.

- ``face-mask``: real faces from the registry photos (none of them in its training data), each
  bare (*without_mask*) and with a drawn surgical mask in four colours (*mask*); and generated
  heads (the hair-cover recipe's held-out settings) with and without masks. Per-class precision
  and recall. Drawn masks on real faces are a stand-in for real masked faces, which no registry
  ships: a smoke test, not a field accuracy.
- ``centernet-person``: the factory clip (a real person cut out of a registry photo, walking on a
  generated floor): recall on frames where the whole person is in view, and false detections on
  frames without anyone.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from edge.vision.manifest import ModelStore
from models.train.faces import TEST_PHOTOS, TRAIN_PHOTOS, real_faces
from models.train.recipes import per_class


def face_mask(store: ModelStore) -> dict[str, float]:
    from edge.hygiene import crops
    from edge.vision.session import ModelSession
    from sim.scenes import hygiene as scene

    session = ModelSession(store, "face-mask")

    def p_mask(bgr: np.ndarray, box: crops.Box) -> float:
        rgb = cv2.cvtColor(crops.crop(bgr, crops.face_square(box), 224), cv2.COLOR_BGR2RGB)
        return float(session.run(rgb.astype(np.float32)[None])[0][0][0])

    out: dict[str, float] = {}
    probs, truth = [], []
    faces = real_faces(store, TEST_PHOTOS + TRAIN_PHOTOS)
    for face in faces:
        probs.append(p_mask(face.image, face.box))
        truth.append(0)
        for colour in scene.MASKS:
            img = face.image.copy()
            scene.draw_mask(img, face.box, face.landmarks, colour)
            probs.append(p_mask(img, face.box))
            truth.append(1)
    pred = (np.array(probs) >= 0.5).astype(np.int64)
    for k, v in per_class(pred, np.array(truth), ("without_mask", "mask")).items():
        out[f"real.{k}"] = round(v, 4)
    out["real.faces"] = float(len(faces))
    rng = np.random.default_rng(9100)
    probs, truth = [], []
    size = 192
    fh = size / 1.9
    box = (size / 2 - fh / 2, 0.75 * fh, size / 2 + fh / 2, 0.75 * fh + fh)
    for _ in range(300):
        img, _, masked = scene.sample_head(rng, scene.HELDOUT, size)
        probs.append(p_mask(img, box))
        truth.append(int(masked))
    pred = (np.array(probs) >= 0.5).astype(np.int64)
    for k, v in per_class(pred, np.array(truth), ("without_mask", "mask")).items():
        out[f"generated.{k}"] = round(v, 4)
    return out


def centernet_person(store: ModelStore) -> dict[str, float]:
    from edge.hygiene.people import PersonDetector
    from sim.scenes import hygiene as scene

    person = scene.worker_cutout(store)
    detector = PersonDetector(store)
    steps = (scene.Step(2.0, 0, 0, present=False), scene.Step(6.0, 20, 360))
    hits = frames_with = false = frames_without = 0
    for i, frame in enumerate(scene.factory_frames(person, steps, fps=5.0)):
        found = detector.detect(frame)
        if i < 10:
            frames_without += 1
            false += len(found)
        else:
            frames_with += 1
            hits += int(any(p.box[3] - p.box[1] > 200 for p in found))
    return {
        "clip.person_recall": round(hits / frames_with, 4),
        "clip.false_per_empty_frame": round(false / frames_without, 4),
        "clip.frames": float(frames_with + frames_without),
    }


EVALUATIONS: dict[str, Callable[[ModelStore], dict[str, float]]] = {
    "face-mask": face_mask,
    "centernet-person": centernet_person,
}
