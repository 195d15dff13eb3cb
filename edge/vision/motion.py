"""Motion gating: skip inference when nothing in the scene moves (pure numpy).

Each frame is subsampled to about ``width`` pixels across (a strided view: no filtering, so it
costs microseconds), turned to grey, and compared with a running-average background. The share
of pixels that differ by more than ``pixel_threshold`` grey levels is the frame's motion score;
a frame *moves* when that share reaches ``min_area``. The background then takes the new frame in
with weight ``alpha``, so a parked car or a light switched on stops counting as motion after a
few seconds.

Edge cases: the first frame has no background and counts as full motion (1.0); a frame whose
size changes resets the background.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_BGR_TO_GREY = np.array([0.114, 0.587, 0.299], dtype=np.float32)


@dataclass
class MotionGate:
    pixel_threshold: float = 15.0  # grey levels
    min_area: float = 0.003  # share of the (subsampled) frame
    alpha: float = 0.05  # background update weight per frame
    width: int = 80  # subsampled width in pixels
    _background: np.ndarray | None = field(default=None, repr=False)

    def small_grey(self, image: np.ndarray) -> np.ndarray:
        step = max(1, image.shape[1] // self.width)
        small = image[::step, ::step]
        if small.ndim == 2:
            return small.astype(np.float32)
        grey: np.ndarray = small.astype(np.float32) @ _BGR_TO_GREY
        return grey

    def score(self, image: np.ndarray) -> float:
        """Share of the scene that changed (0..1); updates the background."""
        grey = self.small_grey(image)
        bg = self._background
        if bg is None or bg.shape != grey.shape:
            self._background = grey
            return 1.0
        changed = float(np.count_nonzero(np.abs(grey - bg) > self.pixel_threshold)) / grey.size
        bg += self.alpha * (grey - bg)
        return changed

    def moves(self, score: float) -> bool:
        return score >= self.min_area
