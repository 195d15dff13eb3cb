"""Frames of the doorway scene with real photos, shared by the face tests."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from edge.vision.face_detector import MtcnnDetector
from edge.vision.frames import Frame
from edge.vision.manifest import ModelStore
from sim.scenes.faces import Kind, Segment, frames, head_crop


def read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"cannot read {path}"
    return img


@cache
def crop_of(file: str) -> tuple[int, int, int, int]:
    store = ModelStore()
    img = read(store.asset(file))
    faces = MtcnnDetector(store).detect(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return head_crop(max(faces, key=lambda f: f.size).box.tolist(), img.shape)


def still(file: str, kind: Kind = "face") -> np.ndarray:
    """The doorway with the photo standing still in it (the last frame of its segment)."""
    seg = Segment(kind, ModelStore().asset(file), 1.0, crop=crop_of(file))
    return list(frames([seg], 10))[-1]


def frame(image: np.ndarray, seq: int = 1, camera: str = "cam-1") -> Frame:
    return Frame("cam", camera, seq, time.time(), time.monotonic(), image, 0.5)
