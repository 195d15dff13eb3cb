"""Training recipes: generate data, train, export, measure — reproducibly, on one CPU thread.

A recipe names its data generator (the procedural scenes in :mod:`sim.scenes.bins` and
:mod:`sim.scenes.hygiene`), network, schedule and metrics. :func:`train` runs it for a
manifest entry and writes the ONNX file; :func:`evaluate` measures a built file.

Seeds, from the entry's ``train.seed`` S: training images S, weight init and batch order S,
test images S+1 (same settings as training), held-out images S+2 (the recipe's *held-out*
settings: colours, sizes, poses and lighting the training set never had).

Measured too (:func:`evaluate`): what the tests that play a scene rely on (``day.*`` for the
bin's day, ``clip.*`` for the factory clip) and, for hair cover, real photos of people it
never trained on (``real.*``), so a card's tolerances bound what the tests may assume.

Reproducibility: one torch thread, deterministic algorithms, data from seeded numpy generators,
and a hand-written ONNX export (:mod:`models.train.nets`): the same machine and libraries give
the same bytes. Another CPU gives other bytes (torch's kernels per instruction set round
differently), so the trained files are committed (``models/trained/``) and a retrain
(:mod:`models.retrain`) is judged by its metrics, within the manifest's tolerances.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from edge.hygiene.people import PersonDetector
from edge.hygiene.pipeline import HygienePipeline
from edge.vision.face_detector import MtcnnDetector
from edge.vision.manifest import ModelEntry, ModelStore
from models.train.faces import TEST_PHOTOS, TRAIN_PHOTOS, real_faces
from models.train.nets import SmallCnn, check_export, export

if TYPE_CHECKING:
    from sim.scenes.bins import DayPlan

Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    size: int
    blocks: tuple[int, ...]
    outputs: int
    train_n: int
    test_n: int
    heldout_n: int
    epochs: int
    batch: int
    lr: float
    io: tuple[str, str]
    make: Callable[[np.random.Generator, bool, int, Any], tuple[np.ndarray, list[float]]]
    metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    prepare: Callable[[ModelStore], Any] = lambda store: None
    #: More measurements of a built file, by metric prefix (scenes the tests use, real photos)
    more: tuple[tuple[str, Callable[[Path | bytes, ModelStore], dict[str, float]]], ...] = ()


# -- bin fill -----------------------------------------------------------------------------------
def _make_bin(
    rng: np.random.Generator, heldout: bool, size: int, ctx: Any
) -> tuple[np.ndarray, list[float]]:
    from sim.scenes import bins as scene

    img, fill, overflow = scene.sample(rng, scene.HELDOUT if heldout else scene.TRAIN, size)
    return img, [fill, float(overflow)]


FILL_CLASSES = ("empty", "half", "full", "overflowing")


def fill_class(fill: np.ndarray, overflow: np.ndarray) -> np.ndarray:
    """0 empty (< 0.25), 1 half (< 0.75), 2 full, 3 overflowing (overflow >= 0.5)."""
    cls = np.digitize(fill, [0.25, 0.75])
    return np.where(overflow >= 0.5, 3, cls)


def per_class(pred: np.ndarray, truth: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, name in enumerate(names):
        tp = float(np.sum((pred == k) & (truth == k)))
        out[f"{name}_precision"] = tp / max(1.0, float(np.sum(pred == k)))
        out[f"{name}_recall"] = tp / max(1.0, float(np.sum(truth == k)))
    out["accuracy"] = float(np.mean(pred == truth))
    return out


def _bin_metrics(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    normal = targets[:, 1] < 0.5
    err = np.abs(probs[:, 0] - targets[:, 0])
    out = {
        "fill_mae": float(err[normal].mean()),
        "fill_p90_error": float(np.quantile(err[normal], 0.9)),
    }
    out.update(
        per_class(
            fill_class(probs[:, 0], probs[:, 1]),
            fill_class(targets[:, 0], targets[:, 1]),
            FILL_CLASSES,
        )
    )
    return out


PASSING = 0.03  # share of the video a passer is in view (sim.scenes.bins.day_frames)


def day_plan() -> DayPlan:
    """The day at one bin that the app's test and the bin-fill hil-test play: 240 frames, the
    bin filled to 95 %, emptied at 70 % of the video, two people walking past, a night."""
    from sim.scenes import bins as scene

    return scene.DayPlan(seconds=24.0, fps=10.0)


def played_day(first: int | None = None) -> list[tuple[np.ndarray, float, bool]]:
    """The frames of :func:`day_plan` as a camera plays them (written as the MJPEG video the
    hil-test plays, and decoded): (image, true fill, nobody walking past the bin); only the
    ``first`` ones if given (the scene takes about 0.1 s per frame)."""
    import itertools
    import tempfile

    import cv2

    from sim.scenes import bins as scene
    from sim.scenes.synth import encode_video

    plan = day_plan()
    frames = list(itertools.islice(scene.day_frames(plan), first))
    truth = [fill for _, fill in frames]
    with tempfile.TemporaryDirectory(prefix="cityedge-day-") as tmp:
        video = Path(tmp) / "day.avi"  # as scene.write_day_video writes it
        encode_video(str(video), (f for f, _ in frames), plan.fps, (scene.WIDTH, scene.HEIGHT))
        capture = cv2.VideoCapture(str(video))
        images = []
        while (got := capture.read())[0]:
            images.append(got[1])
        capture.release()
    if len(images) != len(truth):
        raise ValueError(f"the day video decoded to {len(images)} frames, not {len(truth)}")
    n = max(1, round(plan.seconds * plan.fps))  # as day_frames counts them
    return [
        (img, fill, not any(p <= i / n < p + PASSING for p in plan.passers))
        for i, (img, fill) in enumerate(zip(images, truth, strict=True))
    ]


def _day_metrics(model_file: Path | bytes, store: ModelStore) -> dict[str, float]:
    """What the tests that play the bin's day rely on: the lowest fill read on the full bin
    (true fill >= 0.9), the highest on the empty bin (<= 0.1) and the highest overflow
    probability, each over the frames where nobody walks past; and the MAE over every frame."""
    from edge.bin_fill.app import roi_crops
    from sim.scenes import bins as scene

    day = played_day()
    truth = np.array([fill for _, fill, _ in day])
    clear = np.array([c for _, _, c in day])
    crops = [roi_crops(img, [scene.ROI]) for img, _, _ in day]
    if any(c is None for c in crops):
        raise ValueError("the bin's region of interest lies outside the day's frames")
    reads = _predict(model_file, np.concatenate(crops))  # type: ignore[arg-type]
    return {
        "fill_mae": float(np.abs(reads[:, 0] - truth).mean()),
        "full_min": float(reads[clear & (truth >= 0.9), 0].min()),
        "empty_max": float(reads[clear & (truth <= 0.1), 0].max()),
        "overflow_max": float(reads[clear, 1].max()),
    }


CLIP_FPS = 5.0  # the factory clip as the hygiene hil-test plays it


# -- hair cover ---------------------------------------------------------------------------------
REAL_SHARE = 0.35  # of training images made from real faces
#: Share of those seen small, and the face widths then: the registry photos' faces are 160-290
#: px, a camera across a room (the factory clip) sees 60-80 px faces, softer and noisier.
FAR_SHARE = 0.5
FAR_FACE_PX = (40.0, 120.0)


def _make_head(
    rng: np.random.Generator, heldout: bool, size: int, ctx: Any
) -> tuple[np.ndarray, list[float]]:
    import cv2

    from sim.scenes import hygiene as scene

    settings = scene.HELDOUT if heldout else scene.TRAIN
    if ctx and not heldout and rng.random() < REAL_SHARE:
        face = ctx[int(rng.integers(len(ctx)))]
        photo, box, landmarks = face.image, face.box, face.landmarks
        if rng.random() < FAR_SHARE:  # the photo as a camera across the room would see it
            k = rng.uniform(*FAR_FACE_PX) / (box[2] - box[0])
            if k < 1:
                photo = cv2.resize(photo, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
                box = (box[0] * k, box[1] * k, box[2] * k, box[3] * k)
                landmarks = landmarks * k
        img, covered, _ = scene.real_head(rng, settings, photo, box, landmarks, size)
    else:
        img, covered, _ = scene.sample_head(rng, settings, size)
    return img, [float(covered)]


def _real_cover_metrics(model_file: Path | bytes, store: ModelStore) -> dict[str, float]:
    """Real photos of people the recipe never trained on: each head bare and with each drawn
    cover, each cropped around the face box as found and twice jittered as a detector's box
    would be (so one person's crops are 3 bare and 3 covered)."""
    from edge.hygiene import crops
    from sim.scenes import hygiene as scene

    rng = np.random.default_rng(7)
    images: list[np.ndarray] = []
    truth: list[float] = []
    faces = real_faces(store, TEST_PHOTOS)
    for face in faces:
        w = face.box[2] - face.box[0]
        boxes = [face.box] + [
            tuple(v + float(rng.uniform(-0.05, 0.05)) * w for v in face.box) for _ in range(2)
        ]
        for box in boxes:
            images.append(crops.crop(face.image, crops.head_box(box), 64))
            truth.append(0.0)
        kinds: tuple[scene.Cover, ...] = ("bouffant", "hairnet", "hood")
        for kind, box in zip(kinds, boxes, strict=True):
            img = face.image.copy()
            colour = scene.COVER_TRAIN[int(rng.integers(len(scene.COVER_TRAIN)))]
            scene.draw_cap(img, face.box, kind, colour, rng)
            images.append(crops.crop(img, crops.head_box(box), 64))
            truth.append(1.0)
    probs = _predict(model_file, np.stack(images))
    out = _cover_metrics(probs, np.array(truth, np.float32)[:, None])
    out["faces"] = float(len(faces))
    return out


class _Detectors(HygienePipeline):
    """The hygiene pipeline's person and face detectors (with its defaults), without its
    classifiers: the cover model measured here is the file given, not the store's."""

    def __init__(self, store: ModelStore) -> None:
        self.people = PersonDetector(store, min_score=0.3)
        self.faces = MtcnnDetector(store, min_face_px=32)


def _clip_cover_metrics(model_file: Path | bytes, store: ModelStore) -> dict[str, float]:
    """What the hygiene tests rely on: the worker of the factory clip (written as the MJPEG
    video the hil-test plays, and decoded) wears a cap throughout. ``cover_low``: the lowest
    hair-cover probability the app compares with its threshold — the median over its smoothing
    window (1.5 s) of the heads the hygiene pipeline finds."""
    import statistics
    import tempfile

    import cv2

    from edge.hygiene.config import HygieneConfig
    from edge.hygiene.crops import crop, head_box
    from sim.scenes import hygiene as scene

    window_s = HygieneConfig.model_fields["smoothing_s"].default
    detectors = _Detectors(store)
    times: list[float] = []
    heads: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="cityedge-clip-") as tmp:
        video = Path(tmp) / "factory.avi"
        scene.write_factory_clip(video, store, scene.CLIP, CLIP_FPS)
        capture = cv2.VideoCapture(str(video))
        index = 0
        while (got := capture.read())[0]:
            bgr = got[1]
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            for person in detectors.people.detect(bgr):
                face = detectors.face_of(rgb, person)
                if face is not None:
                    times.append(index / CLIP_FPS)
                    heads.append(crop(bgr, head_box(face.box), 64))
            index += 1
        capture.release()
    if not heads:
        raise ValueError("no face found in the factory clip")
    covers = _predict(model_file, np.stack(heads))[:, 0]
    smoothed = [
        statistics.median(
            float(c) for t, c in zip(times, covers, strict=True) if now - window_s <= t <= now
        )
        for now in times
    ]
    return {"cover_low": min(smoothed)}


def _cover_metrics(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    pred = (probs[:, 0] >= 0.5).astype(np.int64)
    truth = (targets[:, 0] >= 0.5).astype(np.int64)
    return per_class(pred, truth, ("uncovered", "covered"))


RECIPES: dict[str, Recipe] = {
    "bin-fill": Recipe(
        size=64,
        blocks=(16, 32, 64, 64),
        outputs=2,
        train_n=6000,
        test_n=1000,
        heldout_n=1000,
        epochs=12,
        batch=64,
        lr=4e-3,
        io=("image", "fill_overflow"),
        make=_make_bin,
        metrics=_bin_metrics,
        more=(("day", _day_metrics),),
    ),
    "hair-cover": Recipe(
        size=64,
        blocks=(16, 32, 64, 64),
        outputs=1,
        train_n=5000,
        test_n=1000,
        heldout_n=1000,
        epochs=10,
        batch=64,
        lr=4e-3,
        io=("image", "covered"),
        make=_make_head,
        metrics=_cover_metrics,
        prepare=lambda store: real_faces(store, TRAIN_PHOTOS),
        more=(("real", _real_cover_metrics), ("clip", _clip_cover_metrics)),
    ),
}


def dataset(
    recipe: Recipe, n: int, seed: int, heldout: bool, ctx: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = np.empty((n, recipe.size, recipe.size, 3), np.uint8)
    targets = np.empty((n, recipe.outputs), np.float32)
    for i in range(n):
        img, target = recipe.make(rng, heldout, recipe.size, ctx)
        images[i] = img
        targets[i] = target
    return images, targets


def _spec(entry: ModelEntry) -> tuple[Recipe, int]:
    if entry.train is None:
        raise ValueError(f"model {entry.name}: no training recipe in the manifest")
    return RECIPES[entry.train.recipe], entry.train.seed


def fit(recipe: Recipe, images: np.ndarray, targets: np.ndarray, seed: int, log: Log) -> SmallCnn:
    """Train with deterministic algorithms on (the caller's) one thread; torch's global
    determinism setting is restored afterwards."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _fit(recipe, images, targets, seed, log)
    finally:
        torch.use_deterministic_algorithms(was)


def _fit(recipe: Recipe, images: np.ndarray, targets: np.ndarray, seed: int, log: Log) -> SmallCnn:
    torch.manual_seed(seed)
    model = SmallCnn(recipe.blocks, recipe.outputs)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(targets)
    steps_per_epoch = math.ceil(len(images) / recipe.batch)
    total = recipe.epochs * steps_per_epoch
    step = 0
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(images), generator=g)
        flips = torch.rand(len(images), generator=g) < 0.5
        running = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * recipe.batch : (b + 1) * recipe.batch]
            x = x_all[idx].float()
            flip = flips[idx]
            x[flip] = torch.flip(x[flip], dims=[2])  # mirror left-right
            y = y_all[idx]
            for group in opt.param_groups:
                group["lr"] = recipe.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            running += loss.item()
            step += 1
        log(f"  epoch {epoch + 1}/{recipe.epochs}: loss {running / steps_per_epoch:.4f}")
    model.eval()
    return model


def _predict(path: Path | bytes, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        path if isinstance(path, bytes) else str(path),
        sess_options=opts,
        providers=["CPUExecutionProvider"],
    )
    name = session.get_inputs()[0].name
    out = [
        session.run(None, {name: images[i : i + 256].astype(np.float32)})[0]
        for i in range(0, len(images), 256)
    ]
    return np.concatenate(out)


def evaluate(entry: ModelEntry, model_file: Path | bytes, store: ModelStore) -> dict[str, float]:
    """Metrics of a built file on the recipe's test set (seed S+1), held-out set (S+2) and,
    where the recipe has one, real photos of people it never saw."""
    recipe, seed = _spec(entry)
    out: dict[str, float] = {}
    for prefix, n, s, heldout in (
        ("test", recipe.test_n, seed + 1, False),
        ("heldout", recipe.heldout_n, seed + 2, True),
    ):
        images, targets = dataset(recipe, n, s, heldout)
        for k, v in recipe.metrics(_predict(model_file, images), targets).items():
            out[f"{prefix}.{k}"] = round(v, 4)
    for prefix, measure in recipe.more:
        for k, v in measure(model_file, store).items():
            out[f"{prefix}.{k}"] = round(v, 4)
    return out


def train(
    entry: ModelEntry, out: Path, log: Log, store: ModelStore, init_seed: int | None = None
) -> dict[str, Any]:
    """Train the entry's recipe and write its ONNX file to ``out``; returns a training report.

    ``init_seed`` replaces the seed of weight init and batch order only (the data stay the
    recipe's): how far trainings land apart, which the manifest's tolerances must cover.
    ``store`` holds the models and test images built so far (some recipes draw on real
    photos, found with the face detector)."""
    recipe, seed = _spec(entry)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order on every machine
    try:
        return _train(entry, recipe, seed, out, log, store, init_seed)
    finally:
        torch.set_num_threads(threads)


def _train(
    entry: ModelEntry,
    recipe: Recipe,
    seed: int,
    out: Path,
    log: Log,
    store: ModelStore,
    init_seed: int | None,
) -> dict[str, Any]:
    t0 = time.monotonic()
    images, targets = dataset(recipe, recipe.train_n, seed, False, recipe.prepare(store))
    t_data = time.monotonic() - t0
    log(f"  {entry.name}: {recipe.train_n} generated images in {t_data:.0f} s; training")
    model = fit(recipe, images, targets, seed if init_seed is None else init_seed, log)
    t_fit = time.monotonic() - t0 - t_data
    onnx_model = export(model, recipe.size, recipe.io, entry.name.replace("-", "_"), out)
    diff = check_export(model, onnx_model, images[:64])
    return {
        "train_images": recipe.train_n,
        "epochs": recipe.epochs,
        "generate_s": round(t_data, 1),
        "train_s": round(t_fit, 1),
        "export_max_diff": diff,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
