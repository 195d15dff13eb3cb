"""The simulated signal controller: its fixed plan, commands, watchdog and detector monitor."""

from __future__ import annotations

import pytest

from edge.traffic_signal import load_junction
from protocols.junction import Aspect
from protocols.modbus import Value
from protocols.signal_controller import CommandStatus, Fault, Interval, Mode
from sim.junction.cabinet import Cabinet, CommandRefused, DetectorReading

J = load_junction("four-arm")
NS_T, NS_L, EW_T, EW_L, PED = range(5)


def command(
    seq: int, phase: int, green: float, nxt: int, next_green: float = 7
) -> dict[str, Value]:
    amber, all_red = J.transition(phase, nxt) if max(phase, nxt) < len(J.phases) else (3, 2)
    return {
        "heartbeat": seq,
        "cmd_seq": seq,
        "cmd_phase": phase,
        "cmd_green": green,
        "cmd_next_phase": nxt,
        "cmd_amber": amber,
        "cmd_all_red": all_red,
        "cmd_next_green": next_green,
    }


def test_fixed_plan_runs_the_sheet_greens_and_intergreens() -> None:
    cab = Cabinet(J, record_changes=True)
    cab.advance(J.fixed_cycle_s() + 1)
    starts = [t for t, shown, _ in cab.changes if shown["N_L"] is Aspect.GREEN]
    assert starts == [35.0]  # NS_T 30 s, amber 3, all-red 2
    walk = [t for t, shown, _ in cab.changes if shown["xN"] is Aspect.GREEN]
    assert walk == [30 + 10 + 22 + 8 + 4 * 5]
    back = [t for t, shown, _ in cab.changes if shown["N_T"] is Aspect.GREEN]
    assert back == [J.fixed_cycle_s()]
    assert cab.mode is Mode.LOCAL


def test_a_command_shapes_the_running_green_and_the_next() -> None:
    cab = Cabinet(J, record_changes=True)
    cab.write({"mode_request": 1})
    cab.advance(1.0)
    assert cab.mode is Mode.REMOTE
    cab.write(command(1, NS_T, 12.0, EW_T, next_green=9.0))
    assert cab.cmd_status is CommandStatus.APPLIED and cab.cmd_seq_applied == 1
    for k, t in enumerate((4.9, 9.9, 14.9, 19.9, 25.9)):
        cab.advance(t)
        cab.write({"heartbeat": 2 + k})  # within the watchdog
    lit = [
        (t, sorted(g for g, a in shown.items() if a is not Aspect.RED))
        for t, shown, _ in cab.changes
    ]
    assert lit == [
        (12.0, ["N_T", "S_T"]),  # amber at the commanded 12 s
        (15.0, []),  # all-red
        (17.0, ["E_T", "W_T"]),  # EW_T, for the command's next_green of 9 s
    ]
    cab.advance(26.0)
    assert cab.interval is Interval.AMBER  # 17 + 9: no newer command, it ends


def test_stale_and_refused_commands() -> None:
    cab = Cabinet(J)
    cab.write({"mode_request": 1})
    cab.write(command(1, EW_T, 12.0, NS_T))  # EW_T is not running
    assert cab.cmd_status is CommandStatus.STALE
    with pytest.raises(CommandRefused, match="out of range"):
        cab.write(command(2, 9, 12.0, NS_T))
    with pytest.raises(CommandRefused, match="cannot follow itself"):
        cab.write(command(3, NS_T, 12.0, NS_T))
    with pytest.raises(CommandRefused, match="mode_request must be 0"):
        cab.write({"mode_request": 2})
    assert cab.cmd_seq_applied == 1  # refused commands are not taken at all


def test_commands_are_ignored_in_local_mode() -> None:
    cab = Cabinet(J)
    cab.write(command(1, NS_T, 8.0, EW_T))
    assert cab.cmd_status is CommandStatus.STALE
    cab.advance(10)
    assert cab.phase == NS_T  # still the fixed plan's 30 s


def test_watchdog_falls_back_and_serves_a_waiting_pedestrian_first() -> None:
    cab = Cabinet(J, watchdog_s=5)
    cab.write({"mode_request": 1})
    cab.write(command(1, NS_T, 20.0, EW_T))
    cab.press(0)
    cab.advance(6.0)  # no write for 6 s
    assert cab.mode is Mode.FALLBACK and Fault.WATCHDOG in Fault(cab.faults)
    cab.advance(20.0)
    assert cab.plan.next_phase == PED  # not EW_T: the pedestrian waited
    cab.advance(25.0)
    assert cab.phase == PED and cab.interval is Interval.GREEN


def test_a_stuck_detector_is_flagged_after_stuck_s_and_cleared_when_it_reads_free() -> None:
    cab = Cabinet(J, stuck_s=20)
    cab.set_detector(2, DetectorReading(0, 0, 0, 100.0))
    cab.advance(19.0)
    assert cab.detector_faults == 0
    cab.advance(20.5)
    assert cab.detector_faults == 1 << 2 and Fault.DETECTOR in Fault(cab.faults)
    cab.set_detector(2, DetectorReading(0, 1, 1, 12.0))
    cab.advance(21.0)
    assert cab.detector_faults == 0


def test_presses_latch_until_the_walk_and_are_reported() -> None:
    cab = Cabinet(J)
    cab.advance(3.0)
    cab.press(1)
    cab.advance(13.0)
    state = cab.state()
    assert state["ped_demand"] == 0b10 and state["ped_wait"] == 10.0
    cab.advance(30 + 10 + 22 + 8 + 20 + 0.5)  # the fixed plan's walk
    assert cab.state()["ped_demand"] == 0


def test_state_fills_every_register_of_the_map() -> None:
    from protocols.modbus import RegisterType
    from protocols.signal_controller import POINTS

    inputs = {p.name for p in POINTS if p.table is RegisterType.INPUT}
    assert set(Cabinet(J).state()) == inputs
