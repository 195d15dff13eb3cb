"""A head that turns and blinks, rendered from one real photo: the bona fide presentations.

No video of a person doing what a gate asks ships in any registry, so a live resident is made
from a still photo and the face mesh the gate itself uses (:mod:`edge.face_access.liveness.mesh`):

- the 468 landmarks with their relative depth become the vertices of a 3-D face; a ring at 1.4x
  the face oval, set back to the depth of the ears, carries hair and ears with the head; a ring
  at 2.2x and the crop's border stay put (background and shoulders); all of them are triangulated
  (Delaunay on the frontal 2-D positions);
- a pose (yaw, pitch, roll about a pivot behind the face, towards the neck) moves the vertices
  in 3-D; they are projected with a mild perspective, and every triangle of the photo is warped
  (piecewise affine) onto its new place, the far ones first, so a turned head hides its far
  cheek and shows parallax a plane cannot have;
- a blink moves each upper-lid point onto the lower-lid point below it (and the crease above
  half as far): the eye's own triangles collapse and the lid's skin stretches over the eye.

These are renders of real photos, not recordings of people: they move like a head, but their
skin, hair and lighting are the photo's. Every figure measured on them says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.face_access.liveness.mesh import Mesh

# MediaPipe face mesh: lids of each eye, corner to corner (lower) and the upper lid over it
RIGHT_UPPER = (246, 161, 160, 159, 158, 157, 173)
RIGHT_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
RIGHT_CREASE = (247, 30, 29, 27, 28, 56, 190)
LEFT_UPPER = (466, 388, 387, 386, 385, 384, 398)
LEFT_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
LEFT_CREASE = (467, 260, 259, 257, 258, 286, 414)
SILHOUETTE = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
FOCAL = 6.0  # focal length in face widths: a camera about an arm's length away


@dataclass(frozen=True)
class Head:
    """A photo made into a mesh that can turn and blink (all coordinates in photo pixels)."""

    texture: np.ndarray  # BGR photo
    vertices: np.ndarray  # N x 3: x, y, depth towards the camera
    moving: np.ndarray  # N: True for vertices that move with the head
    triangles: np.ndarray  # M x 3 vertex indices
    pivot: np.ndarray  # 3: the point the head turns about
    face_width: float
    lids: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]  # per eye: upper, lower, crease
    uv: np.ndarray | None = None  # N x 2 texture pixels of the vertices (default: their x, y)
    size: tuple[int, int] | None = None  # (width, height) rendered (default: the texture's)


def _ring(mesh: Mesh, scale: float, count: int) -> np.ndarray:
    """``count`` points on the face oval scaled ``scale`` times about its centre (x, y)."""
    oval = mesh.points[list(SILHOUETTE), :2].astype(np.float64)
    centre = oval.mean(axis=0)
    angles = np.arctan2(oval[:, 1] - centre[1], oval[:, 0] - centre[0])
    radii = np.hypot(*(oval - centre).T)
    want = np.linspace(-np.pi, np.pi, count, endpoint=False)
    order = np.argsort(angles)
    r = np.interp(want, angles[order], radii[order], period=2 * np.pi)
    ring: np.ndarray = centre + scale * r[:, None] * np.stack([np.cos(want), np.sin(want)], axis=1)
    return ring


def _delaunay(points: np.ndarray, width: int, height: int) -> np.ndarray:
    subdiv = cv2.Subdiv2D((-1, -1, width + 2, height + 2))
    index = {}
    for i, (x, y) in enumerate(points.astype(np.float32)):  # Subdiv2D works in float32
        key = (float(x), float(y))
        index[key] = i
        subdiv.insert(key)
    tris = []
    for t in subdiv.getTriangleList():
        ids = [index.get((float(t[k]), float(t[k + 1]))) for k in (0, 2, 4)]
        if all(i is not None for i in ids):
            tris.append(ids)
    return np.array(tris, np.int32)


def build_head(photo: np.ndarray, mesh: Mesh) -> Head:
    """The head of the face ``mesh`` found in ``photo`` (BGR)."""
    h, w = photo.shape[:2]
    pts = mesh.points.astype(np.float64)
    depth = -pts[:, 2]  # facemesh z grows away from the camera
    face_width = float(np.hypot(*(pts[454, :2] - pts[234, :2])))
    ear_depth = float(depth[[234, 454]].mean())
    hair = _ring(mesh, 1.4, 36)
    around = _ring(mesh, 2.2, 36)
    border = np.array(
        [[x, y] for x in np.linspace(0, w - 1, 5) for y in np.linspace(0, h - 1, 5)
         if x in (0, w - 1) or y in (0, h - 1)]
    )  # fmt: skip
    # a point of an outer ring that falls outside the photo is dropped (the border holds it)
    inside = (
        (around[:, 0] > 1) & (around[:, 0] < w - 2) & (around[:, 1] > 1) & (around[:, 1] < h - 2)
    )
    around = around[inside]
    hair = np.clip(hair, 1, [w - 2, h - 2])
    xy = np.concatenate([pts[:, :2], hair, around, border])
    # de-duplicate exact coincidences, which Subdiv2D merges
    xy = xy + np.arange(len(xy))[:, None] * 1e-4
    n_face, n_hair = len(pts), len(hair)
    z = np.concatenate(
        [
            depth,
            np.full(n_hair, ear_depth - 0.15 * face_width),
            np.full(len(xy) - n_face - n_hair, ear_depth - 0.3 * face_width),
        ]
    )
    moving = np.zeros(len(xy), bool)
    moving[: n_face + n_hair] = True
    centre = pts[list(SILHOUETTE), :2].mean(axis=0)
    pivot = np.array([centre[0], pts[[33, 263], 1].mean(), ear_depth - 0.6 * face_width])
    lids = tuple(
        (np.array(u), np.array(lo), np.array(c))
        for u, lo, c in (
            (RIGHT_UPPER, RIGHT_LOWER, RIGHT_CREASE),
            (LEFT_UPPER, LEFT_LOWER, LEFT_CREASE),
        )
    )
    return Head(
        photo,
        np.concatenate([xy, z[:, None]], axis=1),
        moving,
        _delaunay(xy, w, h),
        pivot,
        face_width,
        lids,
    )


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Yaw about the vertical axis (positive: the nose to the image's right), pitch about the
    horizontal (positive: the nose down), roll in the image plane."""
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    result: np.ndarray = rz @ rx @ ry
    return result


def pose_vertices(
    head: Head,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
    closed: float = 0.0,
) -> np.ndarray:
    """The vertices (x, y, depth) of ``head`` in a pose, eyes ``closed`` 0 (open) to 1 (shut),
    projected with the camera's mild perspective (x, y in photo pixels)."""
    v = head.vertices.copy()
    if closed > 0:
        c = min(closed, 1.0)
        for upper, lower, crease in head.lids:
            # the upper lid's k-th point closes onto the lower-lid point under it
            targets = np.linspace(0, len(lower) - 1, len(upper) + 2)[1:-1]
            below = (
                np.array(
                    [
                        np.interp(t, np.arange(len(lower)), v[lower, k])
                        for k in range(3)
                        for t in targets
                    ]
                )
                .reshape(3, -1)
                .T
            )
            shift = c * (below - v[upper])
            v[upper] += shift
            v[crease] += 0.5 * shift
    m = head.moving
    rot = _rotation(yaw_deg, pitch_deg, roll_deg)
    v[m] = (v[m] - head.pivot) @ rot.T + head.pivot
    f = FOCAL * head.face_width
    s = f / (f - (v[:, 2] - head.pivot[2]))
    centre = head.pivot[:2]
    v[:, :2] = centre + (v[:, :2] - centre) * s[:, None]
    return v


def render(head: Head, vertices: np.ndarray) -> np.ndarray:
    """The photo warped triangle by triangle onto ``vertices`` (far triangles drawn first)."""
    w, h = head.size or (head.texture.shape[1], head.texture.shape[0])
    src = (head.vertices[:, :2] if head.uv is None else head.uv).astype(np.float32)
    dst = vertices[:, :2].astype(np.float32)
    tris = head.triangles
    order = np.argsort(vertices[tris, 2].mean(axis=1))  # far (small depth) first
    ids = np.full((h, w), -1, np.int32)
    for t in order:
        poly = np.round(dst[tris[t]] * 16).astype(np.int32)
        cv2.fillConvexPoly(ids, poly, int(t), lineType=cv2.LINE_8, shift=4)
    # per triangle, the affine map from output pixels back to the photo
    a = np.zeros((len(tris), 2, 3), np.float32)
    for t, (i, j, k) in enumerate(tris):
        d = dst[[i, j, k]]
        e1, e2 = d[1] - d[0], d[2] - d[0]
        if abs(float(e1[0] * e2[1] - e1[1] * e2[0])) < 1e-3:
            continue  # a collapsed triangle (a closed eye) draws nothing
        a[t] = cv2.getAffineTransform(d, src[[i, j, k]])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    covered = ids >= 0
    tid = np.where(covered, ids, 0)
    m = a[tid]
    map_x = m[..., 0, 0] * xx + m[..., 0, 1] * yy + m[..., 0, 2]
    map_y = m[..., 1, 0] * xx + m[..., 1, 1] * yy + m[..., 1, 2]
    map_x = np.where(covered, map_x, xx)
    map_y = np.where(covered, map_y, yy)
    out: np.ndarray = cv2.remap(
        head.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return out
