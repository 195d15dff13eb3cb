"""Evidence crops for hygiene violations: faces blurred, JPEG, kept locally for a limited time.

:func:`evidence_crop` cuts the person's box (plus a margin) out of the frame and, unless told
otherwise, blurs every face region it is given — the faces the detector found in the crop, and
the head of the person reported (so a face the detector missed, e.g. behind a mask, is blurred
too). The blur is a Gaussian with a sigma of a quarter of the face size: strong enough that the
face cannot be recognised, while the mask or missing cover stays visible in the rest of the
crop.

:class:`EvidenceStore` writes ``<id>.jpg`` files into one folder and erases them after
``retention_days`` or beyond ``max_files`` (oldest first).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.hygiene.crops import BoxLike

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Crop:
    jpeg: bytes
    width: int
    height: int
    blurred: tuple[tuple[int, int, int, int], ...]  # x1, y1, x2, y2 in crop pixels

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.jpeg).hexdigest()


def evidence_crop(
    image: np.ndarray,
    box: BoxLike,
    faces: Sequence[BoxLike],
    *,
    blur: bool = True,
    max_side: int = 320,
    quality: int = 80,
    margin: float = 0.1,
) -> Crop:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    cx1, cy1 = int(max(0, x1 - mx)), int(max(0, y1 - my))
    cx2, cy2 = int(min(w, x2 + mx)), int(min(h, y2 + my))
    if cx2 - cx1 < 2 or cy2 - cy1 < 2:
        raise ValueError(f"evidence box {box} is outside the {w}x{h} frame")
    out = image[cy1:cy2, cx1:cx2].copy()
    blurred: list[tuple[int, int, int, int]] = []
    if blur:
        for f in faces:
            fx1, fy1, fx2, fy2 = (float(v) for v in f[:4])
            pad = 0.15 * max(fx2 - fx1, fy2 - fy1)
            bx1 = int(max(0, fx1 - pad - cx1))
            by1 = int(max(0, fy1 - pad - cy1))
            bx2 = int(min(out.shape[1], fx2 + pad - cx1))
            by2 = int(min(out.shape[0], fy2 + pad - cy1))
            if bx2 - bx1 < 2 or by2 - by1 < 2:
                continue
            sigma = max(2.0, 0.25 * max(bx2 - bx1, by2 - by1))
            out[by1:by2, bx1:bx2] = cv2.GaussianBlur(out[by1:by2, bx1:bx2], (0, 0), sigma)
            blurred.append((bx1, by1, bx2, by2))
    scale = min(1.0, max_side / max(out.shape[:2]))
    if scale < 1.0:
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        blurred = [tuple(int(v * scale) for v in b) for b in blurred]  # type: ignore[misc]
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding of the evidence failed")
    return Crop(buf.tobytes(), int(out.shape[1]), int(out.shape[0]), tuple(blurred))


class EvidenceStore:
    def __init__(self, folder: Path, retention_days: float, max_files: int) -> None:
        self.folder = folder
        self.retention_s = retention_days * 86400
        self.max_files = max_files
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def save(self, evidence_id: str, jpeg: bytes) -> Path:
        path = self.folder / f"{evidence_id}.jpg"
        tmp = path.with_suffix(".part")
        tmp.write_bytes(jpeg)
        os.replace(tmp, path)
        return path

    def purge(self, now: float | None = None) -> list[Path]:
        """Erase files past the retention time, then the oldest beyond ``max_files``."""
        now = time.time() if now is None else now
        files = sorted(self.folder.glob("*.jpg"), key=lambda p: p.stat().st_mtime)
        gone = [p for p in files if now - p.stat().st_mtime > self.retention_s]
        keep = [p for p in files if p not in gone]
        gone += keep[: max(0, len(keep) - self.max_files)]
        for p in gone:
            p.unlink(missing_ok=True)
        if gone:
            log.info("evidence: erased %d files (retention or count limit)", len(gone))
        return gone
