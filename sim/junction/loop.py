"""SUMO and the simulated cabinet, stepped together; and a whole controlled run in-process.

:class:`JunctionSimulation` is what ``cityedge simulate junction`` serves over Modbus: each
step the cabinet runs to the simulation time, its heads are shown in SUMO, SUMO steps, and the
detector readings and kerb-side pedestrians are fed back to the cabinet.

:func:`run_in_process` is the benchmark's (and the tests') way to run the gateway's control
loop (:class:`~edge.traffic_signal.control.SignalControl`) against it without sockets: every poll and
every write goes through the register map's encoding, so the controller sees exactly the
values (and the 0.1 s rounding) it would see over Modbus.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge.traffic_signal.control import Event, SignalControl
from edge.traffic_signal.policy import Policy
from edge.traffic_signal.safety import Guard
from protocols.junction import JunctionSpec
from protocols.modbus import Value, decode_value, encode_value
from protocols.signal_controller import POINTS, ControllerState
from sim.junction.cabinet import Cabinet
from sim.junction.scenario import Scenario
from sim.junction.sumo import JunctionRun, RunResult


class JunctionSimulation:
    def __init__(
        self,
        scenario: Scenario,
        junction: JunctionSpec,
        workdir: Path,
        *,
        seed: int = 1,
        duration_s: float | None = None,
        watchdog_s: float = 5.0,
        stuck_s: float = 20.0,
    ) -> None:
        self.junction = junction
        self.run = JunctionRun(scenario, junction, workdir, seed=seed, duration_s=duration_s)
        self.cabinet = Cabinet(junction, watchdog_s=watchdog_s, stuck_s=stuck_s)
        self.crossing_index = {name: i for i, name in enumerate(junction.crossings)}

    def start(self) -> None:
        self.run.start()
        self.run.show(self.cabinet.aspects())

    @property
    def running(self) -> bool:
        return self.run.running

    @property
    def time_s(self) -> float:
        return self.run.t

    def step(self) -> None:
        run, cab = self.run, self.cabinet
        run.step()
        for i, reading in enumerate(run.detector_readings()):
            cab.set_detector(i, reading)
        for crossing in run.kerb:
            cab.press(self.crossing_index[crossing])
        cab.advance(run.t)
        run.show(cab.aspects())

    def show_now(self) -> None:
        """After a write: what the cabinet shows now is what SUMO's next step simulates."""
        self.run.show(self.cabinet.aspects())

    def finish(self, controller: str) -> RunResult:
        result = self.run.finish(controller)
        result.extra["conflict_trips"] = float(self.cabinet.conflict_trips)
        return result


_SPECS = {p.name: p.spec() for p in POINTS}


def through_registers(values: Mapping[str, Value]) -> dict[str, Value]:
    """``values`` as a Modbus client would read them back (encoded, then decoded)."""
    return {name: _round_trip(name, value) for name, value in values.items()}


@functools.lru_cache(maxsize=1 << 16)
def _round_trip(name: str, value: Value) -> Value:
    spec = _SPECS[name]
    return decode_value(spec, encode_value(spec, value))


@dataclass
class ControlledRun:
    result: RunResult
    decisions_s: list[float] = field(default_factory=list)
    cycle_decisions_s: list[float] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def run_in_process(
    scenario: Scenario,
    junction: JunctionSpec,
    policy: Callable[[JunctionSpec], Policy],
    workdir: Path,
    *,
    seed: int = 1,
    poll_s: float = 1.0,
    duration_s: float | None = None,
) -> ControlledRun:
    """A whole scenario with the gateway's control loop polling the cabinet every ``poll_s``."""
    sim = JunctionSimulation(scenario, junction, workdir, seed=seed, duration_s=duration_s)
    pol = policy(junction)
    control = SignalControl(junction, pol, Guard(junction))
    out = ControlledRun(result=None)  # type: ignore[arg-type]
    first = junction.phase_index(junction.fixed_plan[0])
    cycle = 0.0
    last_phase = -1
    sim.start()
    started = time.perf_counter()
    next_poll = 0.0
    while sim.running:
        if sim.time_s + 1e-9 >= next_poll:
            next_poll += poll_s
            state = ControllerState.from_points(
                through_registers(sim.cabinet.state()), len(junction.detectors)
            )
            outcome = control.poll(state)
            for write in outcome.writes:
                sim.cabinet.write(through_registers(write))
            sim.show_now()
            out.decisions_s.append(outcome.decision_s)
            out.events.extend(outcome.events)
            cycle += outcome.decision_s
            if state.phase == first and last_phase != first:
                out.cycle_decisions_s.append(cycle)
                cycle = 0.0
            last_phase = state.phase
        sim.step()
    out.result = sim.finish(pol.name)
    out.result.wall_s = time.perf_counter() - started
    if out.decisions_s:
        out.result.extra["decision_ms_mean"] = statistics.fmean(out.decisions_s) * 1000
    return out
