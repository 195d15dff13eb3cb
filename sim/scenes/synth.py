"""What a camera does to a rendered scene: light, shadow, night infrared, noise, blur, JPEG.

Shared by the procedural scenes (:mod:`sim.scenes.bins`, :mod:`sim.scenes.hygiene`) that make
training data and demo videos, so both models see the same camera artefacts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

_BGR_TO_GREY = np.array([0.114, 0.587, 0.299], np.float32)


@dataclass(frozen=True)
class CameraLook:
    gain: float = 1.0
    tint: tuple[int, int, int] = (0, 0, 0)  # added to B, G, R
    gradient: tuple[float, float] = (0.0, 0.0)  # brightness slope along x, y (per frame size)
    shadow: tuple[float, float, float] | None = None  # edge angle, offset, darkening
    night: bool = False  # infrared: grey, illuminator hot spot, vignette, more noise
    noise: float = 2.0  # sensor noise, grey levels
    blur: float = 0.0  # Gaussian sigma in pixels
    jpeg_quality: int = 90

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        *,
        gain: tuple[float, float],
        night_share: float,
        shadow_share: float,
        jpeg_quality: tuple[int, int],
        blur_max: float = 1.2,
    ) -> CameraLook:
        shadow = None
        if rng.random() < shadow_share:
            shadow = (
                float(rng.uniform(0, 2 * math.pi)),
                float(rng.uniform(-0.4, 0.4)),
                float(rng.uniform(0.3, 0.6)),
            )
        return cls(
            gain=float(rng.uniform(*gain)),
            tint=(
                int(rng.integers(-20, 21)),
                int(rng.integers(-10, 11)),
                int(rng.integers(-20, 21)),
            ),
            gradient=(float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-0.4, 0.4))),
            shadow=shadow,
            night=bool(rng.random() < night_share),
            noise=float(rng.uniform(1, 8)),
            blur=float(rng.uniform(0, blur_max)),
            jpeg_quality=int(rng.integers(*jpeg_quality)),
        )


def camera_effects(
    img: np.ndarray, look: CameraLook, rng: np.random.Generator, *, compress: bool = True
) -> np.ndarray:
    """Lighting, shadow, night IR, sensor noise, blur and JPEG, in that order (BGR uint8)."""
    h, w = img.shape[:2]
    f = img.astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = look.gain * (1 + look.gradient[0] * (xx / w - 0.5) + look.gradient[1] * (yy / h - 0.5))
    if look.shadow is not None:
        a, off, strength = look.shadow
        side = (xx / w - 0.5) * math.cos(a) + (yy / h - 0.5) * math.sin(a) > off
        light = np.where(side, light * (1 - strength), light)
    f = f * light[:, :, None] + np.array(look.tint, np.float32)
    if look.night:
        grey = f @ _BGR_TO_GREY
        r2 = ((xx - w * 0.5) ** 2 + (yy - h * 0.45) ** 2) / (0.5 * (w * w + h * h))
        grey = grey * 0.6 * (1.5 * np.exp(-r2 * 3.0) + 0.25) + 20
        f = np.repeat(grey[:, :, None], 3, axis=2)
        f += rng.normal(0, look.noise * 2.5, (h, w, 1)).astype(np.float32)
    else:
        f += rng.normal(0, look.noise, (h, w, 3)).astype(np.float32)
    out = np.clip(f, 0, 255).astype(np.uint8)
    if look.blur > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), look.blur)
    if compress:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def fill_poly(img: np.ndarray, pts: np.ndarray, colour: tuple[float, ...]) -> None:
    """An anti-aliased filled polygon with sub-pixel vertices (``pts``: (n, 2) float pixels)."""
    cv2.fillPoly(
        img, [np.round(pts * 16).astype(np.int32)], tuple(float(c) for c in colour), cv2.LINE_AA, 4
    )


def shade(colour: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    b, g, r = (int(min(255.0, max(0.0, c * k))) for c in colour)
    return (b, g, r)


def encode_video(path: str, frames: Iterable[np.ndarray], fps: float, size: tuple[int, int]) -> int:
    """Write BGR frames (an iterable) as an MJPEG AVI; returns the number of frames."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    count = 0
    try:
        for frame in frames:
            writer.write(frame)
            count += 1
    finally:
        writer.release()
    return count
