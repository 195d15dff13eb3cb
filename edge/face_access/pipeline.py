"""The face pipeline: quality checks, alignment, liveness and embedding around the detector.

Every step is a plain synchronous method on numpy arrays; the app runs them from its own worker
thread so the event loop never waits on a model.

- quality: the face must be at least ``min_face_px`` across, sharp enough (variance of the
  Laplacian of the aligned grey chip at least ``min_sharpness``) and roughly frontal (``yaw`` and
  ``roll`` estimated from the five landmarks within limits). A face that fails is not matched: a
  blurred or turned face gives embeddings that are neither close nor far, which is where wrong
  decisions come from.
- align: a similarity transform maps the five landmarks onto where dlib's
  ``get_face_chip_details(size=150, padding=0.25)`` puts the same points of its mean face, and
  the 150x150 chip is resampled (the embedding net was trained on such chips).
- liveness (passive): the two small classifiers of :mod:`edge.face_access.liveness.passive` on
  the box made square and enlarged 1.4x; their mean score is higher-is-live. The active
  challenge (blinks, head turns, planarity) runs over the following frames, in the app.
- embed: the chip through the dlib ResNet: 128 numbers; people are compared by L2 distance.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.face_access.liveness.models import LivenessModels
from edge.face_access.liveness.passive import PassiveScores
from edge.vision.face_detector import FaceBox, MtcnnDetector
from edge.vision.imageops import laplacian_variance, similarity_transform
from edge.vision.manifest import ModelStore
from edge.vision.session import ModelSession

CHIP = 150
# dlib's mean face (points 17-67 of the 68-point model, get_face_chip_details) reduced to the
# five MTCNN points: eye centres are the means of points 36-41 and 42-47, the nose tip point 30,
# the mouth corners points 48 and 54; mapped with padding 0.25 into a 150-pixel chip:
# ((0.25 + mean) / 1.5) * 150.
_MEAN_5 = np.array(
    [
        [0.225492, 0.215990],
        [0.754761, 0.215990],
        [0.490127, 0.515625],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ]
)
CHIP_LANDMARKS = (0.25 + _MEAN_5) / 1.5 * CHIP
EMBEDDING_MODEL = "dlib-resnet-embedding"


@dataclass(frozen=True)
class QualitySettings:
    min_face_px: int = 60
    min_sharpness: float = 15.0
    max_yaw_deg: float = 30.0
    max_roll_deg: float = 25.0


@dataclass(frozen=True)
class Quality:
    face_px: float
    sharpness: float
    yaw_deg: float
    roll_deg: float
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class FaceAnalysis:
    """What the pipeline found for the main (largest) face of one image."""

    faces: int
    face: FaceBox | None = None
    quality: Quality | None = None
    passive: PassiveScores | None = None
    embedding: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


def pose(landmarks: np.ndarray) -> tuple[float, float]:
    """Rough (yaw, roll) in degrees from five landmarks.

    Roll is the angle of the line between the eyes. Yaw comes from how far the nose sits from
    the middle of the eyes, relative to half the eye distance (0 frontal, ±1 nose over an eye);
    ``asin`` of that ratio is a coarse angle, good enough to refuse a face turned away.
    """
    le, re, nose = landmarks[0], landmarks[1], landmarks[2]
    dx, dy = re - le
    roll = math.degrees(math.atan2(dy, dx))
    eye_dist = math.hypot(dx, dy)
    if eye_dist < 1e-6:
        return 90.0, roll
    axis = np.array([dx, dy]) / eye_dist
    offset = float(np.dot(nose - (le + re) / 2, axis)) / (eye_dist / 2)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, offset))))
    return yaw, roll


class FacePipeline:
    def __init__(
        self,
        store: ModelStore,
        *,
        threads: int = 1,
        quality: QualitySettings | None = None,
        detector_min_face_px: int | None = None,
        liveness: bool = True,
    ) -> None:
        self.settings = quality or QualitySettings()
        self.detector = MtcnnDetector(
            store,
            threads=threads,
            min_face_px=detector_min_face_px or max(20, self.settings.min_face_px * 2 // 3),
        )
        self.embedder = ModelSession(store, EMBEDDING_MODEL, threads=threads)
        self.liveness = LivenessModels(store, threads=threads) if liveness else None

    @property
    def sessions(self) -> tuple[ModelSession, ...]:
        extra = self.liveness.sessions if self.liveness is not None else ()
        return (*self.detector.sessions, self.embedder, *extra)

    @property
    def model_versions(self) -> dict[str, str]:
        return {s.name: s.identity for s in self.sessions}

    @property
    def embedding_model(self) -> str:
        return self.embedder.identity

    def warm(self) -> None:
        self.detector.warm()
        self.embedder.warm()
        if self.liveness is not None:
            self.liveness.warm()

    # -- steps -------------------------------------------------------------------------------
    def align(self, rgb: np.ndarray, face: FaceBox) -> np.ndarray:
        m = similarity_transform(face.landmarks, CHIP_LANDMARKS)
        chip: np.ndarray = cv2.warpAffine(
            rgb, m, (CHIP, CHIP), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return chip

    def quality(self, face: FaceBox, chip: np.ndarray) -> Quality:
        s = self.settings
        yaw, roll = pose(face.landmarks)
        grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
        sharp = laplacian_variance(grey[25:125, 25:125])
        problems = []
        if face.size < s.min_face_px:
            problems.append(f"face {face.size:.0f} px < {s.min_face_px} px")
        if sharp < s.min_sharpness:
            problems.append(f"blurred (sharpness {sharp:.0f} < {s.min_sharpness:.0f})")
        if abs(yaw) > s.max_yaw_deg:
            problems.append(f"turned away (yaw {yaw:.0f}°)")
        if abs(roll) > s.max_roll_deg:
            problems.append(f"tilted (roll {roll:.0f}°)")
        return Quality(face.size, sharp, yaw, roll, tuple(problems))

    def embed(self, chip: np.ndarray) -> np.ndarray:
        out = self.embedder.run(chip.astype(np.float32)[None])[0][0]
        result: np.ndarray = out.astype(np.float32)
        return result

    def analyse(
        self, rgb: np.ndarray, *, liveness: bool = True, require_quality: bool = True
    ) -> FaceAnalysis:
        """Detect, then check, align, (liveness) and embed the largest face."""
        t0 = time.perf_counter()
        faces = self.detector.detect(rgb)
        t1 = time.perf_counter()
        result = FaceAnalysis(faces=len(faces), timings_ms={"detect": (t1 - t0) * 1000})
        if not faces:
            return result
        face = max(faces, key=lambda f: f.size)
        result.face = face
        chip = self.align(rgb, face)
        result.quality = self.quality(face, chip)
        t2 = time.perf_counter()
        result.timings_ms["align"] = (t2 - t1) * 1000
        if require_quality and not result.quality.ok:
            return result
        if liveness and self.liveness is not None:
            result.passive = self.liveness.passive.scores(rgb, face.box)
        t3 = time.perf_counter()
        result.timings_ms["liveness"] = (t3 - t2) * 1000
        result.embedding = self.embed(chip)
        result.timings_ms["embed"] = (time.perf_counter() - t3) * 1000
        return result
