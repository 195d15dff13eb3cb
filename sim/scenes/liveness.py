"""People and presentation attacks in front of a gate camera that asks for a challenge.

Each :class:`Actor` renders the doorway camera's frame at a time ``t`` (seconds since it stepped
up) and is told when the gate screen showed a prompt (:meth:`Actor.prompt`), so the gate's
random challenge and the actor's answer form a closed loop — in the benchmark in one process,
in the hil-test through the real gateway's screen feed and an MJPEG camera stream.

- :class:`Resident` (bona fide): a head rendered from a real photo (:mod:`sim.scenes.heads`)
  that sways a little, blinks now and then, and answers each prompt after a human reaction time
  with a deliberate (longer) blink or a head turn of 22-35 degrees. Cooperative: it always does what is asked.
- :class:`PrintAttack`: the photo printed (ink desaturation, paper white and grain, a colour
  cast), on a sheet that may be bent (a cylinder), held by a hand that trembles; when a turn is
  asked the attacker turns the sheet, when a blink is asked he tips it.
- :class:`ScreenAttack`: the photo on a phone: sub-pixel RGB stripes that the camera resamples
  into moiré, a bezel, backlight gamma and tint, a glare spot and rolling refresh bands; held
  and moved like the print.
- :class:`ReplayAttack`: a recorded bona fide attempt (the frames a camera saw while the
  resident answered another challenge) played on the phone, started when the gate starts.

All of them are simulations made from registry photos; figures measured on them are named so.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import cv2
import numpy as np

from edge.face_access.liveness.challenge import ChallengeSettings
from edge.face_access.liveness.mesh import FaceMesh
from edge.face_access.liveness.passive import PassiveScores
from edge.face_access.liveness.runner import ChallengeRun
from edge.face_access.pipeline import FacePipeline
from edge.vision.face_detector import MtcnnDetector
from edge.vision.manifest import ModelStore
from sim.scenes.faces import HEIGHT, WIDTH, background, head_crop
from sim.scenes.heads import Head, build_head, pose_vertices, render

AttackKind = Literal["print", "print_bent", "screen", "replay"]
FACE_HEIGHT_PX = 360  # height of the head-and-shoulders crop on the 640x480 frame
DISPLAY_LATENCY_S = 0.05  # from the screen update to the person seeing it


class Actor(Protocol):
    def frame(self, t: float) -> np.ndarray: ...

    def prompt(self, step: int, action: str, t: float) -> None: ...


# -- shared pieces ------------------------------------------------------------------------------
def photo_crop(store: ModelStore, file: str, detector: MtcnnDetector, face: int = 0) -> np.ndarray:
    """The head-and-shoulders crop of the ``face``-th largest face of a registry photo, scaled
    to :data:`FACE_HEIGHT_PX` high."""
    bgr = cv2.imread(str(store.asset(file)))
    if bgr is None:
        raise ValueError(f"cannot read {file}")
    faces = sorted(detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), key=lambda f: -f.size)
    x1, y1, x2, y2 = head_crop(faces[face].box.tolist(), bgr.shape)
    crop = bgr[y1:y2, x1:x2]
    scale = FACE_HEIGHT_PX / crop.shape[0]
    w = min(int(crop.shape[1] * scale), WIDTH - 60)
    return cv2.resize(crop, (w, FACE_HEIGHT_PX), interpolation=cv2.INTER_AREA)


def head_of(photo: np.ndarray, detector: MtcnnDetector, mesh: FaceMesh) -> Head:
    rgb = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
    face = max(detector.detect(rgb), key=lambda f: f.size)
    return build_head(photo, mesh.landmarks(rgb, face.box))


def _smooth(x: float) -> float:
    """0 → 1 with zero slope at both ends (a cosine ramp)."""
    x = min(max(x, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * x)


@dataclass(frozen=True)
class Gesture:
    kind: Literal["blink", "turn"]
    start: float
    amplitude: float  # degrees for a turn (signed), 1 for a blink
    out_s: float
    hold_s: float
    back_s: float

    def value(self, t: float) -> float:
        u = t - self.start
        if u <= 0 or u >= self.out_s + self.hold_s + self.back_s:
            return 0.0
        if u < self.out_s:
            return self.amplitude * _smooth(u / self.out_s)
        if u < self.out_s + self.hold_s:
            return self.amplitude
        return self.amplitude * (1 - _smooth((u - self.out_s - self.hold_s) / self.back_s))


@dataclass(frozen=True)
class Camera:
    """What the doorway camera adds: exposure, colour balance, sensor noise, JPEG."""

    gain: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise: float = 2.0
    jpeg_quality: int = 85

    def shoot(self, scene: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        img = scene.astype(np.float32) * self.gain * np.array(self.tint, np.float32)
        img += rng.normal(0, self.noise, img.shape[:2])[:, :, None]
        out: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
        if self.jpeg_quality:
            ok, jpg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            decoded = cv2.imdecode(jpg, cv2.IMREAD_COLOR) if ok else None
            if decoded is not None:
                out = np.asarray(decoded)
        return out

    @classmethod
    def random(cls, rng: np.random.Generator) -> Camera:
        return cls(
            gain=float(rng.uniform(0.85, 1.15)),
            tint=(float(rng.uniform(0.92, 1.08)), 1.0, float(rng.uniform(0.92, 1.08))),
            noise=float(rng.uniform(1.0, 3.0)),
        )


def _place(canvas: np.ndarray, image: np.ndarray, x: int, y: int, mask: np.ndarray | None) -> None:
    """Paste ``image`` with its top-left at (x, y), clipped to the canvas, through ``mask``."""
    h, w = image.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    part = image[y0 - y : y1 - y, x0 - x : x1 - x]
    if mask is None:
        canvas[y0:y1, x0:x1] = part
    else:
        m = mask[y0 - y : y1 - y, x0 - x : x1 - x, None].astype(np.float32)
        canvas[y0:y1, x0:x1] = (part * m + canvas[y0:y1, x0:x1] * (1 - m)).astype(np.uint8)


# -- the bona fide resident ---------------------------------------------------------------------
@dataclass
class Resident:
    """A cooperative resident: a rendered head that answers every prompt."""

    head: Head
    rng: np.random.Generator
    camera: Camera = field(default_factory=Camera)
    reaction_median_s: float = 0.5
    gestures: list[Gesture] = field(default_factory=list)
    seen_steps: set[int] = field(default_factory=set)
    phase: tuple[float, ...] = ()
    x: int = 0
    y: int = 0

    def __post_init__(self) -> None:
        self.phase = tuple(float(p) for p in self.rng.uniform(0, 2 * np.pi, 6))
        h, w = self.head.texture.shape[:2]
        self.x, self.y = (WIDTH - w) // 2, HEIGHT - h
        t = float(self.rng.uniform(0.5, 3.0))
        while t < 30:  # blinks of its own, every few seconds
            self.gestures.append(self._blink(t))
            t += float(self.rng.uniform(2.5, 6.0))

    def _blink(self, t: float) -> Gesture:
        """A spontaneous blink: shut for only 50-120 ms."""
        r = self.rng
        return Gesture(
            "blink", t, 1.0, r.uniform(0.07, 0.1), r.uniform(0.05, 0.12), r.uniform(0.1, 0.16)
        )

    def _deliberate_blink(self, t: float) -> Gesture:
        """A blink on request: voluntary blinks last longer than spontaneous ones (shut for
        about 150-300 ms here)."""
        r = self.rng
        return Gesture(
            "blink", t, 1.0, r.uniform(0.1, 0.15), r.uniform(0.15, 0.3), r.uniform(0.15, 0.2)
        )

    def reaction(self) -> float:
        """A human's time from seeing a prompt to starting to move: about 0.5 s, rarely 0.8."""
        return 0.2 + float(self.rng.lognormal(math.log(self.reaction_median_s - 0.2), 0.3))

    def prompt(self, step: int, action: str, t: float) -> None:
        if step in self.seen_steps:
            return
        self.seen_steps.add(step)
        start = t + DISPLAY_LATENCY_S + self.reaction()
        r = self.rng
        if action == "blink":
            self.gestures.append(self._deliberate_blink(start))
        else:
            sign = 1.0 if action == "turn_left" else -1.0  # the subject's left: nose to image right
            self.gestures.append(
                Gesture(
                    "turn",
                    start,
                    sign * r.uniform(22, 35),
                    r.uniform(0.3, 0.5),
                    r.uniform(0.05, 0.2),
                    r.uniform(0.3, 0.5),
                )
            )

    def pose(self, t: float) -> tuple[float, float, float, float, float, float]:
        """(yaw, pitch, roll, closed, dx, dy) at ``t``."""
        p = self.phase
        yaw = 1.5 * math.sin(2 * math.pi * 0.3 * t + p[0])
        pitch = 1.0 * math.sin(2 * math.pi * 0.23 * t + p[1])
        roll = 0.8 * math.sin(2 * math.pi * 0.17 * t + p[2])
        dx = 2.5 * math.sin(2 * math.pi * 0.2 * t + p[3])
        dy = 1.5 * math.sin(2 * math.pi * 0.27 * t + p[4])
        closed = 0.0
        for g in self.gestures:
            if g.kind == "turn":
                yaw += g.value(t)
            else:
                closed = max(closed, g.value(t))
        return yaw, pitch, roll, closed, dx, dy

    def frame(self, t: float) -> np.ndarray:
        yaw, pitch, roll, closed, dx, dy = self.pose(t)
        img = render(self.head, pose_vertices(self.head, yaw, pitch, roll, closed))
        canvas = background()
        _place(canvas, img, self.x + round(dx), self.y + round(dy), None)
        return self.camera.shoot(canvas, self.rng)


# -- sheets: paper and phones -------------------------------------------------------------------
def sheet(texture: np.ndarray, bend: float = 0.0, cells: int = 8, scale: float = 1.0) -> Head:
    """A flat (or, with ``bend`` > 0, cylinder-bent) sheet carrying ``texture``, ``scale``
    camera pixels per texture pixel."""
    th, tw = texture.shape[:2]
    h, w = th * scale, tw * scale
    us, vs = np.meshgrid(np.linspace(0, tw - 1, cells + 1), np.linspace(0, th - 1, cells + 1))
    gx, gy = us * scale, vs * scale
    u = (gx - w / 2) / (w / 2)
    depth = -bend * (w / 2) * u**2  # the sides curve away from the camera
    vertices = np.stack([gx.ravel(), gy.ravel(), depth.ravel()], axis=1)
    tris = []
    for r in range(cells):
        for c in range(cells):
            a, b = r * (cells + 1) + c, r * (cells + 1) + c + 1
            d, e = a + cells + 1, b + cells + 1
            tris += [[a, b, d], [b, e, d]]
    return Head(
        texture,
        vertices,
        np.ones(len(vertices), bool),
        np.array(tris, np.int32),
        np.array([w / 2, h / 2, 0.0]),
        float(w) * 0.6,
        (),
        uv=np.stack([us.ravel(), vs.ravel()], axis=1),
        size=(round(w), round(h)),
    )


def _rendered_sheet(
    s: Head, yaw: float, pitch: float, roll: float
) -> tuple[np.ndarray, np.ndarray]:
    """The sheet in a pose on a canvas twice its size (so turning does not clip), and its mask."""
    assert s.size is not None
    w, h = s.size
    pad = np.array([w // 2, h // 2, 0.0])
    big = replace(
        s, vertices=s.vertices + pad, pivot=s.pivot + pad, size=(w + 2 * (w // 2), h + 2 * (h // 2))
    )
    verts = pose_vertices(big, yaw, pitch, roll)
    img = render(big, verts)
    mask = np.zeros(img.shape[:2], np.uint8)
    for tri in big.triangles:
        cv2.fillConvexPoly(mask, np.round(verts[tri, :2]).astype(np.int32), 1)
    return img, mask.astype(np.float32)


def print_texture(photo: np.ndarray, rng: np.random.Generator, hand: bool = True) -> np.ndarray:
    """``photo`` printed on paper (with a white margin), a hand holding the bottom corner."""
    img = photo.astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = 0.65 * img + 0.35 * grey  # ink desaturates
    img = img * rng.uniform(0.7, 0.8) + rng.uniform(40, 60)  # paper lifts blacks, dims whites
    img *= np.array([rng.uniform(0.95, 1.0), 1.0, rng.uniform(1.0, 1.06)], np.float32)  # cast
    grain = cv2.GaussianBlur(rng.normal(0, 6, img.shape[:2]).astype(np.float32), (0, 0), 0.8)
    img += grain[:, :, None]  # paper fibres
    m = int(0.06 * photo.shape[1])
    paper = np.full((img.shape[0] + 2 * m, img.shape[1] + 2 * m, 3), 236, np.float32)
    paper[m:-m, m:-m] = img
    out = np.clip(paper, 0, 255).astype(np.uint8)
    if hand:
        h, w = out.shape[:2]
        skin = tuple(int(v) for v in rng.uniform([90, 120, 170], [120, 150, 210]))
        cx, cy = int(w * rng.uniform(0.05, 0.15)), int(h * rng.uniform(0.8, 0.92))
        cv2.ellipse(out, (cx, cy), (int(w * 0.09), int(h * 0.05)), -30, 0, 360, skin, -1)
        for k in range(4):  # fingers over the margin
            fx = cx + int(w * (0.02 + 0.035 * k))
            cv2.ellipse(
                out,
                (fx, cy - int(h * 0.06)),
                (int(w * 0.014), int(h * 0.04)),
                -10,
                0,
                360,
                skin,
                -1,
            )
    return out


def screen_texture(
    photo: np.ndarray, rng: np.random.Generator, stripes: float = 0.65
) -> np.ndarray:
    """``photo`` on a phone screen: backlight gamma and tint, RGB sub-pixel stripes (3 per
    screen pixel, drawn at 3x so the camera's resampling makes the moiré; ``stripes`` is their
    contrast, lower for a finer screen), a dark bezel."""
    img = photo.astype(np.float32) / 255.0
    img = img ** rng.uniform(0.75, 0.9) * rng.uniform(0.8, 0.9) + rng.uniform(0.05, 0.1)
    img[:, :, 0] *= rng.uniform(1.04, 1.12)  # bluish backlight (BGR)
    up = cv2.resize(img, (img.shape[1] * 3, img.shape[0] * 3), interpolation=cv2.INTER_NEAREST)
    contrast = stripes
    pattern = np.zeros((1, up.shape[1], 3), np.float32)
    for k, channel in enumerate((2, 1, 0)):  # R, G, B stripes left to right
        pattern[0, k::3, channel] = 1.0
    up = up * (1 - contrast + contrast * pattern) / (1 - contrast * 2 / 3)
    screen = cv2.resize(
        np.clip(up, 0, 1), (img.shape[1] * 2, img.shape[0] * 2), interpolation=cv2.INTER_AREA
    )
    b = int(0.05 * screen.shape[1])
    out = np.full((screen.shape[0] + 2 * b, screen.shape[1] + 2 * b, 3), 0.05, np.float32)
    out[b:-b, b:-b] = screen
    return (out * 255).astype(np.uint8)


def screen_light(
    img: np.ndarray, mask: np.ndarray, t: float, glare: tuple[float, float]
) -> np.ndarray:
    """A glare spot and rolling refresh bands over the screen region of a camera frame."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = glare
    spot = 70 * np.exp(-(((xx - gx * w) / (0.15 * w)) ** 2 + ((yy - gy * h) / (0.1 * h)) ** 2))
    bands = 1 + 0.05 * np.sin(2 * np.pi * (yy / 37.0 + 1.7 * t))
    out = img.astype(np.float32) * bands[:, :, None] + spot[:, :, None]
    lit = mask[:, :, None]
    result: np.ndarray = np.clip(out * lit + img * (1 - lit), 0, 255).astype(np.uint8)
    return result


@dataclass
class SheetAttack:
    """Someone holds a sheet (paper or a phone) in front of the camera and imitates what is
    asked: turns it for a turn, tips it for a blink."""

    sheet: Head
    rng: np.random.Generator
    camera: Camera = field(default_factory=Camera)
    screen: bool = False
    gestures: list[tuple[str, Gesture]] = field(default_factory=list)
    seen_steps: set[int] = field(default_factory=set)
    phase: tuple[float, ...] = ()
    glare: tuple[float, float] = (0.5, 0.3)
    imitate: bool = True

    def __post_init__(self) -> None:
        self.phase = tuple(float(p) for p in self.rng.uniform(0, 2 * np.pi, 6))
        self.glare = (float(self.rng.uniform(0.3, 0.7)), float(self.rng.uniform(0.15, 0.5)))

    def prompt(self, step: int, action: str, t: float) -> None:
        if step in self.seen_steps or not self.imitate:
            return
        self.seen_steps.add(step)
        r = self.rng
        start = t + DISPLAY_LATENCY_S + 0.3 + float(r.lognormal(math.log(0.3), 0.3))
        if action == "blink":  # a quick tip towards the camera and back
            g = Gesture("turn", start, r.uniform(10, 20), 0.1, 0.05, 0.15)
            self.gestures.append(("pitch", g))
        else:
            sign = 1.0 if action == "turn_left" else -1.0
            g = Gesture(
                "turn",
                start,
                sign * r.uniform(25, 40),
                r.uniform(0.3, 0.5),
                0.15,
                r.uniform(0.3, 0.5),
            )
            self.gestures.append(("yaw", g))

    def pose(self, t: float) -> tuple[float, float, float, float, float]:
        p = self.phase  # a hand trembles more than a head sways
        yaw = 2.5 * math.sin(2 * math.pi * 0.5 * t + p[0])
        pitch = 2.0 * math.sin(2 * math.pi * 0.4 * t + p[1])
        roll = 2.0 * math.sin(2 * math.pi * 0.35 * t + p[2])
        dx = 4 * math.sin(2 * math.pi * 0.45 * t + p[3])
        dy = 3 * math.sin(2 * math.pi * 0.55 * t + p[4])
        for axis, g in self.gestures:
            if axis == "yaw":
                yaw += g.value(t)
            else:
                pitch += g.value(t)
        return yaw, pitch, roll, dx, dy

    def texture_at(self, t: float) -> Head:
        return self.sheet

    def frame(self, t: float) -> np.ndarray:
        yaw, pitch, roll, dx, dy = self.pose(t)
        img, mask = _rendered_sheet(self.texture_at(t), yaw, pitch, roll)
        canvas = background()
        h, w = img.shape[:2]
        x, y = (WIDTH - w) // 2 + round(dx), HEIGHT - h + h // 4 + round(dy)
        _place(canvas, img, x, y, mask)
        if self.screen:
            full = np.zeros(canvas.shape[:2], np.float32)
            _place_mask(full, mask, x, y)
            canvas = screen_light(canvas, full, t, self.glare)
        return self.camera.shoot(canvas, self.rng)


def _place_mask(canvas: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    h, w = mask.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = mask[y0 - y : y1 - y, x0 - x : x1 - x]


@dataclass
class ReplayAttack(SheetAttack):
    """A recorded attempt played on a phone: the frames a camera saw, from the start."""

    recording: Sequence[np.ndarray] = ()
    fps: float = 10.0
    offset_s: float = 0.0
    crop: tuple[int, int, int, int] = (0, 0, WIDTH, HEIGHT)
    stripes: float = 0.3  # a good phone: finer sub-pixels than the photo attack's
    _cache: dict[int, Head] = field(default_factory=dict)

    def texture_at(self, t: float) -> Head:
        k = int(max(t + self.offset_s, 0) * self.fps) % max(len(self.recording), 1)
        if k not in self._cache:
            x1, y1, x2, y2 = self.crop
            shown = screen_texture(self.recording[k][y1:y2, x1:x2], self.rng, self.stripes)
            self._cache.clear()
            self._cache[k] = replace(self.sheet, texture=shown)
        return self._cache[k]


def attack(
    kind: AttackKind,
    photo: np.ndarray,
    rng: np.random.Generator,
    recording: Sequence[np.ndarray] = (),
    crop: tuple[int, int, int, int] | None = None,
) -> SheetAttack:
    """A presentation attack of ``kind`` made from ``photo`` (a head crop, BGR), or for
    ``replay`` from a ``recording`` of camera frames (``crop``: the part the phone shows)."""
    camera = Camera.random(rng)
    if kind in ("print", "print_bent"):
        bend = float(rng.uniform(0.25, 0.45)) if kind == "print_bent" else 0.0
        tex = print_texture(photo, rng)
        return SheetAttack(sheet(tex, bend), rng, camera)
    if kind == "screen":  # the screen texture has 2 texels per photo pixel
        return SheetAttack(sheet(screen_texture(photo, rng), scale=0.5), rng, camera, screen=True)
    box = crop or (0, 0, WIDTH, HEIGHT)
    first = screen_texture(recording[0][box[1] : box[3], box[0] : box[2]], rng, 0.3)
    return ReplayAttack(
        sheet(first, scale=0.5),
        rng,
        camera,
        screen=True,
        imitate=False,
        recording=recording,
        offset_s=float(rng.uniform(-0.3, 0.3)),
        crop=box,
    )


# -- the closed loop: an actor in front of the gate's liveness check -----------------------------
@dataclass
class Attempt:
    """What happened when an actor stepped up to a gate that asks for a challenge."""

    recognised: bool  # the face matched the enrolled person (else nothing was decided)
    passive: PassiveScores | None  # on the frame that matched
    outcome: str  # the challenge's outcome, or "not_recognised"
    detail: str = ""
    seconds: float | None = None  # from the matching frame to the outcome (simulated time)
    planarity: float | None = None
    actions: tuple[str, ...] = ()
    frame_ms: list[float] = field(default_factory=list)  # processing time of each frame
    frames: list[np.ndarray] = field(default_factory=list)  # what the camera saw (if kept)

    def passed(self, planarity_limit: float) -> bool:
        """Whether the challenge passed with ``planarity_limit`` (the attempts run with the
        check off and keep the figure, so one run serves every limit)."""
        if self.outcome != "passed":
            return False
        return self.planarity is None or self.planarity >= planarity_limit


def run_attempt(
    actor: Actor,
    pipeline: FacePipeline,
    templates: np.ndarray,
    threshold: float,
    settings: ChallengeSettings,
    rng: random.Random,
    *,
    fps: float = 10.0,
    max_s: float = 20.0,
    keep_frames: bool = False,
) -> Attempt:
    """Step ``actor`` up to a gate with ``pipeline`` (liveness models loaded) that knows one
    person (``templates``): the first frame whose face passes the quality checks and matches
    starts a challenge (what ``challenge_always`` does), later frames answer it. Prompts reach
    the actor when the frame that made them has been processed (its capture time plus the
    measured processing time). Time is simulated at ``fps``; the models run for real."""
    models = pipeline.liveness
    if models is None:
        raise ValueError("the pipeline has no liveness models (liveness=False)")
    run: ChallengeRun | None = None
    result = Attempt(False, None, "not_recognised")
    t, period = 0.0, 1.0 / fps
    while t < max_s:
        image = actor.frame(t)
        if keep_frames:
            result.frames.append(image)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        t0 = time.perf_counter()
        if run is None:
            a = pipeline.analyse(rgb, liveness=True)
            if a.embedding is not None and a.face is not None:
                distance = float(np.linalg.norm(templates - a.embedding[None], axis=1).min())
                if distance <= threshold:
                    result.recognised, result.passive = True, a.passive
                    run = ChallengeRun.start(settings, rng, a.face, "p", templates, threshold, t)
        else:
            run.step(models, pipeline, rgb, t)
            c = run.challenge
            now = t + time.perf_counter() - t0
            if c.done:
                result.frame_ms.append((time.perf_counter() - t0) * 1000)
                break
            if c.want_prompt(now):
                c.prompted(now)
                assert c.action is not None
                actor.prompt(c.step + 1, c.action, now)
        result.frame_ms.append((time.perf_counter() - t0) * 1000)
        t += period
    if run is not None:
        c = run.challenge
        if not c.done:
            c.fail("timeout", "the simulation ended", t)
        result.outcome, result.detail = c.outcome, c.detail
        result.seconds, result.planarity, result.actions = c.elapsed, c.planarity, c.actions
    return result


# -- live: an actor as a network camera, and the gate screen it watches ---------------------------
class LiveDoorway:
    """The doorway camera as a live MJPEG stream over HTTP (``multipart/x-mixed-replace``, what
    IP cameras serve), showing whichever actor stands there now, and the actor's eyes on the
    gate screen: :meth:`follow` reads the face-access screen feed (Server-Sent Events) and passes
    each challenge prompt to the actor, so the real gateway and the simulated person form the
    same closed loop as :func:`run_attempt`, in real time.

    Times given to the actor are seconds since it stepped up (:meth:`step_up`). With
    ``record=True`` the frames served to the current actor are kept with those times
    (:attr:`recording`): the material of a replay attack. :attr:`states` holds every screen
    state seen, with the same times. Loopback only; one client at a time is enough for a gateway.
    """

    def __init__(self, fps: float = 10.0, port: int = 0) -> None:
        import http.server
        import threading

        self.fps = fps
        self.actor: Actor | None = None
        self.since = time.monotonic()
        self.record = False
        self.recording: list[tuple[float, np.ndarray]] = []  # (seconds since step_up, frame)
        self.states: list[tuple[float, dict[str, object]]] = []  # screen states seen, in order
        self._lock = threading.Lock()
        self._stop = threading.Event()
        doorway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/camera.mjpg":
                    self.send_error(404, "the stream is /camera.mjpg")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                tick = time.monotonic()
                try:
                    while not doorway._stop.is_set():
                        ok, jpg = cv2.imencode(
                            ".jpg", doorway.frame(), [cv2.IMWRITE_JPEG_QUALITY, 85]
                        )
                        if not ok:
                            continue
                        data = jpg.tobytes()
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                            + str(len(data)).encode()
                            + b"\r\n\r\n"
                            + data
                            + b"\r\n"
                        )
                        self.wfile.flush()
                        tick += 1 / doorway.fps
                        time.sleep(max(0.0, tick - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/camera.mjpg"

    def step_up(self, actor: Actor | None, record: bool = False) -> None:
        """``actor`` stands in front of the camera from now on (None: nobody)."""
        with self._lock:
            self.actor, self.since, self.record = actor, time.monotonic(), record
            self.recording = []

    def frame(self) -> np.ndarray:
        with self._lock:
            actor, t = self.actor, time.monotonic() - self.since
            if actor is None:
                return background()
            image = actor.frame(t)
            if self.record:
                self.recording.append((t, image))
            return image

    def follow(self, events_url: str, headers: dict[str, str] | None = None) -> None:
        """Read the gate screen's event stream in a thread; prompts reach the current actor."""
        import threading
        import urllib.request

        if not events_url.startswith("http://127.0.0.1:"):
            raise ValueError(f"the screen feed must be on loopback http (got {events_url!r})")

        def read() -> None:
            request = urllib.request.Request(events_url, headers=headers or {})  # noqa: S310
            while not self._stop.is_set():
                try:
                    with urllib.request.urlopen(request, timeout=30) as stream:  # noqa: S310
                        for raw in stream:
                            if self._stop.is_set():
                                return
                            line = raw.decode("utf-8", "replace").strip()
                            if line.startswith("data:"):
                                self._screen(json.loads(line[5:]))
                except OSError:
                    self._stop.wait(0.2)  # the gateway is starting or restarting

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _screen(self, state: dict[str, object]) -> None:
        with self._lock:
            actor, t = self.actor, time.monotonic() - self.since
            self.states.append((t, state))
        if state.get("state") == "challenge" and actor is not None:
            step = state.get("step")
            actor.prompt(int(step) if isinstance(step, int) else 0, str(state["action"]), t)

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
