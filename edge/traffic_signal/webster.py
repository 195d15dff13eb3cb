"""Webster's fixed-time plan: a cycle and green split from the flows a junction carries.

F. V. Webster, *Traffic Signal Settings*, Road Research Technical Paper 39 (1958): with
``y_i`` the flow ratio (flow / saturation flow) of the critical group of phase ``i``,
``Y = Σ y_i`` and ``L`` the lost time per cycle, the cycle of least delay is about
``C0 = (1.5 L + 5) / (1 - Y)``, and the effective green ``C0 - L`` is split in proportion
to the ``y_i``.

Here ``L`` counts every intergreen of the cycle, a start-up loss per vehicle phase and the
pedestrian walk (vehicles stand still during it); the walk gets its minimum. The cycle is
kept inside what the timing sheet allows: every green within its phase's limits, and the
longest pedestrian wait within ``ped_max_wait_s``. Pure arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from protocols.junction import GroupKind, JunctionSpec

SATURATION_PER_LANE = 1800.0  # vehicles per hour of green per lane
STARTUP_LOSS_S = 2.0


@dataclass(frozen=True)
class WebsterPlan:
    cycle_s: float
    greens: dict[str, float]  # phase name -> green
    flow_ratio: float  # Y


def group_flows(junction: JunctionSpec, od_per_hour: Mapping[str, float]) -> dict[str, float]:
    """Vehicles per hour on each vehicle group from origin-destination flows ("n-s": 500)."""
    out: dict[str, float] = {}
    for g in junction.groups:
        if g.kind is not GroupKind.VEHICLE:
            continue
        out[g.name] = sum(od_per_hour.get(f"{m.from_arm}-{m.to_arm}", 0.0) for m in g.movements)
    return out


def webster(junction: JunctionSpec, flows: Mapping[str, float]) -> WebsterPlan:
    j = junction
    order = [j.phase_index(n) for n in j.fixed_plan]
    ratios: dict[int, float] = {}
    for p in order:
        if p in j.ped_phases:
            continue
        ratios[p] = max(
            flows.get(g, 0.0) / (SATURATION_PER_LANE * j.group(g).lanes) for g in j.phases[p].groups
        )
    y_total = min(sum(ratios.values()), 0.9)
    lost = sum(sum(j.transition(p, order[(i + 1) % len(order)])) for i, p in enumerate(order))
    lost += STARTUP_LOSS_S * len(ratios)
    lost += sum(j.phases[p].min_green_s for p in order if p in j.ped_phases)
    cycle = (1.5 * lost + 5) / (1 - y_total)
    greens: dict[str, float] = {}
    for _ in range(20):  # shrink the cycle until the pedestrian wait fits
        effective = cycle - lost
        for p in order:
            ph = j.phases[p]
            if p in j.ped_phases:
                greens[ph.name] = ph.min_green_s
                continue
            share = ratios[p] / y_total if y_total > 0 else 1 / len(ratios)
            green = effective * share + STARTUP_LOSS_S
            greens[ph.name] = round(min(max(green, ph.min_green_s), ph.max_green_s))
        doc = j.model_dump(by_alias=True)
        for ph in doc["phases"]:
            ph["fixed_green_s"] = greens[ph["name"]]
        try:  # the sheet's own checks say whether the pedestrian wait fits
            trial = JunctionSpec.model_validate(doc)
        except ValidationError:
            cycle *= 0.9
            continue
        return WebsterPlan(trial.fixed_cycle_s(), greens, y_total)
    raise ValueError("no Webster plan keeps the pedestrian wait within ped_max_wait_s")
