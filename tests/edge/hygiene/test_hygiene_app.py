"""The hygiene app with the real models on frames of the factory clip (virtual frame times)."""

from __future__ import annotations

import asyncio
import base64
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edge.config.base import Catalog
from edge.hygiene.app import HygieneApp
from edge.hygiene.config import HygieneConfig
from edge.vision.manifest import ModelStore
from models.build import card_range
from protocols import envelope as env
from sim.scenes import hygiene as scene
from tests.edge.vision.app_harness import AppHarness

FPS = 5.0


def config(tmp_path: Path, **over: Any) -> HygieneConfig:
    cfg: dict[str, Any] = {
        "type": "hygiene",
        "name": "hygiene",
        "zones": [
            {"name": "clean-1", "camera": "cam-1", "polygon": [list(p) for p in scene.CLEAN_ZONE]}
        ],
        "violation_after_s": 2,
        "evidence": {"folder": str(tmp_path / "evidence")},
    }
    cfg.update(over)
    return HygieneConfig.model_validate(cfg)


@cache
def clip(store_dir: str, steps: tuple[scene.Step, ...]) -> list[np.ndarray]:
    store = ModelStore(Path(store_dir))
    return list(scene.factory_frames(scene.worker_cutout(store), steps, FPS))


async def play(
    tmp_path: Path, store: ModelStore, frames: list[np.ndarray], **over: Any
) -> tuple[HygieneApp, AppHarness]:
    h = AppHarness.make(tmp_path, "hygiene")
    app = HygieneApp(config(tmp_path, **over), h.ctx)
    task = asyncio.create_task(app.run())
    t0 = h.clock.time()
    try:
        for i, image in enumerate(frames):
            await h.frame(image, t0 + i / FPS, i + 1)
        await h.settle(lambda: app.frames_seen == len(frames))
    finally:
        h.close()
        await asyncio.wait_for(task, 30)
    return app, h


IN_ZONE = (
    scene.Step(1.2, 330, 330),  # mask and cap on
    scene.Step(4.0, 330, 330, mask=False),  # mask off for 4 s (violation after 2)
)


def test_the_cover_margin_holds_for_every_model_within_the_card() -> None:
    """The worker wears a cap in every clip here: every hair-cover model within its card's
    tolerance scores the factory clip's heads above the app's threshold, so the only violation
    these tests can see is the mask."""
    threshold = HygieneConfig.model_fields["threshold"].default
    assert card_range("hair-cover", "clip.cover_low")[0] > threshold


async def test_mask_off_in_the_zone_is_one_violation_with_blurred_evidence(
    tmp_path: Path, model_store: ModelStore
) -> None:
    frames = clip(str(model_store.directory), IN_ZONE)
    app, h = await play(tmp_path, model_store, frames)
    got = [e for e in h.of(env.HygieneEnvelope)]
    assert len(got) == 1 and app.violations == 1
    p = got[0].payload
    assert isinstance(p, env.HygienePayload)
    assert p.violations == [env.HygieneViolation.NO_MASK] and p.zone == "clean-1"
    assert 2.0 <= p.duration_s <= 3.0
    assert set(p.models) == {
        "centernet-person",
        "mtcnn-pnet",
        "mtcnn-rnet",
        "mtcnn-onet",
        "face-mask",
        "hair-cover",
    }
    ev = p.evidence
    assert ev.faces_blurred >= 1 and ev.jpeg_base64 is not None
    assert (tmp_path / "evidence" / f"{ev.id}.jpg").read_bytes() == base64.b64decode(ev.jpeg_base64)


async def test_outside_the_zone_or_not_required_is_no_violation(
    tmp_path: Path, model_store: ModelStore
) -> None:
    frames = clip(str(model_store.directory), IN_ZONE)
    # the zone moved away from where the worker stands: nobody is judged
    far = [[0, 0], [100, 0], [100, 100], [0, 100]]
    _app, h = await play(
        tmp_path, model_store, frames[:12], zones=[{"name": "z", "camera": "cam-1", "polygon": far}]
    )
    assert not h.of(env.HygieneEnvelope)
    # masks not required in this zone
    zone = {
        "name": "z",
        "camera": "cam-1",
        "polygon": [list(p) for p in scene.CLEAN_ZONE],
        "require_mask": False,
    }
    _app, h = await play(tmp_path, model_store, frames, zones=[zone], evidence={"inline": False})
    assert not h.of(env.HygieneEnvelope)


async def test_evidence_kept_local_only(tmp_path: Path, model_store: ModelStore) -> None:
    frames = clip(str(model_store.directory), IN_ZONE)
    _app, h = await play(
        tmp_path, model_store, frames, evidence={"folder": str(tmp_path / "ev"), "inline": False}
    )
    (e,) = h.of(env.HygieneEnvelope)
    assert e.payload.evidence.jpeg_base64 is None
    assert (tmp_path / "ev" / f"{e.payload.evidence.id}.jpg").is_file()


@pytest.mark.parametrize(
    ("zones", "message"),
    [
        ([{"name": "z", "camera": "c", "polygon": [[0, 0], [1, 1], [2, 2]]}], "no area"),
        ([{"name": "z", "camera": "c", "polygon": [[0, 0], [1, 1]]}], "at least 3"),
        ([{"name": "z", "camera": "c", "polygon": [[0, 0], [9, 0], [0, 9]]}] * 2, "used twice"),
    ],
)
def test_config_errors(tmp_path: Path, zones: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(tmp_path, zones=zones)


def test_unknown_camera_is_found_by_the_site_check(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    problems = cfg.check(Catalog(devices={"cam-2": {}}))
    assert problems and "no source provides camera 'cam-1'" in problems[0][1]
    assert 'did you mean "cam-2"' in problems[0][1]
