"""BinState: smoothing, camera + sensor fusion, and one event per crossing."""

from __future__ import annotations

from edge.bin_fill.state import BinState, Thresholds


def events(state: BinState, obs: list[tuple[float, float, float]]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for t, fill, over in obs:
        out += [(c.event, c.time) for c in state.observe_camera(t, fill, over)]
    return out


def test_filling_then_emptied_gives_one_event_each() -> None:
    s = BinState(Thresholds(window_s=3))
    rising = [(float(t), 0.1 + 0.01 * t, 0.0) for t in range(90)]  # reaches 0.99
    emptied = [(90.0 + t, 0.05, 0.0) for t in range(10)]
    got = events(s, rising + emptied)
    assert [e for e, _ in got] == ["needs_collection", "emptied"]
    assert got[0][1] >= 70  # median of the window passed 0.8
    assert not s.needs_collection and s.fill is not None and s.fill < 0.25


def test_a_few_odd_frames_do_not_make_events() -> None:
    """A person walking past (fill reads 0 for two frames) is outvoted by the median."""
    s = BinState(Thresholds(window_s=5))
    obs = [(float(t), 0.9, 0.0) for t in range(10)]
    obs[5] = (5.0, 0.0, 0.0)
    obs[6] = (6.0, 0.0, 0.0)
    assert [e for e, _ in events(s, obs)] == ["needs_collection"]


def test_emptied_needs_a_fill_first_and_noise_around_thresholds_is_one_event() -> None:
    s = BinState(Thresholds(window_s=0.5))
    assert events(s, [(0.0, 0.1, 0.0), (1.0, 0.05, 0.0)]) == []  # never filled: no emptying
    wobble = [(2.0 + t, 0.79 if t % 2 else 0.81, 0.0) for t in range(20)]
    assert [e for e, _ in events(s, wobble)] == ["needs_collection"]


def test_sensor_alone_and_fused_with_camera() -> None:
    th = Thresholds(window_s=10, max_age_s=100)
    s = BinState(th)
    assert [c.event for c in s.observe_sensor(0.0, 0.85)] == ["needs_collection"]
    assert s.fused(0.0) == 0.85
    s.observe_camera(1.0, 0.65, 0.0)
    assert abs((s.fused(1.0) or 0) - 0.75) < 1e-9  # equal weights
    weighted = BinState(Thresholds(camera_weight=0.0))
    weighted.observe_sensor(0.0, 0.3)
    weighted.observe_camera(0.0, 0.9, 0.0)
    assert weighted.fused(0.0) == 0.3  # a weight of 0 ignores the camera
    assert s.sensor_fill(200.0) is None  # too old


def test_overflow_alarm_after_its_duration_and_cleared_once() -> None:
    s = BinState(Thresholds(window_s=1, overflow_for_s=3))
    obs = [(float(t), 1.0, 0.9) for t in range(6)] + [(6.0 + t, 0.1, 0.05) for t in range(4)]
    got = events(s, obs)
    assert [e for e, _ in got] == [
        "needs_collection",
        "overflow_raised",
        "emptied",
        "overflow_cleared",
    ]
    assert dict(got)["overflow_raised"] == 3.0


def test_no_estimate_no_event() -> None:
    s = BinState(Thresholds(max_age_s=10))
    s.observe_sensor(0.0, 0.9)
    assert s.fused(100.0) is None and s.camera_fill(0.0) is None
