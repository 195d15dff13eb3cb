"""Training recipes: generate data, train, export, measure — reproducibly, on one CPU thread.

A recipe names its data generator (the procedural scenes in :mod:`edge.bins.scene` and
:mod:`edge.hygiene.scene`), network, schedule and metrics. :func:`train` runs it for a
manifest entry and writes the ONNX file; :func:`evaluate` measures a built file.

Seeds, from the entry's ``train.seed`` S: training images S, weight init and batch order S,
test images S+1 (same settings as training), held-out images S+2 (the recipe's *held-out*
settings: colours, sizes, poses and lighting the training set never had).

Reproducibility: one torch thread, deterministic algorithms, data from seeded numpy generators,
and a hand-written ONNX export (:mod:`models.train.nets`). On this machine, with the pinned
torch, numpy and OpenCV, a rebuild gives the same bytes (checked by ``make models`` against the
manifest's sha256). Another CPU or library version may round differently and give a different
file: ``make models`` then stops, and ``--accept-retrained`` takes the new file only if its
held-out metrics are within the entry's ``tolerance`` of the pinned ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from edge.vision.manifest import ModelEntry, ModelStore
from models.train.nets import SmallCnn, check_export, export

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
    real_metrics: Callable[[Path | bytes, ModelStore], dict[str, float]] | None = None


# -- bin fill -----------------------------------------------------------------------------------
def _make_bin(
    rng: np.random.Generator, heldout: bool, size: int, ctx: Any
) -> tuple[np.ndarray, list[float]]:
    from edge.bins import scene

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


# -- hair cover ---------------------------------------------------------------------------------
#: Real photos whose faces get drawn covers in training (face-api's group photos), and the
#: photos of other people used only to measure (face_recognition's portraits).
TRAIN_PHOTOS = tuple(f"sample{i}.jpg" for i in range(1, 7))
TEST_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
REAL_SHARE = 0.35  # of training images made from real faces


@dataclass(frozen=True)
class RealFace:
    image: np.ndarray
    box: tuple[float, float, float, float]
    landmarks: np.ndarray


def real_faces(store: ModelStore, files: tuple[str, ...], min_px: float = 60) -> list[RealFace]:
    """Faces MTCNN finds in the registry photos (at least ``min_px`` across)."""
    import cv2

    from edge.faces.detector import MtcnnDetector

    detector = MtcnnDetector(store, min_face_px=40)
    found: list[RealFace] = []
    for name in files:
        img = cv2.imread(str(store.asset(name)), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read {name}")
        for face in detector.detect(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)):
            if face.size >= min_px:
                box = tuple(float(v) for v in face.box[:4])
                found.append(RealFace(img, (box[0], box[1], box[2], box[3]), face.landmarks))
    return found


def _make_head(
    rng: np.random.Generator, heldout: bool, size: int, ctx: Any
) -> tuple[np.ndarray, list[float]]:
    from edge.hygiene import scene

    settings = scene.HELDOUT if heldout else scene.TRAIN
    if ctx and not heldout and rng.random() < REAL_SHARE:
        face = ctx[int(rng.integers(len(ctx)))]
        img, covered, _ = scene.real_head(rng, settings, face.image, face.box, face.landmarks, size)
    else:
        img, covered, _ = scene.sample_head(rng, settings, size)
    return img, [float(covered)]


def _real_cover_metrics(model_file: Path | bytes, store: ModelStore) -> dict[str, float]:
    """Other people's real photos: bare heads, and the same heads with each drawn cover."""
    from edge.hygiene import crops, scene

    rng = np.random.default_rng(7)
    images: list[np.ndarray] = []
    truth: list[float] = []
    for face in real_faces(store, TEST_PHOTOS):
        images.append(crops.crop(face.image, crops.head_box(face.box), 64))
        truth.append(0.0)
        for kind in ("bouffant", "hairnet", "hood"):
            img = face.image.copy()
            colour = scene.COVER_TRAIN[int(rng.integers(len(scene.COVER_TRAIN)))]
            scene.draw_cap(img, face.box, kind, colour, rng)
            images.append(crops.crop(img, crops.head_box(face.box), 64))
            truth.append(1.0)
    probs = _predict(model_file, np.stack(images))
    out = _cover_metrics(probs, np.array(truth, np.float32)[:, None])
    out["faces"] = float(len(images) // 4)
    return out


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
        real_metrics=_real_cover_metrics,
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
    if recipe.real_metrics is not None:
        for k, v in recipe.real_metrics(model_file, store).items():
            out[f"real.{k}"] = round(v, 4)
    return out


def train(entry: ModelEntry, out: Path, log: Log, store: ModelStore) -> dict[str, Any]:
    """Train the entry's recipe and write its ONNX file to ``out``; returns a training report.

    ``store`` holds the models and test images built so far (some recipes draw on real
    photos, found with the face detector)."""
    recipe, seed = _spec(entry)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order on every machine
    try:
        return _train(entry, recipe, seed, out, log, store)
    finally:
        torch.set_num_threads(threads)


def _train(
    entry: ModelEntry, recipe: Recipe, seed: int, out: Path, log: Log, store: ModelStore
) -> dict[str, Any]:
    t0 = time.monotonic()
    images, targets = dataset(recipe, recipe.train_n, seed, False, recipe.prepare(store))
    t_data = time.monotonic() - t0
    log(f"  {entry.name}: {recipe.train_n} generated images in {t_data:.0f} s; training")
    model = fit(recipe, images, targets, seed, log)
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
