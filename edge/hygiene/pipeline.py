"""Per frame: people → their faces → mask and hair-cover probabilities (one worker thread).

1. :class:`~edge.hygiene.people.PersonDetector` finds people in the whole frame;
2. for each person the caller wants (inside a clean zone), MTCNN looks for a face in the upper
   part of the person's box (cheaper than the whole frame, and it cannot pick a neighbour's
   face); the best face inside that part is the person's;
3. the face, made square (:func:`~edge.hygiene.crops.face_square`), goes to the mask classifier
   (``face-mask``, labels mask / without_mask); the head around it
   (:func:`~edge.hygiene.crops.head_box`) to the hair-cover classifier (``hair-cover``).

A person whose face is not found (turned away, too small, hidden) gets no probabilities this
frame: the app does not decide on them (``assessed: false``), it waits for a frame that shows
the face.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from edge.hygiene.crops import crop, face_square, head_box
from edge.hygiene.people import Person, PersonDetector
from edge.vision.face_detector import FaceBox, MtcnnDetector
from edge.vision.manifest import ModelStore
from edge.vision.session import ModelSession

MASK_MODEL = "face-mask"
COVER_MODEL = "hair-cover"
UPPER = 0.6  # share of a person's box (from the top) searched for the face


@dataclass(frozen=True)
class PersonView:
    box: np.ndarray  # [x1, y1, x2, y2] frame pixels
    score: float  # person detector confidence
    face: FaceBox | None = None  # in frame pixels
    mask: float | None = None  # probability of a mask (None: no face seen)
    cover: float | None = None  # probability the hair is covered

    @property
    def assessed(self) -> bool:
        return self.face is not None


class HygienePipeline:
    def __init__(
        self,
        store: ModelStore,
        *,
        threads: int = 1,
        min_person_score: float = 0.3,
        min_face_px: int = 32,
    ) -> None:
        self.people = PersonDetector(store, threads=threads, min_score=min_person_score)
        self.faces = MtcnnDetector(store, threads=threads, min_face_px=min_face_px)
        self.mask = ModelSession(store, MASK_MODEL, threads=threads)
        self.cover = ModelSession(store, COVER_MODEL, threads=threads)

    @property
    def sessions(self) -> tuple[ModelSession, ...]:
        return (self.people.session, *self.faces.sessions, self.mask, self.cover)

    @property
    def model_versions(self) -> dict[str, str]:
        return {s.name: s.identity for s in self.sessions}

    def warm(self) -> None:
        self.people.warm()
        self.faces.warm()
        self.mask.warm()
        self.cover.warm()

    def face_of(self, rgb: np.ndarray, person: Person) -> FaceBox | None:
        """The most confident face in the upper part of the person's box, in frame pixels."""
        x1, y1, x2, y2 = person.box
        w = x2 - x1
        ox, oy = int(max(0, x1 - 0.1 * w)), int(max(0, y1 - 0.1 * w))
        ex, ey = (
            int(min(rgb.shape[1], x2 + 0.1 * w)),
            int(min(rgb.shape[0], y1 + UPPER * (y2 - y1))),
        )
        if ex - ox < 24 or ey - oy < 24:
            return None
        found = self.faces.detect(np.ascontiguousarray(rgb[oy:ey, ox:ex]))
        if not found:
            return None
        best = max(found, key=lambda f: f.score)
        shift = np.array([ox, oy, ox, oy], np.float64)
        return FaceBox(best.box[:4] + shift, best.score, best.landmarks + np.array([ox, oy]))

    def classify(self, bgr: np.ndarray, face: FaceBox) -> tuple[float, float]:
        """(mask probability, hair-cover probability) for one face of a BGR frame."""
        face_rgb = cv2.cvtColor(crop(bgr, face_square(face.box), 224), cv2.COLOR_BGR2RGB)
        mask = float(self.mask.run(face_rgb.astype(np.float32)[None])[0][0][0])
        head = crop(bgr, head_box(face.box), 64)
        cover = float(self.cover.run(head.astype(np.float32)[None])[0][0][0])
        return mask, cover

    def analyse(
        self, bgr: np.ndarray, wanted: Callable[[np.ndarray], bool] = lambda box: True
    ) -> list[PersonView]:
        """Every person found; faces and classifiers only for those ``wanted(box)`` accepts."""
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        views: list[PersonView] = []
        for person in self.people.detect(bgr):
            if not wanted(person.box):
                views.append(PersonView(person.box, person.score))
                continue
            face = self.face_of(rgb, person)
            if face is None:
                views.append(PersonView(person.box, person.score))
                continue
            mask, cover = self.classify(bgr, face)
            views.append(PersonView(person.box, person.score, face, mask, cover))
        return views
