"""The bin_fill app with the real model: camera frames, level-sensor readings, both combined;
its events, collection list and telemetry; config mistakes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.apps.bin_fill import BinFillApp
from edge.apps.bin_fill_config import BinFillConfig
from edge.bins import scene
from edge.vision.manifest import ModelStore
from protocols import envelope as env
from tests.vision.app_harness import AppHarness


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


async def test_camera_and_sensor_bins(tmp_path: Path, model_store: ModelStore) -> None:
    h = AppHarness.make(tmp_path, "bins")
    app = BinFillApp(config(window_s=10), h.ctx)
    task = asyncio.create_task(app.run())
    now = h.clock.time()
    try:
        # the sensor bin: 30 % then 90 % (needs collection) then 10 % (emptied)
        for t, pct in ((-100.0, 30.0), (-90.0, 90.0), (-80.0, 10.0), (-79.0, 150.0)):
            await h.reading("node-7", "fill", pct, now + t)
        await h.reading("other-node", "fill", 99.0, now - 78)  # not a bin's sensor
        await h.settle(lambda: len(h.of(env.BinEnvelope)) >= 2)
        # the camera bin: nearly empty, then full
        seq = 0
        for fill, t0 in ((0.1, -30.0), (0.95, 20.0)):
            image = day_frame(fill)
            for k in range(3):
                seq += 1
                await h.frame(image, now + t0 + k, seq)
        await h.settle(lambda: app.frames_seen == 6)
        await h.settle(lambda: len(h.of(env.BinEnvelope)) >= 3)
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
    cam = next(e.payload for e in h.of(env.BinEnvelope) if e.device == "bin-1")
    assert isinstance(cam, env.BinPayload)
    assert cam.fill_camera is not None and cam.fill_camera >= 0.8 and cam.fill_sensor is None
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
