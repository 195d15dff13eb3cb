"""Procedural images of a rubbish bin seen from a camera above it, at any fill level.

One renderer serves three uses, so what the model learns is what the demo and the tests show:
the training and held-out sets of the ``bin-fill`` model (``models/train/``), the video of a bin
filling over a day (``cityedge simulate bin-video``, the demo and the hil-test), and unit tests.

Geometry: the camera looks down into an open bin (a wheelie bin with its lid open, a street
litter bin, a skip). The rim is a rounded rectangle or an ellipse; the bottom is the same shape
smaller (perspective) and offset (the camera is not exactly above). Rubbish at fill ``f``
forms a surface between the two: its scale and centre are interpolated from the bottom (``f=0``)
to the rim (``f=1``), and the inner walls show between the rim and that surface, darker with
depth. ``overflow`` heaps rubbish over the rim and onto the ground around the bin.

Variety (each drawn from a :class:`Settings` range): bin shape, size, rotation, depth and
perspective, body and rubbish colours, rubbish kinds (bags, paper, bottles, food scraps, cut
grass), ground texture, lighting (gain, tint, gradient, a hard shadow), night infrared look
(grey, illuminator hot spot, vignette, sensor noise), camera jitter, occlusion (an arm, a leaf,
a passing object) and JPEG compression.

Everything is numpy + OpenCV drawing driven by one ``numpy.random.Generator``: the same seed
and settings give the same pixels with the same OpenCV version.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from sim.scenes.synth import CameraLook, camera_effects, encode_video, fill_poly, shade

Colour = tuple[int, int, int]  # BGR

# Bin body colours (BGR). Training draws from TRAIN_COLOURS; the held-out set adds colours the
# model never saw.
TRAIN_COLOURS: tuple[Colour, ...] = (
    (40, 110, 40),  # green
    (90, 90, 90),  # grey
    (30, 30, 30),  # black
    (140, 80, 30),  # blue
    (40, 60, 100),  # brown
    (40, 40, 140),  # dark red
)
HELDOUT_COLOURS: tuple[Colour, ...] = ((30, 170, 220), (20, 120, 230), (120, 60, 110))


@dataclass(frozen=True)
class Settings:
    """Ranges the renderer draws from. :data:`TRAIN` and :data:`HELDOUT` differ on purpose."""

    colours: tuple[Colour, ...] = TRAIN_COLOURS
    bin_size: tuple[float, float] = (0.32, 0.44)  # half-size of the rim / crop side
    depth: tuple[float, float] = (0.45, 0.7)  # bottom scale relative to the rim
    tilt: float = 0.18  # largest perspective offset of the bottom, in rim half-sizes
    rotation_deg: float = 12.0
    round_share: float = 0.35
    night_share: float = 0.2
    occlusion_share: float = 0.25
    shadow_share: float = 0.3
    gain: tuple[float, float] = (0.55, 1.3)
    rubbish_density: tuple[float, float] = (0.6, 1.4)
    jpeg_quality: tuple[int, int] = (35, 95)
    overflow_share: float = 0.15


TRAIN = Settings()
HELDOUT = Settings(
    colours=TRAIN_COLOURS + HELDOUT_COLOURS,
    bin_size=(0.30, 0.46),
    depth=(0.4, 0.75),
    tilt=0.24,
    rotation_deg=16.0,
    round_share=0.5,
    night_share=0.35,
    occlusion_share=0.35,
    shadow_share=0.4,
    gain=(0.45, 1.4),
    rubbish_density=(0.5, 1.6),
    jpeg_quality=(25, 95),
)


@dataclass(frozen=True)
class BinLook:
    """One bin as a camera sees it: everything but the fill level."""

    shape: Literal["rect", "round"]
    body: Colour
    centre: tuple[float, float]  # of the rim, in output pixels
    half: tuple[float, float]  # rim half-width, half-height in output pixels
    angle_deg: float
    depth: float  # bottom scale
    tilt: tuple[float, float]  # bottom centre offset in rim half-sizes
    ground: Colour
    rubbish_seed: int
    density: float
    camera: CameraLook = field(default_factory=CameraLook)
    occlusions: tuple[tuple[float, ...], ...] = field(default_factory=tuple)


def _pick(rng: np.random.Generator, items: tuple[Colour, ...]) -> Colour:
    c = items[int(rng.integers(len(items)))]
    jitter = rng.integers(-15, 16, 3)
    return (
        int(np.clip(c[0] + jitter[0], 0, 255)),
        int(np.clip(c[1] + jitter[1], 0, 255)),
        int(np.clip(c[2] + jitter[2], 0, 255)),
    )


def sample_look(
    rng: np.random.Generator, settings: Settings, size: tuple[int, int] = (64, 64)
) -> BinLook:
    """A random bin filling a ``size`` (w, h) crop, as the model sees a region of interest."""
    w, h = size
    s = settings
    half = rng.uniform(*s.bin_size) * min(w, h) * 2
    aspect = rng.uniform(0.8, 1.25)
    occlusions: list[tuple[float, ...]] = []
    if rng.random() < s.occlusion_share:
        for _ in range(int(rng.integers(1, 3))):
            occlusions.append(
                (
                    float(rng.integers(0, 3)),  # kind: arm, leaf, blob
                    float(rng.uniform(0, 1)),
                    float(rng.uniform(0, 1)),
                    float(rng.uniform(0.1, 0.35)),
                    float(rng.uniform(0, math.pi)),
                    float(rng.integers(0, 1 << 30)),
                )
            )
    grey = int(rng.integers(60, 150))
    return BinLook(
        shape="round" if rng.random() < s.round_share else "rect",
        body=_pick(rng, s.colours),
        centre=(w / 2 + rng.uniform(-0.06, 0.06) * w, h / 2 + rng.uniform(-0.06, 0.06) * h),
        half=(half / 2 * math.sqrt(aspect), half / 2 / math.sqrt(aspect)),
        angle_deg=float(rng.uniform(-s.rotation_deg, s.rotation_deg)),
        depth=float(rng.uniform(*s.depth)),
        tilt=(float(rng.uniform(-s.tilt, s.tilt)), float(rng.uniform(-s.tilt, s.tilt))),
        ground=(
            int(np.clip(grey + rng.integers(-10, 10), 0, 255)),
            grey,
            int(np.clip(grey + rng.integers(-5, 20), 0, 255)),
        ),
        rubbish_seed=int(rng.integers(0, 1 << 30)),
        density=float(rng.uniform(*s.rubbish_density)),
        camera=CameraLook.sample(
            rng,
            gain=s.gain,
            night_share=s.night_share,
            shadow_share=s.shadow_share,
            jpeg_quality=s.jpeg_quality,
        ),
        occlusions=tuple(occlusions),
    )


# -- drawing ------------------------------------------------------------------------------------
def _outline(look: BinLook, scale: float, centre: tuple[float, float], n: int = 48) -> np.ndarray:
    """The rim shape scaled by ``scale`` around ``centre``: an (n, 2) polygon in pixels."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    if look.shape == "round":
        x, y = np.cos(t), np.sin(t)
    else:  # a rounded rectangle (superellipse)
        x = np.sign(np.cos(t)) * np.abs(np.cos(t)) ** 0.25
        y = np.sign(np.sin(t)) * np.abs(np.sin(t)) ** 0.25
    a = math.radians(look.angle_deg)
    hx, hy = look.half[0] * scale, look.half[1] * scale
    px = x * hx * math.cos(a) - y * hy * math.sin(a) + centre[0]
    py = x * hx * math.sin(a) + y * hy * math.cos(a) + centre[1]
    return np.stack([px, py], axis=1)


_RUBBISH: tuple[Colour, ...] = (
    (25, 25, 25),  # black bag
    (200, 200, 200),  # white bag
    (160, 110, 60),  # blue bag
    (60, 120, 60),  # green bag
    (180, 200, 210),  # paper
    (60, 90, 130),  # cardboard
    (70, 100, 110),  # food
    (50, 140, 80),  # grass
    (210, 180, 150),  # plastic
)


@functools.lru_cache(maxsize=4)  # a video draws the same bin's rubbish in every frame
def _rubbish(h: int, w: int, seed: int, density: float, unit: float) -> np.ndarray:
    """A full-frame texture of rubbish (bags, paper, bottles, scraps) at ``unit`` pixel scale."""
    rng = np.random.default_rng(seed)
    base = _RUBBISH[int(rng.integers(len(_RUBBISH)))]
    tex = np.empty((h, w, 3), np.uint8)
    tex[:] = shade(base, 0.7)
    n = int(density * (w * h) / max(unit * unit, 1.0) * 1.2) + 4
    for _ in range(n):
        kind = rng.random()
        c = _RUBBISH[int(rng.integers(len(_RUBBISH)))]
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        r = unit * float(rng.uniform(0.4, 1.6))
        ang = float(rng.uniform(0, 360))
        if kind < 0.45:  # a bag: an ellipse with a highlight
            axes = (max(1, int(r)), max(1, int(r * rng.uniform(0.6, 1.0))))
            cv2.ellipse(tex, (int(cx), int(cy)), axes, ang, 0, 360, c, -1, cv2.LINE_AA)
            hl = shade(c, 1.5) if sum(c) < 300 else shade(c, 1.1)
            cv2.ellipse(
                tex,
                (int(cx - r * 0.3), int(cy - r * 0.3)),
                (max(1, axes[0] // 3), max(1, axes[1] // 4)),
                ang,
                0,
                360,
                hl,
                -1,
                cv2.LINE_AA,
            )
        elif kind < 0.75:  # paper or cardboard: a rotated rectangle
            box = cv2.boxPoints(((cx, cy), (r * 1.6, r * 0.9), ang))
            cv2.fillPoly(tex, [box.astype(np.int32)], c, cv2.LINE_AA)
        elif kind < 0.88:  # a bottle or can
            cv2.ellipse(
                tex,
                (int(cx), int(cy)),
                (max(1, int(r * 0.9)), max(1, int(r * 0.3))),
                ang,
                0,
                360,
                shade(c, 1.2),
                -1,
                cv2.LINE_AA,
            )
        else:  # scraps: a cluster of small dots
            for _ in range(6):
                dx, dy = rng.normal(0, r * 0.5, 2)
                cv2.circle(tex, (int(cx + dx), int(cy + dy)), max(1, int(r * 0.2)), c, -1)
    noise = rng.normal(0, 10, (h, w, 1))
    out = np.clip(tex.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=4)  # the ground does not change while a camera watches
def _ground(h: int, w: int, colour: Colour, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.normal(0, 1, (max(2, h // 6), max(2, w // 6), 1)).astype(np.float32)
    grain = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)[:, :, None]
    fine = rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    img = np.array(colour, np.float32)[None, None, :] + grain * 10 + fine
    if rng.random() < 0.5:  # paving joints
        step = int(rng.integers(max(8, w // 8), max(9, w // 3)))
        img[:, ::step] *= 0.75
        img[::step, :] *= 0.75
    out: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    out.flags.writeable = False
    return out


def _mask_of(pts: np.ndarray, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return m


def _blend(dst: np.ndarray, src: np.ndarray, mask: np.ndarray) -> None:
    a = mask.astype(np.float32)[:, :, None] / 255.0
    dst[:] = (dst.astype(np.float32) * (1 - a) + src.astype(np.float32) * a).astype(np.uint8)


def render(
    look: BinLook,
    fill: float,
    overflow: bool,
    size: tuple[int, int],
    rng: np.random.Generator,
    *,
    compress: bool = True,
) -> np.ndarray:
    """The bin at ``fill`` (0 empty .. 1 full to the rim), BGR uint8 of ``size`` (w, h)."""
    w, h = size
    fill = float(np.clip(fill, 0.0, 1.0))
    img = _ground(h, w, look.ground, look.rubbish_seed + 2).copy()
    unit = max(2.0, min(look.half) * 0.22)
    rubbish = _rubbish(h, w, look.rubbish_seed, look.density, unit)
    rim_c = look.centre
    bottom_c = (
        rim_c[0] + look.tilt[0] * look.half[0],
        rim_c[1] + look.tilt[1] * look.half[1],
    )
    # a soft shadow of the bin on the ground
    shadow = _outline(look, 1.08, (rim_c[0] + unit * 0.6, rim_c[1] + unit * 0.6))
    _blend(
        img, (img * 0.55).astype(np.uint8), cv2.GaussianBlur(_mask_of(shadow, h, w), (0, 0), unit)
    )
    rim_t = 0.1  # rim thickness, share of the half-size
    fill_poly(img, _outline(look, 1.0, rim_c), shade(look.body, 1.15))
    inner = 1.0 - rim_t
    # inner walls, from the rim down to the rubbish surface, darker with depth
    surface = look.depth + (1.0 - look.depth) * fill
    steps = 10
    for k in range(steps + 1):
        scale_k = inner - (inner - surface * inner) * k / steps
        f_k = (scale_k / inner - look.depth) / (1.0 - look.depth)
        c_k = (
            bottom_c[0] + (rim_c[0] - bottom_c[0]) * f_k,
            bottom_c[1] + (rim_c[1] - bottom_c[1]) * f_k,
        )
        fill_poly(img, _outline(look, scale_k, c_k), shade(look.body, 0.75 - 0.5 * k / steps))
    # the rubbish surface (at fill 0, the bin's floor with a few scraps)
    surf_c = (
        bottom_c[0] + (rim_c[0] - bottom_c[0]) * fill,
        bottom_c[1] + (rim_c[1] - bottom_c[1]) * fill,
    )
    surf = _outline(look, surface * inner, surf_c)
    depth_dark = 0.45 + 0.55 * fill
    if fill > 0.02:
        layer = (rubbish.astype(np.float32) * depth_dark).astype(np.uint8)
        _blend(img, layer, _mask_of(surf, h, w))
    else:
        fill_poly(img, surf, shade(look.body, 0.22))
    if overflow:
        # a heap over the rim and bags on the ground around it
        heap = _outline(look, 1.08, rim_c)
        m = _mask_of(heap, h, w)
        jag = rng.uniform(0, 1, (h, w)) < 0.12
        m[jag & (m > 0)] = 0
        _blend(img, rubbish, m)
        orng = np.random.default_rng(look.rubbish_seed + 1)
        for _ in range(int(orng.integers(3, 7))):
            a = float(orng.uniform(0, 2 * math.pi))
            rr = float(orng.uniform(1.0, 1.35))
            cx = rim_c[0] + math.cos(a) * look.half[0] * rr
            cy = rim_c[1] + math.sin(a) * look.half[1] * rr
            c = _RUBBISH[int(orng.integers(len(_RUBBISH)))]
            axes = (
                max(2, int(unit * orng.uniform(1.0, 2.0))),
                max(2, int(unit * orng.uniform(0.7, 1.4))),
            )
            cv2.ellipse(
                img,
                (int(cx), int(cy)),
                axes,
                float(orng.uniform(0, 180)),
                0,
                360,
                c,
                -1,
                cv2.LINE_AA,
            )
    else:
        # the rim is drawn again over the surface edge so the opening reads as an opening
        ring = _mask_of(_outline(look, 1.0, rim_c), h, w)
        ring[_mask_of(_outline(look, inner, rim_c), h, w) > 128] = 0
        layer = np.empty_like(img)
        layer[:] = shade(look.body, 1.15)
        _blend(img, layer, ring)
    for occ in look.occlusions:
        _occlude(img, occ)
    return camera_effects(img, look.camera, rng, compress=compress)


def _occlude(img: np.ndarray, occ: tuple[float, ...]) -> None:
    h, w = img.shape[:2]
    kind, u, v, size, ang, seed = occ
    orng = np.random.default_rng(int(seed))
    x, y = int(u * w), int(v * h)
    r = int(size * min(w, h))
    if kind == 2:
        r = r // 2
    if kind == 0:  # an arm reaching in from an edge
        skin = [(80, 110, 170), (60, 90, 140), (110, 150, 210), (40, 60, 90)][int(orng.integers(4))]
        ex, ey = int(x + math.cos(ang) * w), int(y + math.sin(ang) * h)
        cv2.line(img, (x, y), (ex, ey), skin, max(2, r // 2), cv2.LINE_AA)
        cv2.circle(img, (x, y), max(2, r // 3), skin, -1, cv2.LINE_AA)
    elif kind == 1:  # a leaf
        c = (int(orng.integers(20, 60)), int(orng.integers(90, 160)), int(orng.integers(60, 140)))
        cv2.ellipse(img, (x, y), (max(2, r // 2), max(1, r // 5)), math.degrees(ang), 0, 360, c, -1)
    else:  # something passing close to the camera, out of focus
        b, g, rr = (int(v) for v in orng.integers(0, 255, 3))
        layer = img.copy()
        cv2.circle(layer, (x, y), max(2, r), (b, g, rr), -1)
        img[:] = cv2.addWeighted(cv2.GaussianBlur(layer, (0, 0), max(1, r // 3)), 0.8, img, 0.2, 0)


def sample(
    rng: np.random.Generator, settings: Settings, size: int = 64
) -> tuple[np.ndarray, float, bool]:
    """One training example: (BGR image, fill fraction, overflowing)."""
    look = sample_look(rng, settings, (size, size))
    overflow = bool(rng.random() < settings.overflow_share)
    fill = 1.0 if overflow else float(rng.uniform(0.0, 1.0))
    return render(look, fill, overflow, (size, size), rng), fill, overflow


# -- a day at one bin (the demo's and the hil-test's camera) -----------------------------------
WIDTH, HEIGHT = 640, 480
ROI = (200, 120, 440, 360)  # x1, y1, x2, y2 of the bin's region of interest in the video


@dataclass(frozen=True)
class DayPlan:
    """What happens at the bin: fill level over the (compressed) day and when it is emptied."""

    seconds: float = 40.0  # video length
    fps: float = 10.0
    start_fill: float = 0.05
    peak_fill: float = 0.95
    emptied_at: float = 0.7  # share of the video when the truck empties the bin
    after_fill: float = 0.04
    overflow_from: float | None = None  # share of the video from which rubbish overflows
    passers: tuple[float, ...] = (0.2, 0.45)  # shares of the video when someone walks past
    night: tuple[float, float] = (0.0, 0.12)  # share of the video in infrared night mode
    seed: int = 2024


def fill_at(plan: DayPlan, t: float) -> float:
    """Fill fraction at ``t`` (share of the video, 0..1): rising, emptied, rising again."""
    if t < plan.emptied_at:
        return plan.start_fill + (plan.peak_fill - plan.start_fill) * min(
            1.0, t / (plan.emptied_at * 0.85)
        )
    return plan.after_fill + 0.1 * (t - plan.emptied_at)


def day_frames(plan: DayPlan) -> Iterator[tuple[np.ndarray, float]]:
    """Frames of the day at 640x480 with the bin in :data:`ROI`, and the true fill of each."""
    rng = np.random.default_rng(plan.seed)
    x1, y1, x2, y2 = ROI
    look = replace(
        sample_look(np.random.default_rng(plan.seed), TRAIN, (x2 - x1, y2 - y1)),
        shape="rect",
        body=TRAIN_COLOURS[0],
        angle_deg=4.0,
        tilt=(0.05, 0.1),
        depth=0.55,
        occlusions=(),
        camera=CameraLook(gradient=(0.1, 0.0)),
    )
    look = replace(
        look, centre=((x1 + x2) / 2, (y1 + y2) / 2), half=((x2 - x1) * 0.38, (y2 - y1) * 0.36)
    )
    n = max(1, round(plan.seconds * plan.fps))
    for i in range(n):
        t = i / n
        fill = fill_at(plan, t)
        overflow = plan.overflow_from is not None and plan.overflow_from <= t < plan.emptied_at
        night = plan.night[0] <= t < plan.night[1]
        hour = 24.0 * t
        daylight = 0.75 + 0.35 * math.sin(math.pi * min(1.0, max(0.0, (hour - 5) / 15)))
        camera = replace(look.camera, night=night, gain=1.0 if night else daylight)
        frame_look = replace(look, camera=camera)
        for p in plan.passers:
            if p <= t < p + 0.03:  # someone walks across the bin
                u = (t - p) / 0.03
                frame_look = replace(
                    frame_look,
                    occlusions=((2.0, u, 0.5, 0.12, 0.0, 7.0),),
                )
        frame = render(frame_look, fill, overflow, (WIDTH, HEIGHT), rng, compress=False)
        yield frame, (1.0 if overflow else fill)


def write_day_video(path: Path, plan: DayPlan | None = None) -> int:
    """Write the day as an MJPEG AVI; returns the number of frames."""
    plan = plan or DayPlan()
    return encode_video(str(path), (f for f, _ in day_frames(plan)), plan.fps, (WIDTH, HEIGHT))
