"""People in a frame: CenterNet MobileNetV3 (COCO) over ONNX Runtime, decoded in numpy.

The converted graph (``models/tfjs_graph.py``) returns, at 1/4 of its 512x512 input, a heat map
per class, the box sizes ``wh`` (distances from the centre cell to the left, top, right and
bottom edges, in input pixels) and ``peaks`` — the heat map where it is a 3x3 local maximum,
zero elsewhere (CenterNet's "NMS by max-pooling"). Decoding (:func:`decode`) keeps class 0
(person) peaks above ``min_score`` and turns cells into boxes exactly as the original graph's
top-k decoder does: ``x1 = 4 * col - wh[0]``, ``y1 = 4 * row - wh[1]``, ``x2 = 4 * col + wh[2]``,
``y2 = 4 * row + wh[3]``, then scales to the frame. A last greedy NMS over the smaller box
(``min`` mode) removes a head-only box inside a whole-body one.

The frame is resized to 512x512 without letterboxing (as the model was used upstream); RGB,
0-255.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.vision.imageops import nms
from edge.vision.manifest import ModelStore
from edge.vision.session import ModelSession

MODEL = "centernet-person"
INPUT = 512
STRIDE = 4.0
PERSON = 0


@dataclass(frozen=True)
class Person:
    box: np.ndarray  # [x1, y1, x2, y2] in frame pixels
    score: float


def decode(
    peaks: np.ndarray,
    wh: np.ndarray,
    width: int,
    height: int,
    min_score: float,
    *,
    overlap: float = 0.6,
) -> list[Person]:
    """Person boxes from one image's ``peaks`` [H, W, classes] and ``wh`` [H, W, 4]."""
    heat = peaks[:, :, PERSON]
    rows, cols = np.nonzero(heat >= min_score)
    if rows.size == 0:
        return []
    d = wh[rows, cols].astype(np.float64)
    sx, sy = width / INPUT, height / INPUT
    boxes = np.stack(
        [
            (cols * STRIDE - d[:, 0]) * sx,
            (rows * STRIDE - d[:, 1]) * sy,
            (cols * STRIDE + d[:, 2]) * sx,
            (rows * STRIDE + d[:, 3]) * sy,
        ],
        axis=1,
    )
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    scores = heat[rows, cols].astype(np.float64)
    valid = (boxes[:, 2] - boxes[:, 0] > 2) & (boxes[:, 3] - boxes[:, 1] > 2)
    boxes, scores = boxes[valid], scores[valid]
    keep = nms(boxes, scores, overlap, mode="min")
    return [Person(boxes[i], float(scores[i])) for i in keep]


class PersonDetector:
    def __init__(self, store: ModelStore, *, threads: int = 1, min_score: float = 0.3) -> None:
        self.session = ModelSession(store, MODEL, threads=threads)
        self.min_score = min_score

    def warm(self) -> None:
        self.session.warm()

    def detect(self, bgr: np.ndarray) -> list[Person]:
        h, w = bgr.shape[:2]
        rgb = cv2.cvtColor(
            cv2.resize(bgr, (INPUT, INPUT), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB
        )
        _, wh, peaks = self.session.run(rgb.astype(np.float32)[None])
        return decode(peaks[0], wh[0], w, h, self.min_score)
