"""The bin_fill app with the real model: camera frames, level-sensor readings, both combined;
its events, collection list and telemetry; config mistakes."""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.bin_fill.app import BinFillApp
from edge.bin_fill.config import BinFillConfig
from edge.vision.manifest import ModelStore
from models.build import card_range
from models.train.recipes import played_day
from protocols import envelope as env
from sim.scenes import bins as scene
from tests.edge.vision.app_harness import AppHarness


def config(**over: Any) -> BinFillConfig:
    cfg: dict[str, Any] = {
        "type": "bin_fill",
        "name": "bins",
        "bins": [
            {"id": "bin-1", "camera": "cam-1", "roi": list(scene.ROI)},
            {"id": "bin-2", "sensor": {"device": "node-7", "point": "fill", "unit": "percent"}},
        ],
        "window_s": 5,
        "report_interval_s": 30,
    }
    cfg.update(over)
    return BinFillConfig.model_validate(cfg)


def day_frame(fill: float) -> Any:
    plan = scene.DayPlan(
        seconds=0.1, fps=10, start_fill=fill, peak_fill=fill, night=(0, 0), passers=()
    )
    return next(scene.day_frames(plan))[0]


#: The camera bin's threshold: below what every bin-fill model within its card's tolerance
#: reads on the full bin of the played day, above what it reads on the empty bin.
COLLECT_AT = 0.55


@cache
def played(full: bool) -> list[Any]:
    """Three frames of the played day with the bin full (>= 90 %) or empty (<= 10 %), nobody
    walking past: the frames whose readings the card's day.full_min / day.empty_max bound."""
    return [
        img for img, fill, clear in played_day() if clear and (fill >= 0.9 if full else fill <= 0.1)
    ][:3]


def test_the_camera_margins_hold_for_every_model_within_the_card() -> None:
    full_low, _ = card_range("bin-fill", "day.full_min")
    _, empty_high = card_range("bin-fill", "day.empty_max")
    assert empty_high < COLLECT_AT < full_low, (empty_high, COLLECT_AT, full_low)


async def test_camera_and_sensor_bins(tmp_path: Path, model_store: ModelStore) -> None:
    h = AppHarness.make(tmp_path, "bins")
    app = BinFillApp(config(window_s=10, collect_at=COLLECT_AT), h.ctx)
    task = asyncio.create_task(app.run())
    now = h.clock.time()
    try:
        # the sensor bin: 30 % then 90 % (needs collection) then 10 % (emptied)
        for t, pct in ((-100.0, 30.0), (-90.0, 90.0), (-80.0, 10.0), (-79.0, 150.0)):
            await h.reading("node-7", "fill", pct, now + t)
        await h.reading("other-node", "fill", 99.0, now - 78)  # not a bin's sensor
        await h.settle(lambda: len(h.of(env.BinEnvelope)) >= 2)
        # the camera bin: empty, then full (the window holds one or the other)
        seq = 0
        for full, t0 in ((False, -30.0), (True, 20.0)):
            for k, image in enumerate(played(full)):
                seq += 1
                await h.frame(image, now + t0 + k, seq)
        await h.settle(lambda: app.frames_seen == 6)
        await h.settle(lambda: len(h.of(env.BinEnvelope)) >= 3, timeout_s=10)
        await h.clock.advance(31)  # the periodic telemetry
        await h.settle(lambda: bool(h.of(env.TelemetryEnvelope)))
    finally:
        h.close()
        await asyncio.wait_for(task, 30)
    bins = [(e.device, e.payload.event.value) for e in h.of(env.BinEnvelope)]
    assert bins == [
        ("bin-2", "needs_collection"),
        ("bin-2", "emptied"),
        ("bin-1", "needs_collection"),
    ]
    cam_event = next(e for e in h.of(env.BinEnvelope) if e.device == "bin-1")
    cam = cam_event.payload
    assert isinstance(cam, env.BinPayload)
    assert cam_event.time.timestamp() >= now + 20, "needs collection when full, not when empty"
    assert cam.fill_camera is not None and cam.fill_camera >= COLLECT_AT
    assert cam.fill_sensor is None
    assert cam.models == {"bin-fill": model_store.entry("bin-fill").identity}
    lists = [e.payload for e in h.of(env.CollectionEnvelope)]
    assert [[i.bin for i in p.bins] for p in lists] == [["bin-2"], [], ["bin-1"]]
    assert [i.bin for i in app.collection()] == ["bin-1"]
    levels = {e.device: e.payload for e in h.of(env.TelemetryEnvelope)}
    assert set(levels) == {"bin-1", "bin-2"}
    assert [r.value for r in levels["bin-2"].readings] == [10.0, 10.0]
    points = {r.point for r in levels["bin-1"].readings}
    assert {"fill", "fill_camera", "overflow"} <= points


async def test_a_roi_outside_the_frame_is_reported_not_fatal(
    tmp_path: Path, model_store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    h = AppHarness.make(tmp_path, "bins")
    app = BinFillApp(
        config(bins=[{"id": "b", "camera": "cam-1", "roi": [700, 500, 900, 700]}]), h.ctx
    )
    task = asyncio.create_task(app.run())
    try:
        await h.frame(day_frame(0.5), 1.0, 1)
        await h.frame(day_frame(0.5), 2.0, 2)
        await h.settle(lambda: app.frames_seen == 2)
    finally:
        h.close()
        await asyncio.wait_for(task, 30)
    assert not h.of(env.BinEnvelope)
    assert sum("lies outside" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("bins", "over", "message"),
    [
        ([{"id": "b"}], {}, "needs a 'camera'"),
        ([{"id": "b", "camera": "c"}], {}, "needs its 'roi'"),
        ([{"id": "b", "camera": "c", "roi": [0, 0, 10, 10]}], {}, "at least 16x16"),
        ([{"id": "b", "camera": "c", "roi": [0, 0, 99, 99]}] * 2, {}, "used twice"),
        (
            [{"id": "b", "camera": "c", "roi": [0, 0, 99, 99]}],
            {"emptied_below": 0.9},
            "emptied_below < rearm_at",
        ),
        ([{"id": "b", "sensor": {"device": "d", "unit": "litres"}}], {}, "fraction"),
    ],
)
def test_config_errors(bins: list[dict[str, Any]], over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(bins=bins, **over)
