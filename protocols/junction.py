"""A signalised junction's timing sheet: the contract between a signal controller (cabinet) and
the gateway that drives it.

The sheet says what a traffic engineer signs off for a junction:

- **signal groups**: the heads that show one aspect together. A vehicle group serves one or
  more movements (``from`` arm → ``to`` arm) and shows green → amber → red; a pedestrian group
  serves one crossing and shows walk (green) → red, its clearance ("flashing don't walk") counted
  in ``clearance_s``.
- **conflicts**: pairs of groups whose paths cross or merge. Two conflicting groups are never
  green (or amber) together, and between the end of one's green and the start of the other's
  green lies at least the intergreen :meth:`JunctionSpec.intergreen`.
- **phases** (stages): sets of mutually non-conflicting groups that are green together, with
  their minimum and maximum green. Each group belongs to exactly one phase, so a phase change
  ends the green of every group of the old phase.
- **detectors**: one zone detector per listed vehicle group, in register order.
- the cabinet's **fixed plan** (the cycle it runs on its own), and the longest a pedestrian may
  wait for a walk signal after pressing the button.

The intergreen from group A (ending) to a conflicting group B (starting) is A's amber plus A's
clearance (all-red for vehicles, the pedestrian clearance for crossings): the clearing group
decides, as with intergreen tables computed from the clearing path (RiLSA, §2.5; MUTCD §4F.14).

:meth:`JunctionSpec.table_id` is a CRC-32 over the canonical JSON of the sheet: a cabinet
reports the id of the sheet it runs, and a gateway refuses to drive a cabinet whose sheet
differs from its own.

Pure: pydantic models and arithmetic, no I/O. Loading a sheet from YAML is the caller's job.
A sheet is immutable and caches its lookups: to change one, validate a new sheet (a
``model_copy(update=...)`` would keep the old caches, ``table_id`` among them).
"""

from __future__ import annotations

import json
import zlib
from enum import StrEnum
from functools import cached_property
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols.envelope import Ident

MAX_PHASES: Final = 16
MAX_DETECTORS: Final = 12
MAX_CROSSINGS: Final = 16


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GroupKind(StrEnum):
    VEHICLE = "vehicle"
    PEDESTRIAN = "pedestrian"


class Movement(_Model):
    from_arm: Ident = Field(alias="from", description="Arm the traffic comes from")
    to_arm: Ident = Field(alias="to", description="Arm the traffic leaves by")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SignalGroup(_Model):
    name: Ident = Field(description="Group name, e.g. 'N_T' (north, through and right)")
    kind: GroupKind = Field(description="vehicle or pedestrian")
    movements: list[Movement] = Field(
        default_factory=list, description="Vehicle movements the group serves"
    )
    crosses: Ident | None = Field(default=None, description="Arm a pedestrian group crosses")
    lanes: int = Field(default=1, ge=1, le=8, description="Approach lanes the group uses")
    min_green_s: float = Field(
        ge=1, le=120, description="Shortest green (walk, for pedestrians) once started"
    )
    amber_s: float = Field(
        default=0.0, ge=0, le=10, description="Amber after green (vehicles; 0 for pedestrians)"
    )
    clearance_s: float = Field(
        ge=0,
        le=60,
        description="Red clearance after amber (vehicles: all-red) or after walk (pedestrians)",
    )

    @model_validator(mode="after")
    def _shape(self) -> SignalGroup:
        if self.kind is GroupKind.VEHICLE:
            if not self.movements:
                raise ValueError(f"vehicle group {self.name!r} needs 'movements'")
            if self.crosses is not None:
                raise ValueError(f"vehicle group {self.name!r} cannot have 'crosses'")
            if self.amber_s < 3:
                raise ValueError(f"vehicle group {self.name!r}: amber_s must be at least 3 s")
        else:
            if self.crosses is None or self.movements:
                raise ValueError(
                    f"pedestrian group {self.name!r} needs 'crosses' and no 'movements'"
                )
            if self.amber_s != 0:
                raise ValueError(
                    f"pedestrian group {self.name!r}: no amber; put the clearance in clearance_s"
                )
        return self


class Phase(_Model):
    name: Ident = Field(description="Phase (stage) name, e.g. 'NS_T'")
    groups: list[Ident] = Field(min_length=1, description="Signal groups green in this phase")
    min_green_s: float = Field(ge=1, le=300, description="Shortest green of the phase")
    max_green_s: float = Field(ge=1, le=300, description="Longest green of the phase")
    fixed_green_s: float = Field(ge=1, le=300, description="Green in the cabinet's fixed plan")

    @model_validator(mode="after")
    def _ordered(self) -> Phase:
        if not self.min_green_s <= self.fixed_green_s <= self.max_green_s:
            raise ValueError(
                f"phase {self.name!r}: need min_green_s <= fixed_green_s <= max_green_s"
            )
        return self


class Detector(_Model):
    name: Ident = Field(description="Detector name")
    group: Ident = Field(description="Vehicle group whose approach lanes the detector watches")
    zone_m: float = Field(default=100.0, gt=0, le=500, description="Zone length upstream, m")


class JunctionSpec(_Model):
    """A junction's timing sheet (see the module docstring)."""

    name: Ident = Field(description="Junction id")
    description: str = Field(default="", description="Free text for people")
    arms: list[Ident] = Field(min_length=2, description="Arm names, clockwise from north")
    groups: list[SignalGroup] = Field(min_length=2, description="Signal groups")
    conflicts: list[tuple[Ident, Ident]] = Field(
        description="Pairs of groups that must never be green together"
    )
    phases: list[Phase] = Field(min_length=2, max_length=MAX_PHASES, description="Phases")
    detectors: list[Detector] = Field(
        default_factory=list, max_length=MAX_DETECTORS, description="Zone detectors, in order"
    )
    fixed_plan: list[Ident] = Field(
        min_length=2, description="The cabinet's own cycle: phase names in order"
    )
    ped_max_wait_s: float = Field(
        ge=10, le=600, description="Longest wait from a button press to the walk signal"
    )

    @model_validator(mode="after")
    def _consistent(self) -> JunctionSpec:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError("signal group names must be unique")
        known = set(names)
        for g in self.groups:
            arms = [m.from_arm for m in g.movements] + [m.to_arm for m in g.movements]
            arms += [g.crosses] if g.crosses else []
            for arm in arms:
                if arm not in self.arms:
                    raise ValueError(f"group {g.name!r} names arm {arm!r}, not one of {self.arms}")
        for a, b in self.conflicts:
            for x in (a, b):
                if x not in known:
                    raise ValueError(f"conflict names unknown group {x!r}")
            if a == b:
                raise ValueError(f"group {a!r} cannot conflict with itself")
        if len({p.name for p in self.phases}) != len(self.phases):
            raise ValueError("phase names must be unique")
        owner: dict[str, str] = {}
        for p in self.phases:
            for member in p.groups:
                if member not in known:
                    raise ValueError(f"phase {p.name!r} names unknown group {member!r}")
                if member in owner:
                    raise ValueError(
                        f"group {member!r} is in phases {owner[member]!r} and {p.name!r}"
                    )
                owner[member] = p.name
            for i, a in enumerate(p.groups):
                for b in p.groups[i + 1 :]:
                    if frozenset((a, b)) in self.conflict_pairs:
                        raise ValueError(f"phase {p.name!r} greens conflicting groups {a}, {b}")
            floor = max(self.group(name).min_green_s for name in p.groups)
            if p.min_green_s < floor:
                raise ValueError(
                    f"phase {p.name!r}: min_green_s {p.min_green_s} is below its groups' "
                    f"minimum green {floor}"
                )
        unowned = known - set(owner)
        if unowned:
            raise ValueError(f"groups in no phase: {', '.join(sorted(unowned))}")
        crossings = [g for g in self.groups if g.kind is GroupKind.PEDESTRIAN]
        if len(crossings) > MAX_CROSSINGS:
            raise ValueError(f"at most {MAX_CROSSINGS} pedestrian groups")
        phase_names = {p.name for p in self.phases}
        for name in self.fixed_plan:
            if name not in phase_names:
                raise ValueError(f"fixed_plan names unknown phase {name!r}")
        if set(self.fixed_plan) != phase_names:
            missing = phase_names - set(self.fixed_plan)
            raise ValueError(f"fixed_plan must serve every phase; missing {sorted(missing)}")
        if any(a == b for a, b in zip(self.fixed_plan, self.fixed_plan[1:], strict=False)):
            raise ValueError("fixed_plan cannot repeat a phase back to back")
        for d in self.detectors:
            if d.group not in known or self.group(d.group).kind is not GroupKind.VEHICLE:
                raise ValueError(f"detector {d.name!r} must watch a vehicle group")
        if crossings and self.fixed_ped_gap_s() > self.ped_max_wait_s:
            raise ValueError(
                f"the fixed plan leaves pedestrians waiting up to {self.fixed_ped_gap_s():.0f} s, "
                f"more than ped_max_wait_s {self.ped_max_wait_s}: shorten its greens"
            )
        worst = self.worst_ped_service_s()
        if crossings and self.ped_max_wait_s < worst:
            raise ValueError(
                f"ped_max_wait_s {self.ped_max_wait_s} is shorter than the quickest the "
                f"cabinet can guarantee ({worst:.0f} s: an intergreen, a minimum green and "
                "another intergreen)"
            )
        return self

    # -- lookups -------------------------------------------------------------------------

    @cached_property
    def conflict_pairs(self) -> frozenset[frozenset[str]]:
        return frozenset(frozenset(pair) for pair in self.conflicts)

    def conflicting(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.conflict_pairs

    def group(self, name: str) -> SignalGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def phase_index(self, name: str) -> int:
        for i, p in enumerate(self.phases):
            if p.name == name:
                return i
        raise KeyError(name)

    @cached_property
    def ped_phases(self) -> frozenset[int]:
        """Indices of the phases that give a walk signal."""
        return frozenset(
            i
            for i, p in enumerate(self.phases)
            if any(self.group(g).kind is GroupKind.PEDESTRIAN for g in p.groups)
        )

    @cached_property
    def crossings(self) -> tuple[str, ...]:
        """Pedestrian groups in register (bit) order."""
        return tuple(g.name for g in self.groups if g.kind is GroupKind.PEDESTRIAN)

    def phase_of_crossing(self, crossing: str) -> int:
        for i, p in enumerate(self.phases):
            if crossing in p.groups:
                return i
        raise KeyError(crossing)

    # -- timing --------------------------------------------------------------------------

    def intergreen(self, ending: str, starting: str) -> float:
        """Least time from the end of ``ending``'s green to the start of ``starting``'s green
        (0 when they do not conflict)."""
        if not self.conflicting(ending, starting):
            return 0.0
        g = self.group(ending)
        return g.amber_s + g.clearance_s

    def transition(self, frm: int, to: int) -> tuple[float, float]:
        """(amber, all-red) seconds between the greens of phases ``frm`` and ``to``.

        The amber is the longest amber of the vehicle groups that end; the all-red makes up
        the longest intergreen between an ending and a starting group that conflict."""
        old, new = self.phases[frm].groups, self.phases[to].groups
        ending = [g for g in old if g not in new]
        amber = max((self.group(g).amber_s for g in ending), default=0.0)
        need = max(
            (self.intergreen(a, b) for a in ending for b in new if b not in old), default=0.0
        )
        return amber, max(0.0, need - amber)

    def worst_ped_service_s(self) -> float:
        """Longest a button pressed while no one waited can wait for walk if the gateway then
        vanishes with a plan committed (a lease runs to the end of the next green): pressed
        as an intergreen begins, that intergreen, the next phase's green at its maximum and
        the intergreen into a pedestrian phase; or pressed as a green committed at its maximum
        begins, that green and the intergreen into a pedestrian phase."""
        if not self.ped_phases:
            return 0.0
        n = len(self.phases)
        worst = 0.0
        for p in range(n):
            for q in range(n):
                if p == q:
                    continue
                wait = sum(self.transition(p, q))
                if q not in self.ped_phases:  # q's green was committed at its longest
                    wait += self.phases[q].max_green_s + min(
                        sum(self.transition(q, r)) for r in self.ped_phases
                    )
                worst = max(worst, wait)
        return worst

    def fixed_cycle_s(self) -> float:
        """Length of the cabinet's fixed cycle: its greens and the intergreens between them."""
        plan = [self.phase_index(n) for n in self.fixed_plan]
        return sum(
            self.phases[p].fixed_green_s + sum(self.transition(p, plan[(i + 1) % len(plan)]))
            for i, p in enumerate(plan)
        )

    def fixed_ped_gap_s(self) -> float:
        """Longest time in the fixed plan from the end of one walk to the start of the next."""
        plan = [self.phase_index(n) for n in self.fixed_plan]
        starts: list[tuple[float, float]] = []  # (start, end) of walk greens over one cycle
        t = 0.0
        for i, p in enumerate(plan):
            green = self.phases[p].fixed_green_s
            if p in self.ped_phases:
                starts.append((t, t + green))
            t += green + sum(self.transition(p, plan[(i + 1) % len(plan)]))
        if not starts:
            return float("inf")
        cycle = t
        gaps = [
            (starts[(k + 1) % len(starts)][0] + (cycle if k + 1 == len(starts) else 0)) - end
            for k, (_, end) in enumerate(starts)
        ]
        return max(gaps)

    def table_id(self) -> int:
        """CRC-32 of the canonical JSON of the sheet (what a cabinet reports it runs)."""
        return self._table_id

    @cached_property
    def _table_id(self) -> int:
        canonical = json.dumps(
            self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
        )
        return zlib.crc32(canonical.encode())


class Aspect(StrEnum):
    """What a signal head shows. Pedestrian heads show GREEN (walk) or RED only."""

    GREEN = "green"
    AMBER = "amber"
    RED = "red"
