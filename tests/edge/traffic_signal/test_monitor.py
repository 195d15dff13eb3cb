"""The independent monitor flags each rule on a hand-made timeline, and nothing on a good one."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from edge.traffic_signal import load_junction
from edge.traffic_signal.monitor import SafetyMonitor
from protocols.junction import Aspect

J = load_junction("four-arm")
G, A, R = Aspect.GREEN, Aspect.AMBER, Aspect.RED


def heads(**shown: Aspect) -> dict[str, Aspect]:
    out = {g.name: R for g in J.groups}
    out.update(shown)
    return out


def play(timeline: Iterable[tuple[float, dict[str, Aspect]]], **waiting: float) -> list[str]:
    m = SafetyMonitor(J)
    for t, shown in timeline:
        m.observe(t, shown, waiting)
    return [v.rule for v in m.violations]


GOOD = [
    (0.0, heads(N_T=G, S_T=G)),
    (20.0, heads(N_T=A, S_T=A)),
    (23.0, heads()),
    (25.0, heads(E_T=G, W_T=G)),
    (40.0, heads(E_T=A, W_T=A)),
    (43.0, heads()),
    (45.0, heads(xN=G, xE=G, xS=G, xW=G)),
    (51.0, heads()),
    (65.0, heads(N_T=G, S_T=G)),
]


def test_a_correct_sequence_has_no_violations() -> None:
    assert play(GOOD) == []


@pytest.mark.parametrize(
    ("timeline", "rule"),
    [
        ([(0.0, heads(N_T=G)), (1.0, heads(N_T=G, E_T=G))], "conflict"),
        ([(0.0, heads(N_T=G)), (1.0, heads(N_T=G, xN=G))], "conflict"),
        ([(0.0, heads(N_T=A)), (1.0, heads(N_T=A, E_T=G))], "conflict"),
        ([*GOOD[:3], (24.0, heads(E_T=G, W_T=G))], "intergreen"),  # 4 s after N_T, needs 5
        (
            [*GOOD[:6], (46.0, heads(xE=G)), (52.0, heads()), (60.0, heads(E_T=G))],
            "intergreen",
        ),
        ([(0.0, heads()), (1.0, heads(N_T=G)), (5.0, heads(N_T=A))], "min_green"),
        ([(0.0, heads()), (1.0, heads(N_T=G)), (70.0, heads(N_T=G))], "max_green"),
        ([(0.0, heads()), (1.0, heads(N_T=G)), (20.0, heads())], "amber"),  # green to red
        ([(0.0, heads()), (1.0, heads(N_T=G)), (20.0, heads(N_T=A)), (21.0, heads())], "amber"),
        ([(0.0, heads()), (1.0, heads(N_T=A))], "amber"),  # red to amber
        ([(0.0, heads()), (1.0, heads(xN=A))], "amber"),  # pedestrian heads have no amber
    ],
)
def test_each_rule_is_flagged(timeline: list[tuple[float, dict[str, Aspect]]], rule: str) -> None:
    assert rule in play(timeline)


def test_a_pedestrian_waiting_too_long_is_flagged_once() -> None:
    m = SafetyMonitor(J)
    for t in range(0, 200, 10):
        m.observe(float(t), heads(), {"xN": 5.0})
    assert [v.rule for v in m.violations] == ["ped_wait"]


def test_a_press_served_between_observations_is_judged_when_it_went() -> None:
    m = SafetyMonitor(J)
    m.observe(0.0, heads(), {"xN": 0.0})
    m.observe(119.0, heads(), {"xN": 0.0})
    m.observe(130.0, heads(xN=G), {})  # served at 130 at the latest: 130 s > 120 s
    assert [v.rule for v in m.violations] == ["ped_wait"]


def test_what_was_shown_before_the_first_look_is_not_judged() -> None:
    # the run may start in the middle of a green: its start (and so its length) is unknown
    assert play([(0.0, heads(N_T=G)), (2.0, heads(N_T=A)), (5.0, heads())]) == []
