"""Procedural heads with and without hair covers and masks, and the factory-floor clip.

Three uses share these drawings, so the hair-cover model learns what the demo shows:

- :func:`sample_head` makes the training and held-out sets of the ``hair-cover`` model: a head
  (face, ears, eyes, hair in several styles and colours, or a bouffant cap, a hairnet or a
  clean-room hood), optionally a mask, shoulders in a coat, a factory wall behind, then camera
  effects (:mod:`sim.scenes.synth`). The crop is laid out exactly as
  :func:`edge.hygiene.crops.head_box` cuts a
  head from a real frame around a face box, with the face box jittered as a detector's is.
- :func:`draw_cap` and :func:`draw_mask` put the same cover and mask on a real photo, given the
  face box and landmarks a face detector found (the factory clip, the smoke tests);
- :func:`factory_frames` renders the clean-zone clip: a factory floor with a marked clean zone,
  a real person (cut out of a registry photo with GrabCut) who walks in wearing a cap and a
  mask, takes the mask off, stays, and walks out.

Geometry: a face box is ``(x1, y1, x2, y2)`` from eyebrows to chin, cheek to cheek (MTCNN's);
landmarks are left eye, right eye, nose tip, mouth left, mouth right.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge.hygiene.crops import crop, head_box
from edge.vision.manifest import ModelStore
from sim.scenes.synth import CameraLook, camera_effects, encode_video, fill_poly, shade

Colour = tuple[int, int, int]
Box = tuple[float, float, float, float]
Cover = Literal["bouffant", "hairnet", "hood"]
Hair = Literal["short", "long", "curly", "bun", "fringe", "bald"]

SKIN: tuple[Colour, ...] = (
    (150, 180, 225),
    (120, 160, 210),
    (95, 135, 190),
    (70, 105, 160),
    (50, 75, 120),
    (35, 55, 90),
)
HAIR: tuple[Colour, ...] = (
    (20, 20, 25),
    (25, 40, 60),
    (40, 70, 110),
    (90, 150, 200),  # blond
    (30, 60, 150),  # red
    (160, 160, 165),  # grey
    (215, 215, 220),  # white
)
COVER_TRAIN: tuple[Colour, ...] = (
    (245, 245, 245),
    (230, 200, 150),
    (200, 130, 60),
    (120, 170, 100),
    (40, 40, 40),
)
COVER_HELDOUT: tuple[Colour, ...] = ((60, 210, 230), (180, 110, 200), (200, 200, 120))
MASKS: tuple[Colour, ...] = ((235, 205, 160), (245, 245, 245), (40, 40, 40), (190, 160, 235))
WALLS: tuple[Colour, ...] = ((230, 230, 225), (200, 205, 200), (150, 160, 150), (170, 150, 120))


@dataclass(frozen=True)
class HeadSettings:
    covers: tuple[Colour, ...] = COVER_TRAIN
    hair: tuple[Colour, ...] = HAIR
    box_jitter: float = 0.08  # of the face size: how far the detector's box is off
    rotation_deg: float = 12.0
    mask_share: float = 0.5
    hairnet_share: float = 0.25
    hood_share: float = 0.15
    gain: tuple[float, float] = (0.6, 1.3)
    night_share: float = 0.0
    shadow_share: float = 0.25
    jpeg_quality: tuple[int, int] = (40, 95)
    blur_max: float = 1.2

    def camera(self, rng: np.random.Generator) -> CameraLook:
        return CameraLook.sample(
            rng,
            gain=self.gain,
            night_share=self.night_share,
            shadow_share=self.shadow_share,
            jpeg_quality=self.jpeg_quality,
            blur_max=self.blur_max,
        )


TRAIN = HeadSettings()
HELDOUT = HeadSettings(
    covers=COVER_TRAIN + COVER_HELDOUT,
    hair=(*HAIR, (120, 60, 200), (200, 80, 40)),  # dyed pink, dyed blue
    box_jitter=0.12,
    rotation_deg=18.0,
    hairnet_share=0.35,
    hood_share=0.1,
    gain=(0.5, 1.4),
    shadow_share=0.35,
    jpeg_quality=(30, 95),
    blur_max=1.6,
)


def face_from_box(face: Box) -> np.ndarray:
    """Plausible landmarks for a frontal face box (for procedural faces)."""
    x1, y1, x2, y2 = face
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    return np.array(
        [
            [cx - 0.2 * w, y1 + 0.33 * h],
            [cx + 0.2 * w, y1 + 0.33 * h],
            [cx, y1 + 0.58 * h],
            [cx - 0.15 * w, y1 + 0.8 * h],
            [cx + 0.15 * w, y1 + 0.8 * h],
        ],
        np.float32,
    )


def _ellipse(
    img: np.ndarray,
    centre: tuple[float, float],
    axes: tuple[float, float],
    colour: Colour,
    angle: float = 0.0,
    start: float = 0.0,
    end: float = 360.0,
    thickness: int = -1,
) -> None:
    cv2.ellipse(
        img,
        (round(centre[0] * 16), round(centre[1] * 16)),
        (max(1, round(axes[0] * 16)), max(1, round(axes[1] * 16))),
        angle,
        start,
        end,
        colour,
        thickness,
        cv2.LINE_AA,
        4,
    )


def _skull(face: Box) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centre and axes of the head around a face box (its top is 0.62 face heights above)."""
    x1, y1, x2, y2 = face
    w, h = x2 - x1, y2 - y1
    return ((x1 + x2) / 2, y1 + 0.1 * h), (0.56 * w, 0.72 * h)


def _hair_mask(face: Box, style: Hair, shape: tuple[int, ...]) -> np.ndarray:
    """Where hair shows: the head above the hairline, and down the sides to the ears."""
    (cx, cy), (ax, ay) = _skull(face)
    y1, h, w = face[1], face[3] - face[1], face[2] - face[0]
    m = np.zeros(shape[:2], np.uint8)
    _ellipse(m, (cx, cy), (ax * 1.04, ay * 1.04), (255, 255, 255))
    hairline = y1 + (0.16 if style == "fringe" else -0.02) * h
    rows = np.arange(m.shape[0])[:, None]
    cols = np.arange(m.shape[1])[None, :]
    sides = np.abs(cols - cx) > 0.4 * w
    m[(rows > hairline) & ~(sides & (rows < y1 + 0.4 * h))] = 0
    return m


def _paint(img: np.ndarray, mask: np.ndarray, layer: np.ndarray, opacity: float = 1.0) -> None:
    a = (mask.astype(np.float32) / 255.0 * opacity)[:, :, None]
    img[:] = (img * (1 - a) + layer * a).astype(np.uint8)


def draw_hair(
    img: np.ndarray, face: Box, style: Hair, colour: Colour, rng: np.random.Generator
) -> None:
    """Hair on the head (``long`` also falls behind the shoulders: draw that one first)."""
    (cx, cy), (ax, ay) = _skull(face)
    h = face[3] - face[1]
    if style == "bald":
        return
    if style == "long":
        fill_poly(
            img,
            np.array(
                [
                    [cx - ax * 1.05, cy],
                    [cx + ax * 1.05, cy],
                    [cx + ax * 1.2, cy + 1.6 * h],
                    [cx - ax * 1.2, cy + 1.6 * h],
                ]
            ),
            shade(colour, 0.85),
        )
    layer = np.empty_like(img)
    layer[:] = colour
    for _ in range(30):  # strands
        x = cx + rng.uniform(-1.0, 1.0) * ax
        cv2.line(
            layer,
            (round(x), round(cy - ay * rng.uniform(0.5, 1.0))),
            (round(x + rng.uniform(-0.2, 0.2) * ax), round(cy + rng.uniform(-0.2, 0.3) * ay)),
            shade(colour, rng.uniform(0.6, 1.5)),
            1,
            cv2.LINE_AA,
        )
    mask = _hair_mask(face, style, img.shape)
    if style == "curly":
        for _ in range(40):
            a = rng.uniform(math.pi * 0.9, math.pi * 2.1)
            r = rng.uniform(0.9, 1.2)
            _ellipse(
                mask,
                (cx + math.cos(a) * ax * r, cy + math.sin(a) * ay * r),
                (ax * 0.2, ax * 0.2),
                (255, 255, 255),
            )
    if style == "bun":
        _ellipse(mask, (cx, cy - ay * 1.05), (ax * 0.35, ay * 0.25), (255, 255, 255))
    _paint(img, mask, layer)


def draw_cap(
    img: np.ndarray, face: Box, kind: Cover, colour: Colour, rng: np.random.Generator
) -> np.ndarray:
    """A hair cover on the head of ``face`` (works on real photos and procedural heads).

    Returns where it painted (uint8 0..255), so a cut-out person's alpha can take the cap in.
    """
    (cx, cy), (ax, ay) = _skull(face)
    y1, w, h = face[1], face[2] - face[0], face[3] - face[1]
    hem = y1 + 0.02 * h
    dark = shade(colour, 0.82)
    if kind == "hood":  # head, ears and neck covered; only the face shows
        hood = np.zeros(img.shape[:2], np.uint8)
        _ellipse(hood, (cx, cy), (ax * 1.22, ay * 1.15), (255, 255, 255))
        fill_poly(
            hood,
            np.array(
                [
                    [cx - ax * 1.22, cy],
                    [cx + ax * 1.22, cy],
                    [cx + ax * 1.35, face[3] + 0.6 * h],
                    [cx - ax * 1.35, face[3] + 0.6 * h],
                ]
            ),
            (255,),
        )
        _ellipse(hood, (cx, y1 + 0.5 * h), (0.44 * w, 0.56 * h), (0, 0, 0))
        layer = np.empty_like(img)
        layer[:] = colour
        _paint(img, hood, layer)
        return hood
    if kind == "hairnet":  # the hair stays visible under a fine mesh, elastic at the hairline
        net = img.copy()
        step = max(2.0, w / 12)
        top, bottom = cy - ay * 1.1, hem
        left, right = cx - ax * 1.1, cx + ax * 1.1
        t = 0.0
        while t < (right - left) + (bottom - top):
            for a, b in (
                ((left + t, top), (left + t - (bottom - top), bottom)),
                ((left + t - (bottom - top), top), (left + t, bottom)),
            ):
                cv2.line(
                    net,
                    (round(a[0]), round(a[1])),
                    (round(b[0]), round(b[1])),
                    colour,
                    1,
                    cv2.LINE_AA,
                )
            t += step
        region = np.zeros(img.shape[:2], np.uint8)
        _ellipse(region, (cx, cy), (ax * 1.1, ay * 1.1), (255, 255, 255))
        region[int(max(0, hem)) :] = 0
        _paint(img, region, net, 0.85)
        cv2.line(
            img,
            (round(cx - ax), round(hem)),
            (round(cx + ax), round(hem)),
            colour,
            max(1, round(w / 25)),
            cv2.LINE_AA,
        )
        return region
    # bouffant: a puffy disposable cap, wider than the head, with pleats and an elastic hem
    puff = rng.uniform(1.1, 1.28)
    cap = np.zeros((img.shape[0], img.shape[1]), np.uint8)
    _ellipse(cap, (cx, cy - 0.05 * h), (ax * puff, ay * puff * 0.92), (255, 255, 255))
    rows = np.arange(cap.shape[0])[:, None]
    sides = np.abs(np.arange(cap.shape[1])[None, :] - cx) > 0.4 * w
    cap[(rows > hem) & ~(sides & (rows < y1 + 0.35 * h))] = 0  # down over the temples
    layer = np.empty_like(img)
    layer[:] = colour
    for k in range(6):
        angle = math.pi * (1.1 + 0.8 * k / 5)
        cv2.line(
            layer,
            (
                round(cx + math.cos(angle) * ax * puff * 0.95),
                round(cy - 0.05 * h + math.sin(angle) * ay * puff * 0.95),
            ),
            (round(cx + math.cos(angle) * ax * 0.45), round(hem - 0.1 * h)),
            dark,
            1,
            cv2.LINE_AA,
        )
    _paint(img, cap, layer)
    cv2.line(
        img,
        (round(cx - ax * 1.02), round(hem)),
        (round(cx + ax * 1.02), round(hem)),
        dark,
        max(1, round(w / 20)),
        cv2.LINE_AA,
    )
    return cap


def draw_mask(img: np.ndarray, face: Box, landmarks: np.ndarray, colour: Colour) -> None:
    """A surgical mask from the nose bridge to under the chin, with pleats and ear loops."""
    x1, y1, x2, y2 = face
    w, h = x2 - x1, y2 - y1
    le, re, nose = landmarks[0], landmarks[1], landmarks[2]
    eye_y = (le[1] + re[1]) / 2
    top = eye_y + 0.45 * (nose[1] - eye_y)
    bottom = y2 + 0.08 * h
    left, right, cx = x1 + 0.02 * w, x2 - 0.02 * w, float(nose[0])
    span = bottom - top
    pts = np.array(
        [
            [left, top + 0.15 * span],
            [cx, top - 0.05 * span],
            [right, top + 0.15 * span],
            [right - 0.08 * w, bottom - 0.15 * span],
            [cx, bottom],
            [left + 0.08 * w, bottom - 0.15 * span],
        ]
    )
    fill_poly(img, pts, colour)
    dark = shade(colour, 0.84)
    for k in (0.35, 0.55, 0.75):
        y = round(top + k * span)
        cv2.line(
            img,
            (round(left + 0.05 * w), y),
            (round(right - 0.05 * w), y),
            dark,
            max(1, round(w / 80)),
            cv2.LINE_AA,
        )
    for side, x in ((-1, left), (1, right)):
        cv2.line(
            img,
            (round(x), round(top + 0.2 * span)),
            (round(x + side * 0.06 * w), round(eye_y)),
            dark,
            1,
            cv2.LINE_AA,
        )


def _wall(size: int, colour: Colour, rng: np.random.Generator) -> np.ndarray:
    img = np.empty((size, size, 3), np.uint8)
    img[:] = colour
    kind = rng.random()
    if kind < 0.4:  # tiles
        step = int(rng.integers(max(4, size // 8), max(5, size // 3)))
        grout = shade(colour, 0.8)
        img[::step, :] = grout
        img[:, ::step] = grout
    elif kind < 0.7:  # brushed steel
        streaks = rng.normal(0, 12, (size, 1, 1))
        img[:] = np.clip(img.astype(np.float32) + streaks, 0, 255).astype(np.uint8)
    else:  # machinery: a few boxes
        for _ in range(3):
            p = rng.integers(0, size, 2)
            q = p + rng.integers(size // 6, size // 2, 2)
            cv2.rectangle(
                img,
                (int(p[0]), int(p[1])),
                (int(q[0]), int(q[1])),
                shade(colour, rng.uniform(0.5, 1.2)),
                -1,
            )
    return img


def _pick(rng: np.random.Generator, items: tuple[Colour, ...]) -> Colour:
    c = items[int(rng.integers(len(items)))]
    j = rng.integers(-12, 13, 3)
    return (
        int(np.clip(c[0] + j[0], 0, 255)),
        int(np.clip(c[1] + j[1], 0, 255)),
        int(np.clip(c[2] + j[2], 0, 255)),
    )


def sample_head(
    rng: np.random.Generator, settings: HeadSettings, size: int = 64, *, covered: bool | None = None
) -> tuple[np.ndarray, bool, bool]:
    """One example: (BGR crop laid out as :func:`head_box` cuts it, hair covered, masked)."""
    s = settings
    covered = bool(rng.random() < 0.5) if covered is None else covered
    masked = bool(rng.random() < s.mask_share)
    # render at 3x and shrink (anti-aliasing as a camera's resampling would give)
    k = 3
    big = size * k
    img = _wall(big, _pick(rng, WALLS), rng)
    # the face box in crop coordinates is the inverse of head_box(), then jittered
    fh = big / 1.9
    fx1 = big / 2 - fh / 2
    fy1 = 0.75 * fh
    j = s.box_jitter * fh
    face = (
        fx1 + rng.uniform(-j, j),
        fy1 + rng.uniform(-j, j),
        fx1 + fh * rng.uniform(0.85, 1.0) + rng.uniform(-j, j),
        fy1 + fh + rng.uniform(-j, j),
    )
    fw, fhh = face[2] - face[0], face[3] - face[1]
    cx = (face[0] + face[2]) / 2
    skin = _pick(rng, SKIN)
    hair_colour = _pick(rng, s.hair)
    styles: tuple[Hair, ...] = ("short", "long", "curly", "bun", "fringe", "bald")
    style = styles[int(rng.integers(len(styles)))]
    if covered and style == "long" and rng.random() < 0.7:
        style = "short"  # long hair is tucked in under a cap
    coat = _pick(
        rng, ((245, 245, 245), (200, 140, 60), (120, 170, 100), (60, 60, 60), (120, 120, 200))
    )
    if style == "long" and not covered:
        draw_hair(img, face, style, hair_colour, rng)
    # shoulders and neck
    fill_poly(
        img,
        np.array(
            [
                [cx - 0.9 * fw, big],
                [cx - 0.55 * fw, face[3] + 0.25 * fhh],
                [cx + 0.55 * fw, face[3] + 0.25 * fhh],
                [cx + 0.9 * fw, big],
            ]
        ),
        coat,
    )
    fill_poly(
        img,
        np.array(
            [
                [cx - 0.22 * fw, face[3] - 0.1 * fhh],
                [cx + 0.22 * fw, face[3] - 0.1 * fhh],
                [cx + 0.25 * fw, face[3] + 0.3 * fhh],
                [cx - 0.25 * fw, face[3] + 0.3 * fhh],
            ]
        ),
        shade(skin, 0.85),
    )
    # head: skull, ears, face
    (sx, sy), (ax, ay) = _skull(face)
    _ellipse(img, (sx, sy), (ax, ay), skin)
    for side in (-1, 1):
        _ellipse(
            img,
            (cx + side * 0.52 * fw, face[1] + 0.45 * fhh),
            (0.09 * fw, 0.16 * fhh),
            shade(skin, 0.9),
        )
    _ellipse(img, (cx, face[1] + 0.48 * fhh), (0.5 * fw, 0.56 * fhh), skin)
    lm = face_from_box(face)
    yaw = rng.uniform(-0.08, 0.08) * fw
    lm[:, 0] += yaw
    for p in lm[:2]:
        _ellipse(img, (float(p[0]), float(p[1])), (0.07 * fw, 0.035 * fhh), (245, 245, 245))
        _ellipse(img, (float(p[0]), float(p[1])), (0.035 * fw, 0.035 * fhh), (30, 30, 40))
        cv2.line(
            img,
            (round(p[0] - 0.09 * fw), round(p[1] - 0.09 * fhh)),
            (round(p[0] + 0.09 * fw), round(p[1] - 0.1 * fhh)),
            shade(hair_colour, 0.8) if style != "bald" else shade(skin, 0.6),
            max(1, round(fw / 30)),
            cv2.LINE_AA,
        )
    cv2.line(
        img,
        (round(lm[2][0]), round(lm[0][1] + 0.1 * fhh)),
        (round(lm[2][0]), round(lm[2][1])),
        shade(skin, 0.75),
        max(1, round(fw / 40)),
        cv2.LINE_AA,
    )
    _ellipse(
        img,
        (float((lm[3][0] + lm[4][0]) / 2), float(lm[3][1])),
        (0.14 * fw, 0.04 * fhh),
        (70, 70, 150),
    )
    if covered:
        if style != "bald" and rng.random() < s.hairnet_share:
            draw_hair(img, face, style, hair_colour, rng)
            draw_cap(img, face, "hairnet", _pick(rng, s.covers), rng)
        elif rng.random() < s.hood_share / max(1e-6, 1 - s.hairnet_share):
            draw_cap(img, face, "hood", _pick(rng, s.covers), rng)
        else:
            draw_cap(img, face, "bouffant", _pick(rng, s.covers), rng)
    else:
        draw_hair(img, face, style, hair_colour, rng)
    if masked:
        draw_mask(img, face, lm, _pick(rng, MASKS))
    angle = rng.uniform(-s.rotation_deg, s.rotation_deg)
    m = cv2.getRotationMatrix2D((big / 2, fy1 + fh / 2), angle, 1.0)
    img = cv2.warpAffine(img, m, (big, big), borderMode=cv2.BORDER_REPLICATE)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    look = s.camera(rng)
    return camera_effects(img, look, rng), covered, masked


# -- the factory-floor clip -------------------------------------------------------------------
WIDTH, HEIGHT = 640, 480
#: The clean zone painted on the clip's floor (x, y polygon in pixels).
CLEAN_ZONE: tuple[tuple[int, int], ...] = ((250, 160), (630, 160), (630, 479), (250, 479))


def factory_floor() -> np.ndarray:
    """A still factory floor: tiled wall, steel table, grey epoxy floor, the clean zone marked."""
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:150] = (225, 228, 222)
    img[:150:24, :] = (190, 195, 190)
    img[:150, ::24] = (190, 195, 190)
    floor = np.linspace(120, 150, HEIGHT - 150, dtype=np.float32)[:, None, None]
    img[150:] = np.broadcast_to(floor, (HEIGHT - 150, WIDTH, 3)).astype(np.uint8)
    cv2.rectangle(img, (40, 110), (230, 140), (200, 200, 205), -1)  # steel table
    cv2.rectangle(img, (50, 140), (60, 230), (170, 170, 175), -1)
    cv2.rectangle(img, (210, 140), (220, 230), (170, 170, 175), -1)
    pts = np.array(CLEAN_ZONE, np.int32)
    cv2.polylines(img, [pts], True, (40, 200, 230), 4, cv2.LINE_AA)  # yellow floor marking
    cv2.putText(img, "CLEAN ZONE", (420, 190), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (40, 200, 230), 2)
    return img


@dataclass(frozen=True)
class Cutout:
    """A person cut out of a photo: pixels, alpha, and their face box and landmarks."""

    image: np.ndarray  # BGR
    alpha: np.ndarray  # uint8 0..255
    face: Box
    landmarks: np.ndarray


def cut_out(photo: np.ndarray, face: Box, landmarks: np.ndarray, height: int) -> Cutout:
    """Scale the photo to ``height`` and separate the person with GrabCut seeded by the face."""
    s = height / photo.shape[0]
    img = cv2.resize(photo, (round(photo.shape[1] * s), height), interpolation=cv2.INTER_AREA)
    f = tuple(v * s for v in face)
    lm = landmarks * s
    h, w = img.shape[:2]
    fw, fh = f[2] - f[0], f[3] - f[1]
    cx = (f[0] + f[2]) / 2
    mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    body = np.array(
        [
            [cx - 2.2 * fw, h],
            [cx - 1.2 * fw, f[3] + 0.4 * fh],
            [cx + 1.2 * fw, f[3] + 0.4 * fh],
            [cx + 2.2 * fw, h],
        ],
        np.int32,
    )
    cv2.fillPoly(mask, [body], cv2.GC_PR_FGD)
    cv2.ellipse(
        mask,
        (round(cx), round(f[1] + 0.3 * fh)),
        (round(0.8 * fw), round(1.0 * fh)),
        0,
        0,
        360,
        cv2.GC_PR_FGD,
        -1,
    )
    cv2.ellipse(
        mask,
        (round(cx), round(f[1] + 0.5 * fh)),
        (round(0.4 * fw), round(0.5 * fh)),
        0,
        0,
        360,
        cv2.GC_FGD,
        -1,
    )
    cv2.setRNGSeed(1)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.grabCut(img, mask, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    alpha: np.ndarray = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0)
    alpha = cv2.morphologyEx(alpha.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    alpha = cv2.GaussianBlur(alpha, (0, 0), 1.0)
    pad = round(0.9 * fh)  # headroom for a cap drawn later
    img = np.asarray(cv2.copyMakeBorder(img, pad, 0, 0, 0, cv2.BORDER_REPLICATE))
    alpha = cv2.copyMakeBorder(alpha, pad, 0, 0, 0, cv2.BORDER_CONSTANT, value=0)
    lm = lm + np.array([0.0, pad], np.float32)
    return Cutout(img, alpha, (f[0], f[1] + pad, f[2], f[3] + pad), lm)


@dataclass(frozen=True)
class Step:
    """A stretch of the clip: where the person is and what they wear."""

    seconds: float
    x_from: float  # left edge of the person, pixels (None-like when absent: use a negative)
    x_to: float
    mask: bool = True
    cap: bool = True
    present: bool = True


#: The clip the hil-test and the demo use: the worker walks into the clean zone wearing a cap
#: and a mask, takes the mask off after a while, stays, then leaves (mask still off).
CLIP: tuple[Step, ...] = (
    Step(3.0, 0, 0, present=False),
    Step(2.0, -180, 330),
    Step(3.0, 330, 330),
    Step(7.0, 330, 330, mask=False),
    Step(2.0, 330, 660, mask=False),
    Step(1.0, 0, 0, present=False),
)


def factory_frames(
    person: Cutout, steps: Sequence[Step], fps: float, seed: int = 5
) -> Iterator[np.ndarray]:
    floor = factory_floor()
    rng = np.random.default_rng(seed)
    masked = person.image.copy()
    draw_mask(masked, person.face, person.landmarks, MASKS[0])
    looks = {}
    capped_alpha = person.alpha
    for mask_on in (True, False):
        img = (masked if mask_on else person.image).copy()
        cap = draw_cap(img, person.face, "bouffant", COVER_TRAIN[0], np.random.default_rng(seed))
        capped_alpha = np.maximum(person.alpha, cap)
        looks[mask_on] = img
    bare = person.image
    ph, pw = bare.shape[:2]
    for step in steps:
        n = max(1, round(step.seconds * fps))
        for i in range(n):
            frame = floor.copy()
            if step.present:
                x = round(step.x_from + (step.x_to - step.x_from) * i / max(1, n - 1))
                src = looks[step.mask] if step.cap else bare
                y = HEIGHT - ph
                x0, x1 = max(0, x), min(WIDTH, x + pw)
                if x1 > x0:
                    alpha = capped_alpha if step.cap else person.alpha
                    a = alpha[:, x0 - x : x1 - x].astype(np.float32)[:, :, None] / 255.0
                    region = frame[y:, x0:x1].astype(np.float32)
                    frame[y:, x0:x1] = (region * (1 - a) + src[:, x0 - x : x1 - x] * a).astype(
                        np.uint8
                    )
            noise = rng.normal(0, 1.5, frame.shape).astype(np.float32)
            yield np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def real_head(
    rng: np.random.Generator,
    settings: HeadSettings,
    photo: np.ndarray,
    face: Box,
    landmarks: np.ndarray,
    size: int = 64,
    *,
    covered: bool | None = None,
) -> tuple[np.ndarray, bool, bool]:
    """A head crop from a real photo, with a drawn cover (or its own hair) and maybe a mask."""
    s = settings
    covered = bool(rng.random() < 0.5) if covered is None else covered
    masked = bool(rng.random() < s.mask_share * 0.6)
    x1, y1, x2, y2 = head_box(face)
    pad = (x2 - x1) * 0.3
    ox, oy = max(0, int(x1 - pad)), max(0, int(y1 - pad))
    region = photo[oy : int(y2 + pad), ox : int(x2 + pad)].copy()
    f = (face[0] - ox, face[1] - oy, face[2] - ox, face[3] - oy)
    lm = landmarks - np.array([ox, oy], np.float32)
    if covered:
        u = rng.random()
        kind: Cover = (
            "hairnet"
            if u < s.hairnet_share
            else "hood"
            if u < s.hairnet_share + s.hood_share
            else "bouffant"
        )
        draw_cap(region, f, kind, _pick(rng, s.covers), rng)
    if masked:
        draw_mask(region, f, lm, _pick(rng, MASKS))
    fw = f[2] - f[0]
    j = s.box_jitter * fw
    jittered = tuple(v + rng.uniform(-j, j) for v in f)
    hb = head_box(jittered)
    angle = rng.uniform(-s.rotation_deg, s.rotation_deg) * 0.5
    cx, cy = (hb[0] + hb[2]) / 2, (hb[1] + hb[3]) / 2
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    region = cv2.warpAffine(
        region, m, (region.shape[1], region.shape[0]), borderMode=cv2.BORDER_REPLICATE
    )
    img = crop(region, hb, size)
    if rng.random() < 0.5:
        img = img[:, ::-1].copy()
    look = s.camera(rng)
    return camera_effects(img, look, rng), covered, masked


def worker_cutout(store: ModelStore, photo: str = "obama.jpg", height: int = 330) -> Cutout:
    """The clip's worker: a registry photo's person, cut out around the face MTCNN finds."""
    from edge.vision.face_detector import MtcnnDetector

    img = cv2.imread(str(store.asset(photo)), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read {photo}")
    faces = MtcnnDetector(store).detect(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if not faces:
        raise ValueError(f"no face found in {photo}")
    face = max(faces, key=lambda f: f.size)
    x1, y1, x2, y2 = (float(v) for v in face.box[:4])
    return cut_out(img, (x1, y1, x2, y2), face.landmarks, height)


def write_factory_clip(
    path: Path, store: ModelStore, steps: Sequence[Step] = CLIP, fps: float = 5.0
) -> int:
    """Write the clean-zone clip as an MJPEG AVI; returns the number of frames."""
    frames = factory_frames(worker_cutout(store), steps, fps)
    return encode_video(str(path), frames, fps, (WIDTH, HEIGHT))
