"""Camera frames of a visitor holding up a phone that shows a pass's QR code, for tests and demos.

The doorway of :mod:`sim.scenes.faces`; the phone (dark body, bright screen, the QR code in
its quiet zone) slides in over the first half second as a person's arm would bring it, then
stands a little tilted, as held. Deterministic: the same text and sizes make the same frames.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sim.scenes.faces import HEIGHT, WIDTH, background, write_frames


@dataclass(frozen=True)
class PassSegment:
    text: str | None  # None: the empty doorway
    seconds: float
    module_px: float = 4.0  # size of one QR module in the frame
    tilt_deg: float = 6.0


def qr_modules(text: str) -> np.ndarray:
    """The QR code of ``text`` (alphanumeric mode, error correction M), one pixel per module,
    with its 4-module quiet zone."""
    params = cv2.QRCodeEncoder.Params()
    params.correction_level = cv2.QRCodeEncoder_CORRECT_LEVEL_M
    modules = cv2.QRCodeEncoder.create(params).encode(text)
    return cv2.copyMakeBorder(modules, 4, 4, 4, 4, cv2.BORDER_CONSTANT, value=255)


def phone(text: str, module_px: float) -> np.ndarray:
    """A phone (BGR) showing the code: body, screen backlight, the code slightly soft."""
    code = qr_modules(text)
    side = round(code.shape[0] * module_px)
    shown = cv2.resize(code, (side, side), interpolation=cv2.INTER_NEAREST)
    shown = cv2.GaussianBlur(shown, (0, 0), 0.6)
    screen = (shown.astype(np.float32) * 0.82 + 28).astype(np.uint8)  # backlight: no pure black
    body = np.full((side + 90, side + 24, 3), 25, np.uint8)
    body[45 : 45 + side, 12 : 12 + side] = cv2.cvtColor(screen, cv2.COLOR_GRAY2BGR)
    return body


def frames(segments: Sequence[PassSegment], fps: float) -> Iterator[np.ndarray]:
    bg = background()
    for seg in segments:
        n = max(1, round(seg.seconds * fps))
        if seg.text is None:
            for _ in range(n):
                yield bg.copy()
            continue
        body = phone(seg.text, seg.module_px)
        h, w = body.shape[:2]
        canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        y0, x_end = max(0, (HEIGHT - h) // 2), (WIDTH - w) // 2
        arrive = max(1, round(0.5 * fps))
        for i in range(n):
            x = int(x_end + (WIDTH - x_end) * max(0.0, 1 - i / arrive))
            frame = bg.copy()
            visible = max(0, min(w, WIDTH - x))
            if visible:
                canvas[:] = 0
                mask[:] = 0
                canvas[y0 : y0 + h, x : x + visible] = body[:, :visible]
                mask[y0 : y0 + h, x : x + visible] = 255
                m = cv2.getRotationMatrix2D((x + w / 2, y0 + h / 2), seg.tilt_deg, 1.0)
                turned = cv2.warpAffine(canvas, m, (WIDTH, HEIGHT))
                held = cv2.warpAffine(mask, m, (WIDTH, HEIGHT)) > 127
                frame[held] = turned[held]
            yield frame


def still(text: str, module_px: float = 4.0, tilt_deg: float = 6.0) -> np.ndarray:
    """The phone standing still in the doorway (the last frame of its segment)."""
    return list(frames([PassSegment(text, 1.0, module_px, tilt_deg)], 10))[-1]


def write_video(path: Path, segments: Sequence[PassSegment], fps: float = 10.0) -> int:
    """An MJPEG AVI of the segments; the number of frames."""
    return write_frames(path, frames(segments, fps), fps)
