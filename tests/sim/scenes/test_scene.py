"""The bin renderer: deterministic, fills visibly, a day plan that fills and empties."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from edge.vision.manifest import ModelStore
from sim.scenes import bins as scene


def test_same_seed_same_pixels_other_seed_other_pixels() -> None:
    a = scene.sample(np.random.default_rng(5), scene.TRAIN, 64)
    b = scene.sample(np.random.default_rng(5), scene.TRAIN, 64)
    c = scene.sample(np.random.default_rng(6), scene.TRAIN, 64)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (64, 64, 3) and a[0].dtype == np.uint8


def test_fill_changes_the_inside_of_the_bin_only() -> None:
    look = scene.sample_look(np.random.default_rng(1), scene.TRAIN, (96, 96))
    look = dataclasses.replace(look, occlusions=())
    empty = scene.render(look, 0.0, False, (96, 96), np.random.default_rng(0), compress=False)
    full = scene.render(look, 1.0, False, (96, 96), np.random.default_rng(0), compress=False)
    diff = np.abs(empty.astype(int) - full.astype(int)).sum(axis=2) > 30
    cx, cy = (int(v) for v in look.centre)
    assert diff[cy - 5 : cy + 5, cx - 5 : cx + 5].mean() > 0.5  # the middle changed
    assert diff[:4, :4].mean() == 0 and diff[-4:, -4:].mean() == 0  # the corners did not


def test_heldout_settings_differ_from_training() -> None:
    assert set(scene.HELDOUT.colours) > set(scene.TRAIN.colours)
    assert scene.HELDOUT.depth != scene.TRAIN.depth


def test_day_plan_fills_then_empties() -> None:
    plan = scene.DayPlan()
    fills = [scene.fill_at(plan, t / 100) for t in range(100)]
    peak = int(np.argmax(fills))
    assert fills[0] < 0.1 and max(fills) >= plan.peak_fill - 1e-9
    assert fills[peak + 20] < 0.1  # emptied at 0.7
    frames = list(scene.day_frames(scene.DayPlan(seconds=0.3, fps=10)))
    assert len(frames) == 3 and frames[0][0].shape == (scene.HEIGHT, scene.WIDTH, 3)


def test_simulate_bin_video_and_factory_clip_commands(
    tmp_path: Path, model_store: ModelStore
) -> None:
    from typer.testing import CliRunner

    from cityedge.cli import app

    runner = CliRunner()
    res = runner.invoke(
        app, ["simulate", "bin-video", str(tmp_path / "b.avi"), "--seconds", "2", "--fps", "2"]
    )
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # rich wraps long lines
    assert "4 frames" in said and "roi: [200, 120, 440, 360]" in said
    cap = cv2.VideoCapture(str(tmp_path / "b.avi"))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (480, 640, 3)
    res = runner.invoke(app, ["simulate", "factory-clip", str(tmp_path / "f.avi"), "--fps", "1"])
    assert res.exit_code == 0, res.output
    assert "18 frames" in " ".join(res.output.split())
    assert (tmp_path / "f.avi").stat().st_size > 10_000
