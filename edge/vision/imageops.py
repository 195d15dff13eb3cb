"""Pure numpy geometry for vision pipelines: boxes, NMS, similarity transforms, sharpness.

No framework here; pixel resampling (resize, warp) is left to OpenCV in the callers, everything
that decides (which box, which transform, how sharp) is plain numpy and unit-tested.
Boxes are ``[x1, y1, x2, y2]`` float arrays in pixels, ``x2``/``y2`` exclusive.
"""

from __future__ import annotations

from typing import Literal

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    result: np.ndarray = w * h
    return result


def nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: Literal["union", "min"] = "union"
) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    ``union`` compares intersection over union; ``min`` intersection over the smaller box (which
    removes a box nested in a bigger one, as MTCNN's last stage wants).
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    areas = box_area(boxes)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(xx2 - xx1, 0.0) * np.maximum(yy2 - yy1, 0.0)
        union = areas[i] + areas[rest] - inter
        denom = np.minimum(areas[i], areas[rest]) if mode == "min" else union
        overlap = np.where(denom > 0, inter / np.where(denom > 0, denom, 1.0), 0.0)
        order = rest[overlap <= threshold]
    return np.array(keep, dtype=np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares around the same centre (side = the longer side)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of the rotation + uniform scale + translation that maps ``src`` onto
    ``dst`` best in the least-squares sense (Umeyama 1991, without reflection).

    ``src`` and ``dst`` are Nx2 with N >= 2 points that are not all the same.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two N x 2 arrays with N >= 2 (got {src.shape} and {dst.shape})")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("source points coincide")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1
    rot = u @ fix @ vt
    scale = float(np.trace(np.diag(sig) @ fix)) / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    result: np.ndarray = pts @ m[:, :2].T + m[:, 2]
    return result


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: a sharpness measure (low = blurred)."""
    g = grey.astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def point_in_polygon(x: float, y: float, polygon: np.ndarray) -> bool:
    """Whether (x, y) lies inside the polygon ([N, 2] vertices; even-odd rule, edges count in)."""
    px, py = polygon[:, 0], polygon[:, 1]
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    # on an edge: collinear and within its bounding box
    cross = (qx - px) * (y - py) - (qy - py) * (x - px)
    on_edge = (
        (np.abs(cross) < 1e-9)
        & (np.minimum(px, qx) <= x)
        & (x <= np.maximum(px, qx))
        & (np.minimum(py, qy) <= y)
        & (y <= np.maximum(py, qy))
    )
    if bool(on_edge.any()):
        return True
    crosses = (py > y) != (qy > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = px + (y - py) * (qx - px) / (qy - py)
    return bool(np.count_nonzero(crosses & (x < xs)) % 2)
