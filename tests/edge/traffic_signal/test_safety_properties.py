"""For any sequence of inputs, what the gateway makes the signals show never breaks a rule.

The gateway's whole control path (:class:`SignalControl`: guard and fallback logic) drives the
simulated cabinet, which executes commands literally, and the independent monitor sees every
change of every head at the exact time the cabinet makes it. Hypothesis chooses everything the gateway does not control:
what the controller proposes (any number, NaN, infinity, phases that do not exist), when
pedestrians press, when detectors stick, when polls come (0.2-2 s apart) and when the link
drops. The monitor must see no conflict, intergreen, minimum/maximum green, amber or
pedestrian-wait breach.

The same run without the guard (proposals written as they come) must break rules — or the
property would prove nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.traffic_signal import load_junction
from edge.traffic_signal.control import SignalControl
from edge.traffic_signal.monitor import SafetyMonitor
from edge.traffic_signal.safety import Guard, Proposal
from protocols.modbus import Value
from protocols.signal_controller import ControllerState
from sim.junction.cabinet import Cabinet, DetectorReading
from sim.junction.loop import through_registers

J = load_junction("four-arm")


@dataclass(frozen=True)
class Step:
    poll_in_s: float
    proposal: Proposal
    presses: frozenset[int]
    link_ok: bool
    detector_stuck: bool
    queues: tuple[int, ...]


class Scripted:
    """A controller that proposes whatever the test says."""

    name = "scripted"

    def __init__(self) -> None:
        self.next = Proposal(0, 0, 0)

    def propose(self, state: ControllerState) -> Proposal:
        return self.next


seconds = st.one_of(
    st.floats(-50, 400),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e9]),
)
# half the time the controller is greedy: the longest green and never the walk stage
greedy = st.builds(
    Proposal, green_s=st.just(1e6), next_phase=st.integers(0, 3), next_green_s=st.just(1e6)
)
anything = st.builds(Proposal, green_s=seconds, next_phase=st.integers(-2, 7), next_green_s=seconds)
steps = st.builds(
    Step,
    poll_in_s=st.floats(0.2, 2.0),
    proposal=st.one_of(greedy, anything),
    presses=st.frozensets(st.integers(0, len(J.crossings) - 1), max_size=2),
    link_ok=st.sampled_from([True] * 15 + [False]),
    detector_stuck=st.sampled_from([False] * 15 + [True]),
    queues=st.tuples(*[st.integers(0, 30)] * len(J.detectors)),
)


def run(script: list[Step], guarded: bool = True) -> SafetyMonitor:
    cab = Cabinet(J, watchdog_s=5.0, stuck_s=3.0, record_changes=True)
    monitor = SafetyMonitor(J)  # exact: every change is observed when it happens
    policy = Scripted()
    control = SignalControl(J, policy, Guard(J, ped_margin_s=1.0, recover_s=10.0))
    t = 0.0
    monitor.observe(t, cab.aspects(), cab.ped_presses())
    if not guarded:
        cab.write({"mode_request": 1, "heartbeat": 1})
    seq = 0
    for step in script:
        for crossing in step.presses:
            cab.press(crossing)
        for i, q in enumerate(step.queues):
            stuck = step.detector_stuck and i == 0
            cab.set_detector(i, DetectorReading(0, q, q, 100.0 if stuck else 10.0, 1.0))
        t += step.poll_in_s
        cab.advance(t)
        for when, shown, presses in cab.changes:
            monitor.observe(when, shown, presses)
        cab.changes.clear()
        monitor.observe(t, cab.aspects(), cab.ped_presses())
        if not step.link_ok:
            control.link_lost("dropped by the test", t)
            continue
        state = ControllerState.from_points(through_registers(cab.state()), len(J.detectors))
        if guarded:
            policy.next = step.proposal
            for write in control.poll(state).writes:
                cab.write(through_registers(write))
        else:
            seq += 1
            cab.write(_raw_command(state, step.proposal, seq))
    return monitor


def _raw_command(state: ControllerState, p: Proposal, seq: int) -> dict[str, Value]:
    """The proposal straight to the registers, made writable but not made safe."""
    n = len(J.phases)

    def fit(x: float) -> float:
        return min(max(x, 0.0), 6000.0) if math.isfinite(x) else 0.0

    phase = state.phase if state.interval == 0 else state.next_phase
    nxt = p.next_phase % n if p.next_phase % n != phase else (phase + 1) % n
    return {
        "heartbeat": seq,
        "cmd_seq": seq,
        "cmd_phase": phase,
        "cmd_green": round(fit(p.green_s), 1),
        "cmd_next_phase": nxt,
        "cmd_amber": 1.0,
        "cmd_all_red": 0.0,
        "cmd_next_green": round(fit(p.next_green_s), 1),
    }


# a script is runs of polls with the same inputs: long stretches (the pedestrian rule needs
# minutes of a greedy controller) without thousands of separate draws
runs = st.lists(st.tuples(steps, st.integers(1, 60)), min_size=1, max_size=25)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs)
def test_no_input_sequence_makes_the_signals_unsafe(script: list[tuple[Step, int]]) -> None:
    monitor = run([step for step, times in script for _ in range(times)])
    assert monitor.violations == [], monitor.violations[:5]


def test_a_long_pedestrian_siege_is_still_served_in_time() -> None:
    """The controller keeps asking for the main road's maximum green while every crossing
    is pressed: the walk must still come within the maximum wait, every time."""
    greedy = Proposal(green_s=1e6, next_phase=0, next_green_s=1e6)
    script = [Step(1.0, greedy, frozenset(range(4)), True, False, (30,) * 8)] * 900
    monitor = run(script)
    assert monitor.violations == []
    assert monitor.observations > 900


def test_the_same_inputs_without_the_guard_break_rules() -> None:
    """Proposals written as they come: 1.5 s greens, a 1 s amber, no all-red."""
    script = [
        Step(
            1.0,
            Proposal(1.5, next_phase=k % 5, next_green_s=1.5),
            frozenset(),
            True,
            False,
            (5,) * 8,
        )
        for k in range(60)
    ]
    unsafe = run(script, guarded=False)
    rules = {v.rule for v in unsafe.violations}
    assert {"min_green", "amber", "intergreen"} <= rules
    assert run(script).violations == []
