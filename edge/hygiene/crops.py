"""Where the hygiene models look: crop boxes around a face, and cropping itself.

The two classifiers were trained (hair cover) or are used (mask) on crops laid out exactly like
these, so the app, the training recipes, the evaluation and the factory clip all call them:

- :func:`face_square`: the face box made square around its centre plus ``margin`` — what the
  mask classifier sees (a non-square face box stretched to 224x224 made it miss masks);
- :func:`head_box`: the square around the head that the hair-cover classifier sees: 1.9 face
  sizes wide, from 0.75 face heights above the face box to 0.15 below it.

Boxes are ``(x1, y1, x2, y2)`` float pixels; :func:`crop` fills what lies outside the image with
the nearest edge pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Box = tuple[float, float, float, float]
BoxLike = Sequence[float] | np.ndarray  # [x1, y1, x2, y2, ...]


def head_box(face: BoxLike) -> Box:
    x1, y1, x2, y2 = (float(v) for v in face[:4])
    h = y2 - y1
    side = 1.9 * max(x2 - x1, h)
    cx = (x1 + x2) / 2
    top = y1 - 0.75 * h
    return (cx - side / 2, top, cx + side / 2, top + side)


def face_square(face: BoxLike, margin: float = 0.1) -> Box:
    x1, y1, x2, y2 = (float(v) for v in face[:4])
    half = max(x2 - x1, y2 - y1) * (1 + margin) / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def crop(image: np.ndarray, box: BoxLike, size: int) -> np.ndarray:
    """``box`` of ``image`` resampled to ``size`` x ``size``."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    m = np.array([[(x2 - x1) / size, 0, x1], [0, (y2 - y1) / size, y1]], np.float32)
    return cv2.warpAffine(
        image,
        m,
        (size, size),
        flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
