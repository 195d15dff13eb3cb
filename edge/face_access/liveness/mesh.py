"""MediaPipe Face Mesh and Iris (as ``@vladmandic/human`` ships them): landmarks for the challenge.

- :class:`FaceMesh` crops the detector's box made square and enlarged 1.4x (the crop human
  takes from its own detector), runs ``facemesh`` (192x192, RGB/255) and maps the 468 points back
  to image pixels; ``z`` is a relative depth in the same pixel scale (smaller is nearer).
- The eyes: for each eye a square around its two corners, 2.3x the corner distance, through
  ``iris`` (64x64; the subject's left eye mirrored, as the model was trained on right eyes).
  Openness is the mean gap between three upper-lid and three lower-lid points of the iris
  model's refined contour over the corner distance: about 0.25-0.35 open, under 0.1 closed.
- Head turn (yaw) from the 2-D points alone: how far the nose tip sits from the middle of the
  two cheek edges, relative to half their distance. A photo turned on its vertical axis keeps
  that ratio (a plane's features move together); a head does not. The ratio is about
  ``tan(yaw)`` times the nose's depth over the half width, so ``atan`` of it over a typical
  depth gives degrees, good enough to tell a turn from a glance.

Mesh indices follow MediaPipe's canonical face model (``facemeshcoords.ts`` in human): the
subject's right eye is on the image's left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.vision.manifest import ModelStore
from edge.vision.session import ModelSession

MESH_MODEL = "facemesh"
IRIS_MODEL = "iris"
MESH_INPUT = 192
IRIS_INPUT = 64
MESH_ENLARGE = 1.4
IRIS_ENLARGE = 2.3

# subject's right eye (image left): outer corner 33, inner corner 133; left eye: 263, 362
RIGHT_EYE = (33, 133)
LEFT_EYE = (263, 362)
NOSE_TIP = 1
CHEEK_EDGES = (234, 454)  # image-left and image-right edges of the face oval at eye height
# iris model contour: 0-8 lower lid (corner to corner), 9-15 upper lid; pairs over the middle
_UPPER = (11, 12, 13)
_LOWER = (3, 4, 5)
_CORNERS = (0, 8)
# the nose tip's depth in front of the cheek edges over half their distance, for a typical face
# in facemesh's own units (measured on the registry portraits: 1.1-1.5)
NOSE_DEPTH_RATIO = 1.3

# points that move with the skull: nose, forehead, brows, temples, cheeks, eye corners (no lids,
# lips or jaw, which move when a person blinks or speaks)
RIGID = np.array(
    [
        1, 2, 4, 5, 6, 168, 197, 195, 98, 327, 10, 151, 9, 8, 109, 338, 67, 297, 103, 332,
        54, 284, 21, 251, 162, 389, 127, 356, 234, 454, 93, 323, 50, 280, 205, 425, 33, 133,
        362, 263, 70, 300, 105, 334, 107, 336,
    ]
)  # fmt: skip


@dataclass(frozen=True)
class Mesh:
    """468 landmarks of one face in image pixels (x, y, relative depth z) and the mesh model's
    face-presence score."""

    points: np.ndarray  # 468 x 3, float32
    presence: float

    @property
    def eye_distance(self) -> float:
        """Distance between the outer eye corners: the face's scale."""
        a, b = self.points[RIGHT_EYE[0], :2], self.points[LEFT_EYE[0], :2]
        return float(np.hypot(*(b - a)))

    @property
    def yaw_deg(self) -> float:
        """Head turn from the 2-D points: positive when the nose moves to the image's right
        (the subject turns to their left)."""
        left, right = self.points[CHEEK_EDGES[0], :2], self.points[CHEEK_EDGES[1], :2]
        half = float(np.hypot(*(right - left))) / 2
        if half < 1e-6:
            return 0.0
        axis = (right - left) / (2 * half)
        offset = float(np.dot(self.points[NOSE_TIP, :2] - (left + right) / 2, axis)) / half
        return math.degrees(math.atan(offset / NOSE_DEPTH_RATIO))

    def box(self) -> np.ndarray:
        """The bounding box of the points ``[x1, y1, x2, y2]``."""
        xy = self.points[:, :2]
        result: np.ndarray = np.concatenate([xy.min(axis=0), xy.max(axis=0)])
        return result


def square_crop_transform(box: np.ndarray, enlarge: float, size: int) -> np.ndarray:
    """The 2x3 affine map from image pixels to a ``size`` square around ``box`` made square
    and enlarged ``enlarge`` times (what the face models were trained on)."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = max(x2 - x1, y2 - y1) * enlarge
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    s = size / max(side, 1e-6)
    return np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float64)


def crop(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """``rgb`` through the affine map ``m`` into a ``size`` square, black outside the image."""
    out: np.ndarray = cv2.warpAffine(
        rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    return out


def _unmap(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Crop pixels back to image pixels through the inverse of the affine ``m``."""
    inv = cv2.invertAffineTransform(m)
    result: np.ndarray = xy @ inv[:, :2].T + inv[:, 2]
    return result


class FaceMesh:
    """The landmarker: ``facemesh`` for the face, ``iris`` for the eyes."""

    def __init__(self, store: ModelStore, *, threads: int = 1) -> None:
        self.mesh = ModelSession(store, MESH_MODEL, threads=threads)
        self.iris = ModelSession(store, IRIS_MODEL, threads=threads)

    @property
    def sessions(self) -> tuple[ModelSession, ...]:
        return (self.mesh, self.iris)

    def warm(self) -> None:
        self.mesh.warm()
        self.iris.warm([2, IRIS_INPUT, IRIS_INPUT, 3])

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> Mesh:
        """The mesh of the face in ``box`` (a detector's ``[x1, y1, x2, y2]``)."""
        m = square_crop_transform(box, MESH_ENLARGE, MESH_INPUT)
        x = crop(rgb, m, MESH_INPUT).astype(np.float32)[None] / 255.0
        mesh, presence = self.mesh.run(x)
        pts = mesh[0].reshape(-1, 3).astype(np.float64)
        scale = 1.0 / m[0, 0]
        xy = _unmap(m, pts[:, :2])
        points = np.concatenate([xy, pts[:, 2:] * scale], axis=1).astype(np.float32)
        return Mesh(points, float(presence.reshape(-1)[0]))

    def eye_openness(self, rgb: np.ndarray, mesh: Mesh) -> tuple[float, float]:
        """(right, left) eye openness of the subject from the iris model's lid contour."""
        crops, maps = [], []
        for corners, mirror in ((RIGHT_EYE, False), (LEFT_EYE, True)):
            a, b = mesh.points[corners[0], :2], mesh.points[corners[1], :2]
            width = float(np.hypot(*(b - a)))
            cx, cy = (a + b) / 2
            half = max(width * IRIS_ENLARGE / 2, 1.0)
            m = square_crop_transform(
                np.array([cx - half, cy - half, cx + half, cy + half]), 1.0, IRIS_INPUT
            )
            if mirror:  # x' = size - x
                m = np.array([[-1, 0, IRIS_INPUT], [0, 1, 0]], np.float64) @ np.vstack(
                    [m, [0, 0, 1]]
                )
            crops.append(crop(rgb, m, IRIS_INPUT))
            maps.append(m)
        x = np.stack(crops).astype(np.float32) / 255.0
        out = self.iris.run(x)[0].reshape(2, -1, 3)
        result = []
        for k in range(2):
            xy = _unmap(maps[k], out[k, :, :2].astype(np.float64))
            width = float(np.hypot(*(xy[_CORNERS[1]] - xy[_CORNERS[0]])))
            gaps = [
                float(np.hypot(*(xy[u] - xy[lo]))) for u, lo in zip(_UPPER, _LOWER, strict=True)
            ]
            result.append(float(np.mean(gaps)) / max(width, 1e-6))
        return result[0], result[1]


def planar_residual(reference: np.ndarray, current: np.ndarray, scale: float) -> float:
    """How badly one plane explains the motion from ``reference`` to ``current`` (N x 2 points
    each): the RMS distance between ``current`` and ``reference`` mapped by the least-squares
    homography between them, over ``scale`` (the face's eye distance).

    A photo or a screen — held still, moved, tilted or turned — is a plane: its points move by a
    homography and the residual stays at the landmark noise (about 0.01). A head turning shows
    parallax (the nose moves against the cheeks) that no homography fits.

    Raises :class:`ValueError` for sets of other shapes, fewer than 5 points, NaN or infinity,
    or a scale that is not positive; returns NaN when no homography fits at all (degenerate
    points), which the challenge takes as no parallax.
    """
    ref, cur = np.asarray(reference, np.float64), np.asarray(current, np.float64)
    if ref.ndim != 2 or ref.shape[1] != 2 or ref.shape != cur.shape:
        raise ValueError(
            f"planarity needs two N x 2 point sets of the same shape (got {ref.shape} and "
            f"{cur.shape})"
        )
    if len(ref) < 5:  # four points always fit a homography exactly
        raise ValueError(
            f"planarity needs at least 5 points to measure a residual (got {len(ref)})"
        )
    if not (np.isfinite(ref).all() and np.isfinite(cur).all()):
        raise ValueError("planarity: the points contain NaN or infinity")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"planarity: the scale must be a positive number (got {scale})")
    h, _ = cv2.findHomography(ref, cur, 0)
    if h is None:  # degenerate (points on a line, or all in one place): no evidence of a head
        return float("nan")
    mapped = cv2.perspectiveTransform(ref[None], h)[0]
    rms = float(np.sqrt(np.mean(np.sum((mapped - cur) ** 2, axis=1))))
    return rms / scale
