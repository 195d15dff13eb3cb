"""Camera videos built from still photos, for hil-tests, benchmarks and demos.

No identity video ships in any registry, so a "camera" is made from the real photos the model
build fetches: each segment shows one photo on a 640x480 doorway scene, sliding in over the
first frames (so motion gating sees someone arrive) and then standing still. ``replay`` and
``print`` segments imitate presentation attacks: the photo on a phone screen (dark bezel,
screen gamma, moiré from the pixel grid) or on paper (paler, flatter, slightly tilted). They
are simulations of attacks, not recordings of real ones — tests report what the liveness
model decides on them and nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 480
Kind = Literal["face", "replay", "print", "empty"]


@dataclass(frozen=True)
class Segment:
    kind: Kind
    photo: Path | None
    seconds: float
    height_px: int = 380  # height of the photo on the canvas
    crop: tuple[int, int, int, int] | None = None  # x1, y1, x2, y2 of the photo to show


def background() -> np.ndarray:
    """A still doorway: a wall gradient and a door frame (deterministic)."""
    y = np.linspace(70, 110, HEIGHT, dtype=np.float32)[:, None, None]
    bg = np.broadcast_to(y, (HEIGHT, WIDTH, 3)).astype(np.uint8).copy()
    bg[:, :, 0] = np.clip(bg[:, :, 0].astype(np.int16) + 15, 0, 255).astype(np.uint8)
    cv2.rectangle(bg, (120, 20), (520, 479), (40, 50, 60), 12)
    return bg


def _fit(photo: np.ndarray, height: int) -> np.ndarray:
    scale = height / photo.shape[0]
    w = min(int(photo.shape[1] * scale), WIDTH - 40)
    return cv2.resize(
        photo,
        (w, int(photo.shape[0] * w / photo.shape[1]) if w < photo.shape[1] * scale else height),
        interpolation=cv2.INTER_AREA,
    )


def as_replay(photo: np.ndarray) -> np.ndarray:
    """The photo as a phone screen shows it: bezel, screen gamma, cool tint, pixel-grid moiré."""
    img = photo.astype(np.float32) / 255.0
    img = img**0.8 * 0.85 + 0.08
    img[:, :, 0] *= 1.08  # bluish backlight (BGR)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    moire = 0.06 * np.sin(2 * np.pi * (xx * 0.23 + yy * 0.05)) * np.sin(2 * np.pi * yy * 0.21)
    img = np.clip(img + moire[:, :, None], 0, 1)
    screen = (img * 255).astype(np.uint8)
    bezel = 18
    out = np.full((screen.shape[0] + 2 * bezel, screen.shape[1] + 2 * bezel, 3), 12, np.uint8)
    out[bezel:-bezel, bezel:-bezel] = screen
    return out


def as_print(photo: np.ndarray) -> np.ndarray:
    """The photo printed on paper: lower contrast and saturation, paper white, a slight tilt."""
    img = photo.astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = 0.6 * img + 0.4 * grey  # ink desaturates
    img = img * 0.75 + 50  # paper lifts the blacks, dims the whites
    rng = np.random.default_rng(7)
    img += rng.normal(0, 3, img.shape[:2])[:, :, None]  # paper grain
    out = np.clip(img, 0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 4.0, 1.0)
    return cv2.warpAffine(out, m, (w, h), borderValue=(235, 235, 235))


def head_crop(
    box: Sequence[float], shape: Sequence[int], margin: float = 0.6
) -> tuple[int, int, int, int]:
    """A head-and-shoulders crop around a face box: ``margin`` face sizes on each side."""
    x1, y1, x2, y2 = box[:4]
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = side * (0.5 + margin)
    return (
        int(max(0, cx - half)),
        int(max(0, cy - half)),
        int(min(shape[1], cx + half)),
        int(min(shape[0], cy + half * 1.3)),
    )


def frames(segments: Sequence[Segment], fps: float) -> Iterator[np.ndarray]:
    bg = background()
    for seg in segments:
        n = max(1, round(seg.seconds * fps))
        if seg.kind == "empty" or seg.photo is None:
            for _ in range(n):
                yield bg.copy()
            continue
        photo = cv2.imread(str(seg.photo), cv2.IMREAD_COLOR)
        if photo is None:
            raise ValueError(f"cannot read {seg.photo}")
        if seg.crop is not None:
            x1, y1, x2, y2 = seg.crop
            photo = photo[max(0, y1) : y2, max(0, x1) : x2]
        if seg.kind == "replay":
            photo = as_replay(_fit(photo, seg.height_px - 36))
        elif seg.kind == "print":
            photo = as_print(_fit(photo, seg.height_px))
        else:
            photo = _fit(photo, seg.height_px)
        ph, pw = photo.shape[:2]
        y0 = max(0, HEIGHT - ph - 10)
        x_end = (WIDTH - pw) // 2
        arrive = max(1, round(0.5 * fps))
        for i in range(n):
            x = int(x_end + (WIDTH - x_end) * max(0.0, 1 - i / arrive))
            frame = bg.copy()
            visible = max(0, min(pw, WIDTH - x))
            if visible:
                frame[y0 : y0 + ph, x : x + visible] = photo[:, :visible]
            yield frame


def write_frames(path: Path, images: Iterable[np.ndarray], fps: float = 10.0) -> int:
    """Write doorway frames (WIDTH x HEIGHT, BGR) as an MJPEG AVI; returns their number."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    count = 0
    try:
        for frame in images:
            writer.write(frame)
            count += 1
    finally:
        writer.release()
    return count


def write_video(path: Path, segments: Sequence[Segment], fps: float = 10.0) -> int:
    """Write an MJPEG AVI of the segments; returns the number of frames."""
    return write_frames(path, frames(segments, fps), fps)
