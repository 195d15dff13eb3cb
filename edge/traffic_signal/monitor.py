"""An independent safety monitor: watches what the signal heads show and records every breach
of the timing sheet.

It knows nothing of phases, commands or controllers: it sees, at each observation, the aspect
of every signal group and which pedestrian buttons are waiting since when, and checks

========================  ===============================================================
rule                      breached when
========================  ===============================================================
``conflict``              two conflicting groups show green or amber at the same time
``intergreen``            a group turns green sooner after a conflicting group's green
                          ended than the sheet's intergreen
``min_green``             a green (or walk) ends before its group's minimum green
``max_green``             a green lasts longer than its phase's maximum green
``amber``                 a vehicle green ends without amber, an amber is shorter than the
                          sheet's, an amber follows red or is followed by green, or a
                          pedestrian head shows amber
``ped_wait``              a pressed button waits longer than ``ped_max_wait_s`` for walk
========================  ===============================================================

Times are observation times: a head that changed between two observations is taken to have
changed at the later one, so with observations every ``step`` seconds a duration can read up
to one step long; ``tolerance_s`` absorbs that in the checks where a longer reading is the
unsafe direction (maximum green, pedestrian wait). Every rule is also checked at the moment
a head changes, so observing only the changes (as the tests do, exactly) misses nothing; a
simulation observes every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocols.junction import Aspect, GroupKind, JunctionSpec

EPS = 1e-6


@dataclass(frozen=True)
class Violation:
    time: float
    rule: str
    detail: str


@dataclass
class _Head:
    aspect: Aspect = Aspect.RED
    since: float = float("-inf")
    green_ended: float | None = None  # when its last green ended (it went amber or red)
    known_start: bool = True  # False for what was already shown at the first observation


@dataclass
class SafetyMonitor:
    junction: JunctionSpec
    tolerance_s: float = 0.0
    violations: list[Violation] = field(default_factory=list)
    observations: int = 0

    def __post_init__(self) -> None:
        j = self.junction
        self._heads = {g.name: _Head() for g in j.groups}
        self._max_green = {g: p.max_green_s for p in j.phases for g in p.groups}
        self._reported_waits: set[tuple[str, float]] = set()
        self._waiting: dict[str, float] = {}
        self._reported_long_green: set[tuple[str, float]] = set()
        self._started = False

    def observe(
        self, t: float, aspects: Mapping[str, Aspect], waiting: Mapping[str, float] | None = None
    ) -> None:
        """Record what the heads show at ``t`` and which buttons wait since when."""
        j = self.junction
        self.observations += 1
        if not self._started:  # the first observation sets the scene; nothing ended before it
            self._started = True
            for name, head in self._heads.items():
                head.aspect = aspects[name]
                head.since = t
                head.known_start = False
            return
        lit = [g for g, a in aspects.items() if a is not Aspect.RED]
        for i, a in enumerate(lit):
            for b in lit[i + 1 :]:
                if j.conflicting(a, b):
                    self._flag(t, "conflict", f"{a} and {b} shown together")
        for name, head in self._heads.items():
            new = aspects[name]
            if new is not head.aspect:
                self._change(t, name, head, new)
            if head.aspect is Aspect.GREEN and head.known_start:
                limit = self._max_green[name] + self.tolerance_s
                key = (name, head.since)
                if t - head.since > limit + EPS and key not in self._reported_long_green:
                    self._reported_long_green.add(key)
                    self._flag(t, "max_green", f"{name} green for more than {limit:g} s")
        now_waiting = dict(waiting or {})
        # a press served since the last observation waited until now at most
        for crossing, pressed in {**self._waiting, **now_waiting}.items():
            key = (crossing, pressed)
            limit = j.ped_max_wait_s + self.tolerance_s
            if t - pressed > limit + EPS and key not in self._reported_waits:
                self._reported_waits.add(key)
                self._flag(t, "ped_wait", f"{crossing} waits more than {limit:g} s")
        self._waiting = now_waiting

    def _change(self, t: float, name: str, head: _Head, new: Aspect) -> None:
        j = self.junction
        group = j.group(name)
        old, lasted = head.aspect, t - head.since
        if group.kind is GroupKind.PEDESTRIAN and new is Aspect.AMBER:
            self._flag(t, "amber", f"pedestrian head {name} shows amber")
        if old is Aspect.GREEN:
            if lasted + EPS < group.min_green_s and head.known_start:
                self._flag(
                    t, "min_green", f"{name} green for {lasted:.1f} s < {group.min_green_s} s"
                )
            if group.kind is GroupKind.VEHICLE and new is Aspect.RED:
                self._flag(t, "amber", f"{name} went from green to red without amber")
            head.green_ended = t
        if old is Aspect.AMBER:
            if lasted + EPS < group.amber_s and head.known_start:
                self._flag(t, "amber", f"{name} amber for {lasted:.1f} s < {group.amber_s} s")
            if new is Aspect.GREEN:
                self._flag(t, "amber", f"{name} went from amber back to green")
        if old is Aspect.RED and new is Aspect.AMBER:
            self._flag(t, "amber", f"{name} went from red to amber")
        if new is Aspect.GREEN:
            for other, h in self._heads.items():
                if other == name or h.green_ended is None:
                    continue
                need = j.intergreen(other, name)
                if need and t - h.green_ended + EPS < need:
                    self._flag(
                        t,
                        "intergreen",
                        f"{name} green {t - h.green_ended:.1f} s after {other} (needs {need:g} s)",
                    )
        head.aspect, head.since, head.known_start = new, t, True

    def _flag(self, t: float, rule: str, detail: str) -> None:
        self.violations.append(Violation(t, rule, detail))

    def summary(self) -> dict[str, int]:
        """Violations counted by rule."""
        out: dict[str, int] = {}
        for v in self.violations:
            out[v.rule] = out.get(v.rule, 0) + 1
        return out
