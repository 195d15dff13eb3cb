"""A small IoU tracker: the same person across frames keeps one id (pure numpy).

Each frame's boxes are matched greedily, highest overlap first, to the tracks seen within
``timeout_s``; a box that overlaps no track by at least ``min_iou`` starts a new track. Enough
for people moving a fraction of their width between processed frames; a person hidden longer
than ``timeout_s`` comes back with a new id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Track:
    id: int
    box: np.ndarray
    first_seen: float
    last_seen: float
    hits: int = 1


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4] → [N, M]."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    result: np.ndarray = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return result


@dataclass
class IouTracker:
    min_iou: float = 0.3
    timeout_s: float = 3.0
    tracks: dict[int, Track] = field(default_factory=dict)
    _next: int = 1

    def update(self, boxes: list[np.ndarray], now: float) -> list[Track]:
        """The track of each box, in the order given; tracks unseen for ``timeout_s`` end."""
        for tid in [t.id for t in self.tracks.values() if now - t.last_seen > self.timeout_s]:
            del self.tracks[tid]
        live = list(self.tracks.values())
        result: list[Track | None] = [None] * len(boxes)
        if boxes and live:
            m = iou(np.array(boxes, np.float64), np.array([t.box for t in live], np.float64))
            pairs = sorted(
                ((m[i, j], i, j) for i in range(len(boxes)) for j in range(len(live))),
                reverse=True,
            )
            used_b: set[int] = set()
            used_t: set[int] = set()
            for score, i, j in pairs:
                if score < self.min_iou:
                    break
                if i in used_b or j in used_t:
                    continue
                used_b.add(i)
                used_t.add(j)
                t = live[j]
                t.box, t.last_seen, t.hits = np.asarray(boxes[i], np.float64), now, t.hits + 1
                result[i] = t
        out: list[Track] = []
        for i, r in enumerate(result):
            if r is None:
                r = Track(self._next, np.asarray(boxes[i], np.float64), now, now)
                self.tracks[r.id] = r
                self._next += 1
            out.append(r)
        return out
