"""The liveness models of one gate, loaded and warmed once: passive classifiers and landmarks."""

from __future__ import annotations

import numpy as np

from edge.face_access.liveness.challenge import Observation
from edge.face_access.liveness.mesh import RIGID, FaceMesh, Mesh
from edge.face_access.liveness.passive import PassiveLiveness
from edge.vision.manifest import ModelStore
from edge.vision.session import ModelSession


class LivenessModels:
    """The passive classifiers and the landmarker, loaded and warmed once."""

    def __init__(self, store: ModelStore, *, threads: int = 1) -> None:
        self.passive = PassiveLiveness(store, threads=threads)
        self.mesh = FaceMesh(store, threads=threads)

    @property
    def sessions(self) -> tuple[ModelSession, ...]:
        return (*self.passive.sessions, *self.mesh.sessions)

    def warm(self) -> None:
        self.passive.warm()
        self.mesh.warm()

    def observe(self, rgb: np.ndarray, mesh: Mesh, t: float) -> Observation:
        """The challenge's view of a face whose ``mesh`` was found in ``rgb``."""
        right, left = self.mesh.eye_openness(rgb, mesh)
        return Observation(
            t, mesh.yaw_deg, (right + left) / 2, mesh.points[RIGID, :2].copy(), mesh.eye_distance
        )
