"""The models' side of a challenge: one camera frame in, the tracked face observed.

:class:`ChallengeRun` is one attempt on one tracked face, observed through
:class:`~edge.face_access.liveness.models.LivenessModels`. It is blocking and run in the app's worker thread (the
benchmark drives them the same way without an event loop). The caller owns time: it passes each
frame's capture time and tells the challenge when a prompt reached the screen.

Tracking: the face mesh follows the face from frame to frame (as human does): each frame's mesh
is taken in the box of the previous one, re-centred on the mesh it found, keeping the size the
detector gave at the start. A frame whose mesh has no face (presence under ``MIN_PRESENCE``) is
skipped; no sight of the face for ``LOST_S`` fails the attempt (``face_lost``). At the end the
detector runs again on the frame that finished: the face overlapping the tracked box (IoU at
least ``MIN_IOU``) is embedded and compared with the person the attempt started for
(``threshold``): the same person who started must finish.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.face_access.liveness.challenge import Challenge, ChallengeSettings, Outcome
from edge.face_access.liveness.models import LivenessModels
from edge.face_access.pipeline import FacePipeline
from edge.vision.face_detector import FaceBox
from edge.vision.tracker import iou

MIN_IOU = 0.3
MIN_PRESENCE = 0.5
LOST_S = 0.8


@dataclass
class ChallengeRun:
    """One attempt: the challenge, the face it follows and the person it started for."""

    challenge: Challenge
    person: str
    templates: np.ndarray  # K x 128: the enrolled templates of ``person``
    threshold: float
    box: np.ndarray
    last_seen: float
    frames: int = 0
    final_distance: float | None = None
    timings_ms: list[float] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        settings: ChallengeSettings,
        rng: random.Random,
        face: FaceBox,
        person: str,
        templates: np.ndarray,
        threshold: float,
        t: float,
    ) -> ChallengeRun:
        challenge = Challenge.random(settings, rng, t)
        box = face.box[:4].astype(np.float64)
        return cls(challenge, person, np.atleast_2d(templates), threshold, box, t)

    def follow(self, faces: list[FaceBox]) -> FaceBox | None:
        """The face that continues the track, if one overlaps the last box enough."""
        if not faces:
            return None
        overlaps = iou(self.box[None, :4], np.stack([f.box[:4] for f in faces]))[0]
        best = int(np.argmax(overlaps))
        return faces[best] if overlaps[best] >= MIN_IOU else None

    def step(
        self, models: LivenessModels, pipeline: FacePipeline, rgb: np.ndarray, t: float
    ) -> Outcome:
        """Detect, follow, observe one frame; at the end, check who finished."""
        c = self.challenge
        if c.done:
            return c.outcome
        self.frames += 1
        mesh = models.mesh.landmarks(rgb, self.box)
        if mesh.presence < MIN_PRESENCE:
            if t - self.last_seen > LOST_S:
                c.fail("face_lost", f"the face was out of sight for {LOST_S:g} s", t)
            return c.outcome
        x1, y1, x2, y2 = mesh.box()
        half = (self.box[2] - self.box[0]) / 2, (self.box[3] - self.box[1]) / 2
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        self.box = np.array([cx - half[0], cy - half[1], cx + half[0], cy + half[1]])
        self.last_seen = t
        outcome = c.observe(models.observe(rgb, mesh, t))
        if outcome == "passed":
            face = self.follow(pipeline.detector.detect(rgb))
            if face is None:
                c.overrule("face_lost", "no face to check at the end")
                return c.outcome
            embedding = pipeline.embed(pipeline.align(rgb, face))
            distances = np.linalg.norm(self.templates - embedding[None], axis=1)
            self.final_distance = float(distances.min()) if len(distances) else float("inf")
            if self.final_distance > self.threshold:
                c.overrule(
                    "other_person",
                    f"the face that finished is not {self.person} "
                    f"(distance {self.final_distance:.2f} > {self.threshold:g})",
                )
        return c.outcome


def to_rgb(bgr: np.ndarray) -> np.ndarray:
    rgb: np.ndarray = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb
