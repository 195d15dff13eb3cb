"""Scenarios shipped as data: which junction, what demand, which faults.

A scenario is ``sim/junction/scenarios/<name>.yaml``. Demand is given per
origin-destination pair (``"n-s"``: from the north arm to the south arm) in vehicles per hour,
one number per time slice (``slice_s`` long), and per crossing in pedestrians per hour. Arrivals
are Poisson (SUMO flows with exponential headways), drawn from the run's seed, so every
controller sees the same vehicles when given the same seed.

Only pydantic here.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field, model_validator

from edge.config.base import StrictModel
from edge.config.problems import load_model
from protocols.envelope import Ident

SCENARIOS_DIR = Path(__file__).parent / "scenarios"


class DetectorFailure(StrictModel):
    detector: Ident = Field(description="Detector name in the timing sheet")
    at_s: float = Field(ge=0, description="Simulation time the detector fails")
    duration_s: float | None = Field(
        default=None, gt=0, description="How long it stays failed (absent: to the end)"
    )
    mode: str = Field(
        default="stuck", pattern="^stuck$", description="stuck: reads occupied, values frozen"
    )

    def active(self, t: float) -> bool:
        return t >= self.at_s and (self.duration_s is None or t < self.at_s + self.duration_s)


class Demand(StrictModel):
    slice_s: float = Field(default=900, gt=0, le=86400, description="Length of one time slice")
    vehicles_per_hour: dict[str, list[float]] = Field(
        description="Per 'from-to' arm pair, vehicles per hour in each slice"
    )
    pedestrians_per_hour: dict[str, list[float]] = Field(
        default_factory=dict, description="Per crossed arm, pedestrians per hour in each slice"
    )

    @model_validator(mode="after")
    def _shape(self) -> Demand:
        for key, rates in {**self.vehicles_per_hour, **self.pedestrians_per_hour}.items():
            if any(r < 0 for r in rates):
                raise ValueError(f"{key}: rates cannot be negative")
        for od in self.vehicles_per_hour:
            frm, sep, to = od.partition("-")
            if not sep or not frm or not to or frm == to:
                raise ValueError(f"{od!r}: write vehicle demand as 'from-to', e.g. 'n-s'")
        return self

    def slices(self) -> int:
        rates = [*self.vehicles_per_hour.values(), *self.pedestrians_per_hour.values()]
        return max((len(r) for r in rates), default=0)


class Scenario(StrictModel):
    name: Ident = Field(description="Scenario name (the file is <name>.yaml)")
    description: str = Field(description="What the scenario shows")
    junction: Ident = Field(
        default="four-arm", description="Timing sheet (edge/traffic_signal/junctions)"
    )
    network: Ident = Field(default="four-arm", description="SUMO plain-XML network to build")
    pattern: Ident = Field(description="Demand pattern name, for reports")
    demand: Demand = Field(description="Vehicle and pedestrian demand")
    step_s: float = Field(default=0.5, gt=0, le=1, description="SUMO step length")
    drain_s: float = Field(
        default=1800, ge=0, le=7200, description="After the demand ends, run this long at most"
    )
    detector_failures: list[DetectorFailure] = Field(
        default_factory=list, description="Detectors that fail during the run"
    )
    link_faults: list[str] = Field(
        default_factory=list,
        description="Modbus faults of the cabinet, e.g. 'silent@120+20' (simulation seconds)",
    )

    @property
    def demand_s(self) -> float:
        return self.demand.slice_s * self.demand.slices()


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))


def load_scenario(name: str) -> Scenario:
    """A shipped scenario; ``KeyError`` if absent, ``ValueError`` listing its problems."""
    path = SCENARIOS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(name)
    return _load(path)


@cache
def _load(path: Path) -> Scenario:
    scenario = load_model(path, Scenario)
    if scenario.name != path.stem:
        raise ValueError(f"{path}: scenario name {scenario.name!r} must match the file name")
    return scenario
