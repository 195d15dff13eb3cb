"""Controllers: they read the cabinet's state and *propose* a plan; the safety guard
(:mod:`edge.traffic_signal.safety`) decides what is written.

Two controllers, both proposing once per poll:

``max_pressure`` — Varaiya's max-pressure (Transportation Research C 36, 2013) for an isolated
junction, where every exit is free so a phase's pressure is the number of vehicles it would
serve: at the end of the minimum green and then every ``slot_s``, the phase with the largest
queue gets the green (the current one keeps it on a tie). Pedestrians are served only when
the guard forces it.

``cityedge`` — max-pressure improved where it loses time on a real junction:

1. **Queue plus arrivals.** A phase's demand is the vehicles halted *and* moving in its
   zones, not only the halted ones, so a platoon about to arrive counts.
2. **Extend while it pays.** The current green continues while it still serves traffic
   efficiently — a vehicle crossed the stop line within the last ``gap_s`` or vehicles stand
   in its zone — *and* what it would serve in the time to clear its zone outweighs what the
   other phases wait meanwhile; the vehicles it serves would otherwise wait for the green
   to come round again. Nothing in the zone: it ends at once (SUMO's gap-out waits ``max-gap``).
3. **Skip what is empty, starve nothing.** The next phase is the one with the most demand,
   weighted up by how long it has been waiting; phases with no demand are skipped.
4. **Pedestrians on demand.** The walk stage is served when a button has waited
   ``ped_soft_wait_s``, or at once when no vehicle phase has demand; the guard still holds
   the hard ``ped_max_wait_s``.
5. **Green time in the cabinet, not the network.** A green is extended by a short lease
   (``lease_s``) per poll, so a gateway that stops deciding costs at most a lease.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from edge.traffic_signal.safety import Proposal
from protocols.junction import JunctionSpec
from protocols.signal_controller import ControllerState, Interval


class Policy(Protocol):
    name: str

    def propose(self, state: ControllerState) -> Proposal: ...


@dataclass
class _Phases:
    """Which detectors measure each phase's demand."""

    junction: JunctionSpec
    detectors: dict[int, list[int]] = field(default_factory=dict)
    lanes: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        j = self.junction
        for i, p in enumerate(j.phases):
            self.detectors[i] = [k for k, d in enumerate(j.detectors) if d.group in p.groups]
            self.lanes[i] = sum(j.group(g).lanes for g in p.groups if j.group(g).lanes) or 1

    def queue(self, s: ControllerState, phase: int) -> int:
        return sum(s.detectors[k].queue for k in self.detectors[phase] if k < len(s.detectors))

    def vehicles(self, s: ControllerState, phase: int) -> int:
        return sum(s.detectors[k].vehicles for k in self.detectors[phase] if k < len(s.detectors))

    def gap(self, s: ControllerState, phase: int) -> float:
        return min(
            (s.detectors[k].gap_s for k in self.detectors[phase] if k < len(s.detectors)),
            default=float("inf"),
        )


def _addressed(s: ControllerState) -> tuple[int, float]:
    """The phase a proposal shapes and how much of its green has run."""
    if s.interval is Interval.GREEN:
        return s.phase, s.green_elapsed_s
    return s.next_phase, 0.0


class MaxPressurePolicy:
    """Plain max-pressure on halted queues, decided every ``slot_s`` after the minimum green."""

    name = "max_pressure"

    def __init__(self, junction: JunctionSpec, *, slot_s: float = 5.0) -> None:
        self.j = junction
        self.slot_s = slot_s
        self.ph = _Phases(junction)

    def propose(self, s: ControllerState) -> Proposal:
        j = self.j
        p, elapsed = _addressed(s)
        vehicle_phases = [i for i in range(len(j.phases)) if i not in j.ped_phases]
        pressure = {i: self.ph.queue(s, i) for i in vehicle_phases}
        others = [i for i in vehicle_phases if i != p]
        best_other = max(others, key=lambda i: pressure[i])
        minimum = j.phases[p].min_green_s
        next_green = j.phases[best_other].min_green_s
        if p in j.ped_phases:
            return Proposal(minimum, best_other, next_green, "walk")
        # greens last minimum + k * slot_s; the poll decides the boundary ahead of it
        k = max(0, math.ceil((elapsed - minimum) / self.slot_s - 1e-9))
        boundary = minimum + k * self.slot_s
        if pressure[best_other] > pressure[p]:
            return Proposal(boundary, best_other, next_green, "max pressure")
        return Proposal(boundary + self.slot_s, best_other, next_green, "holds pressure")


class AdaptivePolicy:
    """The cityedge controller (see the module docstring)."""

    name = "cityedge"

    def __init__(
        self,
        junction: JunctionSpec,
        *,
        gap_s: float = 2.0,
        lease_s: float = 2.0,
        headway_s: float = 2.0,
        approach_s: float = 7.0,
        ped_soft_wait_s: float = 45.0,
        age_weight_s: float = 10.0,
        ped_weight_s: float = 30.0,
        benefit_factor: float = 1.0,
    ) -> None:
        self.j = junction
        self.ph = _Phases(junction)
        self.gap_s = gap_s
        self.lease_s = lease_s
        self.headway_s = headway_s
        self.approach_s = approach_s
        self.ped_soft_wait_s = ped_soft_wait_s
        self.age_weight_s = age_weight_s
        self.ped_weight_s = ped_weight_s
        self.benefit_factor = benefit_factor
        # how long each phase waits between its greens (EWMA), first guess the fixed cycle
        self._cycle = [junction.fixed_cycle_s()] * len(junction.phases)
        self._green_start: list[float | None] = [None] * len(junction.phases)
        self._last_green_end = [0.0] * len(junction.phases)
        self._waiting_since: list[float | None] = [None] * len(junction.phases)

    def _track(self, s: ControllerState) -> None:
        """When each phase's demand began waiting (its head vehicle's wait, roughly)."""
        for i in range(len(self.j.phases)):
            green = s.interval is Interval.GREEN and s.phase == i
            if green:
                start = s.time_s - s.green_elapsed_s
                last = self._green_start[i]
                if last is not None and start - last > 1:
                    self._cycle[i] = 0.7 * self._cycle[i] + 0.3 * (start - last)
                self._green_start[i] = start
                self._last_green_end[i] = s.time_s
                self._waiting_since[i] = None
            elif self._demand(s, i) > 0:
                if self._waiting_since[i] is None:
                    self._waiting_since[i] = s.time_s
            else:
                self._waiting_since[i] = None

    def _demand(self, s: ControllerState, phase: int) -> float:
        q = self.ph.queue(s, phase)
        return q + 0.5 * (self.ph.vehicles(s, phase) - q)

    def _score(self, s: ControllerState, phase: int) -> float:
        j = self.j
        if phase in j.ped_phases:
            return 0.0
        demand = self._demand(s, phase)
        since = self._waiting_since[phase]
        if demand <= 0 or since is None:
            return 0.0
        return demand * (s.time_s - since + self.age_weight_s)

    def _next(self, s: ControllerState, p: int) -> tuple[int, str]:
        j = self.j
        candidates = [i for i in range(len(j.phases)) if i != p and i not in j.ped_phases]
        scores = {i: self._score(s, i) for i in candidates}
        best = max(candidates, key=lambda i: (scores[i], -self._last_green_end[i]))
        if s.ped_demand and j.ped_phases and p not in j.ped_phases:
            (walk,) = j.ped_phases
            if s.ped_wait_s >= self.ped_soft_wait_s or scores[best] <= 0:
                return walk, "pedestrians"
        if scores[best] <= 0:
            return self._successor(p), "no demand"
        return best, "most demand"

    def _successor(self, phase: int) -> int:
        j = self.j
        order = [j.phase_index(n) for n in j.fixed_plan]
        nxt = order[(order.index(phase) + 1) % len(order)]
        if nxt in j.ped_phases:
            nxt = order[(order.index(nxt) + 1) % len(order)]
        return nxt if nxt != phase else order[(order.index(phase) + 2) % len(order)]

    def propose(self, s: ControllerState) -> Proposal:
        j = self.j
        self._track(s)
        p, elapsed = _addressed(s)
        q, why = self._next(s, p)
        minimum = j.phases[p].min_green_s
        next_green = j.phases[q].min_green_s
        if p in j.ped_phases:
            return Proposal(minimum, q, next_green, "walk")
        if self._extend(s, p, q):
            return Proposal(
                max(minimum, elapsed + self.lease_s), q, next_green, f"extends; then {why}"
            )
        return Proposal(max(minimum, elapsed), q, next_green, f"ends; then {why}")

    def _extend(self, s: ControllerState, p: int, q: int) -> bool:
        """Extend by a second if what it serves saves more waiting than it costs: each
        vehicle served now would otherwise wait until the phase comes round again, while
        everyone waiting elsewhere waits one second more."""
        j = self.j
        vehicles = self.ph.vehicles(s, p)
        if vehicles == 0:
            return False  # nothing within the zone: every second of green is wasted
        queue = self.ph.queue(s, p)
        if queue == 0 and self.ph.gap(s, p) > self.gap_s:
            return False  # the queue has cleared and arrivals are sparse
        saturation = self.ph.lanes[p] / self.headway_s
        rate = saturation if queue else min(saturation, (vehicles - queue) / self.approach_s)
        others = sum(
            self._demand(s, i) for i in range(len(j.phases)) if i != p and i not in j.ped_phases
        )
        if s.ped_demand:  # waiting pedestrians weigh like vehicles that have waited as long
            crossings = bin(s.ped_demand).count("1")
            others += crossings * (1 + s.ped_wait_s / self.ped_weight_s)
        return rate * self._cycle[p] * self.benefit_factor > others
