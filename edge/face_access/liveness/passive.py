"""Passive liveness: the two small classifiers ``@vladmandic/human`` ships, on one frame.

Both see the crop human gives them: the face box made square and enlarged 1.4x, RGB/255 —
``human-antispoof`` at 128x128 (a sigmoid, higher is more real) and ``human-liveness`` at 32x32
(softmax over two classes; human reports class 0 as "live"). Their author calls them "tiny, a
quick check", and they are: see ``models/cards/human-liveness.md`` for what they decided on
the attack set. The combined score is their mean; it is what the policies compare with
``passive_limit`` (and ``refuse_below``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.face_access.liveness.mesh import MESH_ENLARGE, crop, square_crop_transform
from edge.vision.manifest import ModelStore
from edge.vision.session import ModelSession

ANTISPOOF_MODEL = "human-antispoof"
LIVENESS_MODEL = "human-liveness"
CROP = 128


@dataclass(frozen=True)
class PassiveScores:
    antispoof: float  # 0-1, higher is more real
    liveness: float  # 0-1, probability of the "live" class

    @property
    def score(self) -> float:
        return (self.antispoof + self.liveness) / 2


class PassiveLiveness:
    def __init__(self, store: ModelStore, *, threads: int = 1) -> None:
        self.antispoof = ModelSession(store, ANTISPOOF_MODEL, threads=threads)
        self.liveness = ModelSession(store, LIVENESS_MODEL, threads=threads)

    @property
    def sessions(self) -> tuple[ModelSession, ...]:
        return (self.antispoof, self.liveness)

    def warm(self) -> None:
        self.antispoof.warm()
        self.liveness.warm()

    def scores(self, rgb: np.ndarray, box: np.ndarray) -> PassiveScores:
        m = square_crop_transform(box, MESH_ENLARGE, CROP)
        x = crop(rgb, m, CROP).astype(np.float32) / 255.0
        small = cv2.resize(x, (32, 32), interpolation=cv2.INTER_AREA)
        real = float(self.antispoof.run(x[None])[0].reshape(-1)[0])
        live = float(self.liveness.run(small[None])[0].reshape(-1)[0])
        return PassiveScores(real, live)
