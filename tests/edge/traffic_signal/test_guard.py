"""The guard's decisions one by one: clamps, intergreens, the pedestrian deadline, fallbacks,
and that nothing else can make a decision."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from edge.traffic_signal import load_junction
from edge.traffic_signal.control import FallbackChange, PlanChange, SignalControl
from edge.traffic_signal.safety import Command, Fallback, Guard, Proposal, TakeControl
from protocols.signal_controller import (
    CommandStatus,
    ControllerState,
    DetectorState,
    Fault,
    Interval,
    Mode,
)

J = load_junction("four-arm")
NS_T, NS_L, EW_T, EW_L, PED = range(5)


def state(**kw: object) -> ControllerState:
    base = ControllerState(
        time_s=100.0,
        mode=Mode.REMOTE,
        phase=NS_T,
        interval=Interval.GREEN,
        interval_elapsed_s=10.0,
        green_elapsed_s=10.0,
        next_phase=NS_L,
        planned_green_s=30.0,
        cmd_seq_applied=0,
        cmd_status=CommandStatus.NONE,
        faults=Fault(0),
        detector_faults=0,
        ped_demand=0,
        ped_wait_s=0.0,
        phase_count=len(J.phases),
        table_id=J.table_id(),
        watchdog_age_s=0.5,
        detectors=tuple(DetectorState(0, 2, 3, 10.0, 1.0) for _ in J.detectors),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("green", "expected"),
    [(3.0, 7.0), (25.0, 25.0), (500.0, 60.0), (math.nan, 7.0), (math.inf, 60.0), (-5.0, 7.0)],
)
def test_greens_are_held_within_the_phase_limits(green: float, expected: float) -> None:
    cmd = Guard(J).admit(state(), Proposal(green, EW_T, green))
    assert cmd.green_s == expected
    assert J.phases[EW_T].min_green_s <= cmd.next_green_s <= J.phases[EW_T].max_green_s


@pytest.mark.parametrize("nxt", [NS_T, -1, 5, 99])
def test_a_next_phase_that_cannot_follow_becomes_the_fixed_plans(nxt: int) -> None:
    cmd = Guard(J).admit(state(), Proposal(20, nxt, 10))
    assert cmd.next_phase == NS_L
    assert cmd.adjustments and "not allowed" in cmd.adjustments[0]


def test_intergreens_come_from_the_sheet() -> None:
    assert Guard(J).admit(state(), Proposal(20, PED, 6)).amber_s == 3.0
    cmd = Guard(J).admit(state(phase=PED, next_phase=NS_T), Proposal(6, EW_T, 7))
    assert (cmd.amber_s, cmd.all_red_s) == (0.0, 14.0)


def test_during_an_intergreen_the_command_shapes_the_phase_being_entered() -> None:
    s = state(interval=Interval.AMBER, interval_elapsed_s=1.0, next_phase=EW_T)
    cmd = Guard(J).admit(s, Proposal(20, NS_T, 10))
    assert cmd.phase == EW_T and cmd.next_phase == NS_T


def test_waiting_pedestrians_get_the_walk_next_when_the_plan_would_be_too_late() -> None:
    guard = Guard(J, ped_margin_s=2)
    # 100 s waited: 20 s left; the greedy plan (NS_T to 60 s, then EW_T) would be far too late
    s = state(ped_demand=0b1, ped_wait_s=100.0)
    cmd = guard.admit(s, Proposal(60, EW_T, 50))
    assert cmd.next_phase == PED
    # the latest green that still brings the walk in time: 90 + g + 5 <= 100 + 20 - 2, g = 23
    assert cmd.green_s == 23.0
    assert any("pedestrians" in a for a in cmd.adjustments)


def test_plans_that_serve_pedestrians_in_time_are_left_alone() -> None:
    s = state(ped_demand=0b1, ped_wait_s=5.0)
    cmd = Guard(J).admit(s, Proposal(20, EW_T, 10))
    assert (cmd.green_s, cmd.next_phase, cmd.adjustments) == (20.0, EW_T, ())


@pytest.mark.parametrize(
    ("trouble", "reason"),
    [
        ({"detector_faults": 0b100}, "detector failed"),
        ({"table_id": 1234}, "timing sheet"),
        ({"phase_count": 4}, "timing sheet"),
        ({"faults": Fault.CONFLICT}, "conflict monitor"),
        ({"phase": 9}, "not in the sheet"),
    ],
)
def test_trouble_means_fallback_once_then_control_after_recovery(
    trouble: dict[str, object], reason: str
) -> None:
    guard = Guard(J, recover_s=30)
    assert isinstance(guard.review(state(mode=Mode.LOCAL)), TakeControl)
    first = guard.review(state(**trouble))
    assert isinstance(first, Fallback) and reason in first.reason
    assert first.registers() == {"mode_request": 0}
    assert guard.review(state(time_s=101.0, **trouble)) is None  # once
    assert guard.review(state(time_s=120.0, mode=Mode.LOCAL)) is None  # not yet 30 s
    assert isinstance(guard.review(state(time_s=131.5, mode=Mode.LOCAL)), TakeControl)
    assert guard.controlling


def test_a_stuck_detector_names_the_detector() -> None:
    first = Guard(J).review(state(detector_faults=0b1))
    assert isinstance(first, Fallback) and first.detectors == ("d_N_T",)


def test_out_of_range_detector_readings_are_trouble() -> None:
    bad = (DetectorState(0, 0, 0, 250.0, 1.0), *state().detectors[1:])
    first = Guard(J).review(state(detectors=bad))
    assert isinstance(first, Fallback) and first.detectors == ("d_N_T",)


def test_the_cabinet_watchdog_expiring_under_us_is_reported() -> None:
    guard = Guard(J, recover_s=10)
    guard.review(state())
    late = guard.review(state(mode=Mode.FALLBACK, faults=Fault.WATCHDOG))
    assert isinstance(late, Fallback) and "watchdog" in late.reason
    assert isinstance(guard.review(state(time_s=111.0, mode=Mode.FALLBACK)), TakeControl)


def test_only_the_guard_makes_decisions() -> None:
    with pytest.raises(TypeError, match=r"made by edge\.traffic_signal\.safety\.Guard only"):
        Command(0, 10, 1, 3, 2, 7, "", (), object())
    with pytest.raises(TypeError):
        Fallback("because", (), None)
    with pytest.raises(TypeError):
        TakeControl(object())


class Fixed:
    name = "fixed"

    def __init__(self, proposal: Proposal) -> None:
        self.proposal = proposal

    def propose(self, s: ControllerState) -> Proposal:
        return self.proposal


def test_control_writes_the_block_on_a_change_and_only_the_heartbeat_otherwise() -> None:
    control = SignalControl(J, Fixed(Proposal(20, EW_T, 10, "test")), Guard(J))
    first = control.poll(state(mode=Mode.LOCAL))
    assert first.writes[0] == {"mode_request": 1}
    assert first.writes[1]["cmd_seq"] == 1 and first.writes[1]["cmd_green"] == 20.0
    again = control.poll(state(cmd_seq_applied=1, cmd_status=CommandStatus.APPLIED))
    assert again.writes == [{"heartbeat": 2}]
    stale = control.poll(state(cmd_seq_applied=1, cmd_status=CommandStatus.STALE))
    assert stale.writes[0]["cmd_seq"] == 2  # the cabinet did not take it: send it anew


def test_control_reports_each_stage_it_ended_and_each_fallback() -> None:
    control = SignalControl(J, Fixed(Proposal(20, EW_T, 10, "test")), Guard(J, recover_s=5))
    control.poll(state())
    out = control.poll(
        state(
            time_s=111.0,
            interval=Interval.AMBER,
            interval_elapsed_s=1.0,
            green_elapsed_s=20.0,
            next_phase=EW_T,
        )
    )
    (plan,) = out.events
    assert isinstance(plan, PlanChange)
    assert (plan.phase, plan.green_s, plan.next_phase, plan.reason) == (
        "NS_T",
        20.0,
        "EW_T",
        "test",
    )
    out = control.poll(state(time_s=112.0, detector_faults=0b1))
    (fallback,) = out.events
    assert isinstance(fallback, FallbackChange) and fallback.state == "entered"
    assert out.writes == [{"mode_request": 0}]
    assert control.poll(state(time_s=113.0, mode=Mode.LOCAL)).events == []
    back = control.poll(state(time_s=118.0, mode=Mode.LOCAL))
    assert [e.state for e in back.events if isinstance(e, FallbackChange)] == ["left"]
    assert back.writes[0] == {"mode_request": 1}


def test_link_loss_is_reported_once_per_outage() -> None:
    control = SignalControl(J, Fixed(Proposal(20, EW_T, 10)), Guard(J, recover_s=5))
    control.poll(state())
    assert len(control.link_lost("no poll", 100.0).events) == 1
    assert control.link_lost("no poll", 101.0).events == []
    # the link is back: control returns recover_s later
    assert control.poll(state(time_s=130.0, mode=Mode.FALLBACK)).writes == []
    back = control.poll(state(time_s=135.5, mode=Mode.FALLBACK))
    assert back.writes[0] == {"mode_request": 1}
    assert [e.state for e in back.events if isinstance(e, FallbackChange)] == ["left"]
