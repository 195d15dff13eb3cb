"""The thresholds state machine: one alarm and one clear per excursion."""

from __future__ import annotations

import pytest

from edge.thresholds.app import ThresholdTracker
from edge.thresholds.config import ThresholdRule
from protocols.envelope import AlarmState


def run(
    rule: ThresholdRule, values: list[float], step_s: float = 1.0
) -> list[tuple[float, AlarmState]]:
    tracker = ThresholdTracker(rule)
    out = []
    for i, v in enumerate(values):
        change = tracker.update(v, i * step_s)
        if change:
            out.append((i * step_s, change.state))
    return out


def test_hovering_at_the_limit_gives_one_alarm_and_one_clear() -> None:
    rule = ThresholdRule(device="d", point="ph", above=9.0, hysteresis=0.2, min_duration_s=2)
    hover = [8.5, 9.1, 9.2, 9.1, 8.95, 9.05, 8.9, 9.1, 8.85, 9.05, 8.7, 8.7, 8.7, 8.5]
    assert run(rule, hover) == [(3.0, AlarmState.RAISED), (12.0, AlarmState.CLEARED)]


def test_hovering_without_min_duration_is_still_one_alarm() -> None:
    rule = ThresholdRule(device="d", point="ph", above=9.0, hysteresis=0.2)
    hover = [9.05, 8.95, 9.1, 8.9, 9.02, 8.85, 9.08, 8.81, 8.79, 9.01]
    assert run(rule, hover) == [
        (0.0, AlarmState.RAISED),
        (8.0, AlarmState.CLEARED),
        (9.0, AlarmState.RAISED),
    ]


def test_values_between_short_excursions_reset_the_pending_timer() -> None:
    rule = ThresholdRule(device="d", point="ph", above=9.0, hysteresis=0.2, min_duration_s=2)
    assert run(rule, [8.5, 9.1, 9.05, 8.95, 9.1, 9.02, 8.9]) == []


def test_short_spike_below_min_duration_is_ignored() -> None:
    rule = ThresholdRule(device="d", point="t", above=100, min_duration_s=5)
    assert run(rule, [10, 500, 500, 10, 10, 10]) == []


def test_min_duration_zero_raises_at_once_and_clears_at_once() -> None:
    rule = ThresholdRule(device="d", point="t", above=100)
    assert run(rule, [10, 150, 150, 90]) == [(1.0, AlarmState.RAISED), (3.0, AlarmState.CLEARED)]


def test_below_limit() -> None:
    rule = ThresholdRule(
        device="d", point="do", below=5.0, hysteresis=0.5, min_duration_s=1, clear_after_s=2
    )
    values = [7, 4.9, 4.8, 5.2, 5.4, 5.6, 5.7, 5.8]
    assert run(rule, values) == [(2.0, AlarmState.RAISED), (7.0, AlarmState.CLEARED)]


def test_clear_needs_to_hold_for_clear_after() -> None:
    rule = ThresholdRule(device="d", point="t", above=10, min_duration_s=0, clear_after_s=3)
    # back inside for 2 s, then out again: no clear; then inside for 3 s: clear
    assert run(rule, [11, 5, 5, 11, 5, 5, 5, 5]) == [
        (0.0, AlarmState.RAISED),
        (7.0, AlarmState.CLEARED),
    ]


def test_raise_carries_the_time_the_excursion_began() -> None:
    rule = ThresholdRule(device="d", point="t", above=10, min_duration_s=3)
    tracker = ThresholdTracker(rule)
    changes = [tracker.update(v, t) for t, v in enumerate([5, 12, 12, 12, 12])]
    raised = [c for c in changes if c]
    assert len(raised) == 1 and raised[0].since == 1


@pytest.mark.parametrize("kwargs", [{}, {"above": 1, "below": 0}])
def test_exactly_one_limit(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ThresholdRule(device="d", point="p", **kwargs)
