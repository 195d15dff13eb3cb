"""The simulated signal controller (cabinet): a literal executor of the register map.

It runs its fixed plan on its own (``mode_request`` 0) or follows the gateway's commands
(``mode_request`` 1) for as long as the gateway keeps writing; when the writes stop for
``watchdog_s`` it falls back to its fixed plan. It does what it is told with the timings it is
given — it does **not** second-guess a command's green or intergreen — so that the gateway's
safety guard is what keeps the junction safe, and the independent monitor
(:mod:`edge.traffic_signal.monitor`) is what proves it. It refuses only values it cannot execute
(a phase that does not exist, a phase followed by itself): Modbus exception 3.

Rules the cabinet follows on its own:

- A command addresses the phase that is green (``cmd_phase`` = ``phase``) or the phase being
  entered during an intergreen (``cmd_phase`` = ``next_phase``); any other is *stale* and is
  reported, not applied.
- A command is a lease up to the end of the next phase's green: a green entered without a
  command for it runs the previous command's ``cmd_next_green``, and a fallback (watchdog or
  ``mode_request`` 0) still finishes the greens the gateway committed — then the cabinet
  chooses the next phase itself.
- Choosing itself (local mode, fallback, or no command): the fixed plan's successor of the
  phase that ends — except that when it has been following the gateway (remote mode, or just
  left it), a waiting pedestrian is served first, so a gateway that is late or vanishes cannot
  stretch a pedestrian's wait.
- Detectors: the simulation feeds zone readings; a detector whose zone reads occupied
  (>= 95 %) for ``stuck_s`` is flagged failed (the cabinet's "maximum presence" monitor) until
  it reads free again.

Pure: time comes in through :meth:`Cabinet.advance`; no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from protocols.junction import MAX_DETECTORS, Aspect, GroupKind, JunctionSpec
from protocols.modbus import Value
from protocols.signal_controller import (
    COMMAND_POINTS,
    CommandStatus,
    Fault,
    Interval,
    Mode,
    detector_point,
)

STUCK_OCCUPANCY_PCT = 95.0
TICK_S = 0.1  # the cabinet's clock tick: no interval it enters is shorter


class CommandRefused(ValueError):
    """A command with values the cabinet cannot execute (Modbus exception 3)."""


@dataclass(frozen=True)
class DetectorReading:
    count: int = 0  # cumulative, wraps at 65536
    queue: int = 0
    vehicles: int = 0
    occupancy_pct: float = 0.0
    gap_s: float = 6553.5  # since a vehicle last crossed the stop line


@dataclass
class _Plan:
    """How the running (or next) green is to be run."""

    green_s: float
    next_phase: int
    amber_s: float
    all_red_s: float
    next_green_s: float | None  # None: no command covers the next green
    commanded: bool


@dataclass
class Cabinet:
    junction: JunctionSpec
    watchdog_s: float = 5.0
    stuck_s: float = 20.0
    now: float = 0.0
    mode_request: int = 0
    last_write: float = -math.inf
    held: dict[str, Value] = field(default_factory=dict)
    cmd_seq_applied: int = 0
    cmd_status: CommandStatus = CommandStatus.NONE
    conflict_trips: int = 0
    record_changes: bool = False
    changes: list[tuple[float, dict[str, Aspect], dict[str, float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        j = self.junction
        self.n = len(j.phases)
        self.phase = j.phase_index(j.fixed_plan[0])
        self.interval = Interval.GREEN
        self.interval_start = self.now
        self.green_start = self.now
        self.green_final = 0.0
        self.plan = self._local_plan(self.phase)
        self.entering: _Plan | None = None
        self.mode = Mode.LOCAL
        self._resume_with_ped = False
        self.presses: dict[int, float] = {}  # crossing index -> first press time
        self.detectors = [DetectorReading() for _ in j.detectors]
        self.detector_faults = 0
        self._occupied_since: dict[int, float] = {}
        self._last_cmd_seq: int | None = None

    # -- inputs ------------------------------------------------------------------------------

    def press(self, crossing: int) -> None:
        """A pedestrian pressed the button of crossing ``crossing`` (index in the sheet)."""
        if crossing not in self.presses and not self._walk_shown(crossing):
            self.presses[crossing] = self.now

    def set_detector(self, index: int, reading: DetectorReading) -> None:
        self.detectors[index] = reading
        if reading.occupancy_pct >= STUCK_OCCUPANCY_PCT:
            self._occupied_since.setdefault(index, self.now)
        else:
            self._occupied_since.pop(index, None)

    def write(self, values: dict[str, Value]) -> None:
        """Holding registers written by one request (decoded). Raises :class:`CommandRefused`
        for values the cabinet cannot execute; then nothing of the request is taken."""
        merged = {**self.held, **values}
        seq = merged.get("cmd_seq")
        new_command = "cmd_seq" in values and seq != self._last_cmd_seq
        if new_command:
            self._validate(merged)
        if "mode_request" in values and int(values["mode_request"]) not in (0, 1):
            raise CommandRefused("mode_request must be 0 (fixed plan) or 1 (gateway)")
        self.held = merged
        self.last_write = self.now
        if "mode_request" in values:
            self.mode_request = int(values["mode_request"])
        self._update_mode()
        if new_command:
            self._last_cmd_seq = int(merged["cmd_seq"])
            self.cmd_seq_applied = int(merged["cmd_seq"])
            self.cmd_status = self._apply(merged)
        self.advance(self.now)  # a command that ends a green now does so now

    def _validate(self, v: dict[str, Value]) -> None:
        for key in COMMAND_POINTS:
            if key not in v:
                raise CommandRefused(f"a command needs all of {', '.join(COMMAND_POINTS)}")
        p, q = int(v["cmd_phase"]), int(v["cmd_next_phase"])
        if not (0 <= p < self.n and 0 <= q < self.n):
            raise CommandRefused(f"phase out of range 0..{self.n - 1}")
        if p == q:
            raise CommandRefused("a phase cannot follow itself")

    def _apply(self, v: dict[str, Value]) -> CommandStatus:
        if self.mode is not Mode.REMOTE:
            return CommandStatus.STALE
        plan = _Plan(
            green_s=float(v["cmd_green"]),
            next_phase=int(v["cmd_next_phase"]),
            amber_s=float(v["cmd_amber"]),
            all_red_s=float(v["cmd_all_red"]),
            next_green_s=float(v["cmd_next_green"]),
            commanded=True,
        )
        p = int(v["cmd_phase"])
        if self.interval is Interval.GREEN and p == self.phase:
            self.plan = plan
            return CommandStatus.APPLIED
        if self.interval is not Interval.GREEN and p == self.plan.next_phase:
            self.entering = plan
            return CommandStatus.APPLIED
        return CommandStatus.STALE

    # -- time --------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Run the controller up to ``now`` (seconds on the cabinet clock). Every interval
        change happens at the time it is due, however far ``now`` jumps; with
        ``record_changes`` each is kept in :attr:`changes` with what the heads then show."""
        if now < self.now:
            raise ValueError("the cabinet clock cannot go backwards")
        while (due := self._due()) <= now + 1e-9:
            self.now = max(due, self.now)
            self._update_mode()
            self._step()
            self._check_conflicts()
        self.now = now
        self._update_mode()
        for index, since in self._occupied_since.items():
            if now - since >= self.stuck_s:
                self.detector_faults |= 1 << index
        for index in range(len(self.detectors)):
            if index not in self._occupied_since:
                self.detector_faults &= ~(1 << index)

    def _due(self) -> float:
        """When the running interval ends as planned now."""
        if self.interval is Interval.GREEN:  # a green shows for one tick at least
            return self.green_start + max(self.plan.green_s, TICK_S)
        if self.interval is Interval.AMBER:
            return self.interval_start + self.plan.amber_s
        return self.interval_start + self.plan.all_red_s

    def _check_conflicts(self) -> None:
        """The cabinet's own conflict monitor (a real one would go to flashing amber)."""
        shown = self.aspects()
        if self.record_changes:
            self.changes.append((self.now, shown, self.ped_presses()))
        lit = [g for g, a in shown.items() if a is not Aspect.RED]
        if any(self.junction.conflicting(a, b) for i, a in enumerate(lit) for b in lit[i + 1 :]):
            self.conflict_trips += 1

    def _update_mode(self) -> None:
        before = self.mode
        if self.mode_request == 0:
            self.mode = Mode.LOCAL
        elif self.now - self.last_write <= self.watchdog_s:
            self.mode = Mode.REMOTE
        else:
            self.mode = Mode.FALLBACK
        if before is Mode.REMOTE and self.mode is not Mode.REMOTE:
            self._resume_with_ped = True

    def _step(self) -> None:
        """The interval change that is due now."""
        if self.interval is Interval.GREEN:
            if self.mode is not Mode.REMOTE or not self.plan.commanded:
                self._choose_next_locally()
            self.green_final = self.now - self.green_start
            self._enter_intergreen()
        elif self.interval is Interval.AMBER and self.plan.all_red_s > 0:
            self._set_interval(Interval.ALL_RED)
        else:
            self._enter_green(self.plan.next_phase)

    def _enter_intergreen(self) -> None:
        if self.plan.amber_s > 0:
            self._set_interval(Interval.AMBER)
        elif self.plan.all_red_s > 0:
            self._set_interval(Interval.ALL_RED)
        else:
            self._enter_green(self.plan.next_phase)

    def _choose_next_locally(self) -> None:
        j = self.junction
        nxt = self._fixed_successor(self.phase)
        if self.presses and (self._resume_with_ped or self.mode is Mode.REMOTE):
            peds = [p for p in j.ped_phases if p != self.phase]
            if peds:
                nxt = min(peds)
        self._resume_with_ped = False
        amber, all_red = j.transition(self.phase, nxt)
        self.plan = _Plan(
            green_s=self.plan.green_s,
            next_phase=nxt,
            amber_s=amber,
            all_red_s=all_red,
            next_green_s=None,
            commanded=False,
        )

    def _fixed_successor(self, phase: int) -> int:
        j = self.junction
        order = [j.phase_index(n) for n in j.fixed_plan]
        if phase in order:
            return order[(order.index(phase) + 1) % len(order)]
        return order[0]

    def _enter_green(self, phase: int) -> None:
        previous = self.plan
        self.phase = phase
        self._set_interval(Interval.GREEN)
        self.green_start = self.now
        if self.entering is not None:  # commanded while this phase was being entered
            self.plan = self.entering
            if self.mode is not Mode.REMOTE:  # the lease holds; the next phase is ours
                self.plan = dataclasses.replace(self.entering, commanded=False)
        elif previous.next_green_s is not None:  # the last command's lease covers this green
            nxt = self._fixed_successor(phase)
            amber, all_red = self.junction.transition(phase, nxt)
            self.plan = _Plan(previous.next_green_s, nxt, amber, all_red, None, commanded=False)
        else:
            self.plan = self._local_plan(phase)
        self.entering = None
        for crossing, name in enumerate(self.junction.crossings):
            if name in self.junction.phases[phase].groups:
                self.presses.pop(crossing, None)

    def _local_plan(self, phase: int) -> _Plan:
        j = self.junction
        nxt = self._fixed_successor(phase)
        amber, all_red = j.transition(phase, nxt)
        return _Plan(j.phases[phase].fixed_green_s, nxt, amber, all_red, None, commanded=False)

    def _set_interval(self, interval: Interval) -> None:
        self.interval = interval
        self.interval_start = self.now

    # -- outputs -----------------------------------------------------------------------------

    def _walk_shown(self, crossing: int) -> bool:
        name = self.junction.crossings[crossing]
        return self.interval is Interval.GREEN and name in self.junction.phases[self.phase].groups

    def aspects(self) -> dict[str, Aspect]:
        """What every signal group shows now."""
        j = self.junction
        out = {g.name: Aspect.RED for g in j.groups}
        current = j.phases[self.phase].groups
        if self.interval is Interval.GREEN:
            for g in current:
                out[g] = Aspect.GREEN
            return out
        following = j.phases[self.plan.next_phase].groups
        for g in current:
            if g in following:
                out[g] = Aspect.GREEN
            elif self.interval is Interval.AMBER and j.group(g).kind is GroupKind.VEHICLE:
                out[g] = Aspect.AMBER
        return out

    def ped_presses(self) -> dict[str, float]:
        """Crossing name -> when its button was first pressed (still waiting)."""
        return {self.junction.crossings[c]: t for c, t in self.presses.items()}

    @property
    def faults(self) -> int:
        bits = 0
        if self.mode is Mode.FALLBACK:
            bits |= Fault.WATCHDOG
        if self.detector_faults:
            bits |= Fault.DETECTOR
        if self.conflict_trips:
            bits |= Fault.CONFLICT
        return bits

    def state(self) -> dict[str, Value]:
        """Every input register's engineering value (see :mod:`protocols.signal_controller`)."""
        green = self.now - self.green_start if self.interval is Interval.GREEN else self.green_final
        ped_bits = 0
        for c in self.presses:
            ped_bits |= 1 << c
        ped_wait = self.now - min(self.presses.values()) if self.presses else 0.0
        age = self.now - self.last_write if math.isfinite(self.last_write) else 6553.5
        out: dict[str, Value] = {
            "cabinet_time": round(self.now, 1),
            "mode": int(self.mode),
            "phase": self.phase,
            "interval": int(self.interval),
            "interval_elapsed": _deci(self.now - self.interval_start),
            "green_elapsed": _deci(green),
            "next_phase": self.plan.next_phase,
            "planned_green": _deci(self.plan.green_s),
            "cmd_seq_applied": self.cmd_seq_applied,
            "cmd_status": int(self.cmd_status),
            "faults": self.faults,
            "detector_faults": self.detector_faults,
            "ped_demand": ped_bits,
            "ped_wait": _deci(ped_wait),
            "phase_count": self.n,
            "table_id": self.junction.table_id(),
            "watchdog_age": _deci(age),
            "conflict_trips": min(self.conflict_trips, 65535),
        }
        unused = [DetectorReading()] * (MAX_DETECTORS - len(self.detectors))
        for i, d in enumerate([*self.detectors, *unused]):
            out[detector_point(i, "count")] = d.count % 65536
            out[detector_point(i, "queue")] = min(d.queue, 65535)
            out[detector_point(i, "vehicles")] = min(d.vehicles, 65535)
            out[detector_point(i, "occupancy")] = _deci(min(d.occupancy_pct, 100.0))
            out[detector_point(i, "gap")] = _deci(d.gap_s)
        return out


def _deci(seconds: float) -> float:
    """Seconds rounded down to the register's 0.1 s and kept inside 0..6553.5."""
    return min(max(math.floor(seconds * 10 + 1e-6) / 10, 0.0), 6553.5)
