"""Motion gating: a still scene stops counting as motion; a moving object counts."""

from __future__ import annotations

import numpy as np

from edge.vision.motion import MotionGate


def scene(x: int | None = None) -> np.ndarray:
    img = np.full((480, 640, 3), 90, np.uint8)
    img[:, :40] = 30  # a dark door frame
    if x is not None:
        img[150:350, x : x + 120] = 220  # a bright person-sized block
    return img


def test_first_frame_counts_as_motion_then_a_still_scene_does_not() -> None:
    gate = MotionGate()
    assert gate.score(scene()) == 1.0
    scores = [gate.score(scene()) for _ in range(20)]
    assert max(scores) == 0.0
    assert not gate.moves(scores[-1])


def test_someone_walking_in_is_motion() -> None:
    gate = MotionGate()
    gate.score(scene())
    moving = [gate.score(scene(x)) for x in range(500, 200, -60)]
    assert all(gate.moves(s) for s in moving), moving


def test_sensor_noise_is_not_motion() -> None:
    gate = MotionGate()
    rng = np.random.default_rng(3)
    base = scene()
    gate.score(base)
    for _ in range(10):
        noisy = np.clip(base.astype(np.int16) + rng.integers(-6, 7, base.shape), 0, 255).astype(
            np.uint8
        )
        assert not gate.moves(gate.score(noisy))


def test_a_new_still_scene_is_learnt_and_a_size_change_resets() -> None:
    gate = MotionGate(alpha=0.2)
    gate.score(scene())
    lit = scene(300)  # someone stands still in the door
    scores = [gate.score(lit) for _ in range(40)]
    assert gate.moves(scores[0]) and not gate.moves(scores[-1])
    assert gate.score(np.zeros((240, 320, 3), np.uint8)) == 1.0


def test_greyscale_frames_work() -> None:
    gate = MotionGate()
    assert gate.score(np.zeros((100, 100), np.uint8)) == 1.0
    assert gate.score(np.zeros((100, 100), np.uint8)) == 0.0
