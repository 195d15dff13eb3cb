"""Configuration of the ``thresholds`` app (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge.config.base import Catalog, Loc, PluginConfig, StrictModel
from protocols.envelope import Ident, Severity


class ThresholdRule(StrictModel):
    name: str | None = Field(
        default=None, description="Rule name in alarms; default '<device>.<point>.<above|below>'"
    )
    device: Ident = Field(description="Device whose point is watched")
    point: Ident = Field(description="Point watched")
    above: float | None = Field(default=None, description="Raise when the value goes above this")
    below: float | None = Field(default=None, description="Raise when the value goes below this")
    severity: Severity = Field(default=Severity.WARNING, description="Severity of the alarm")
    hysteresis: float = Field(
        default=0.0, ge=0, description="Clear only once the value is this far back inside the limit"
    )
    min_duration_s: float = Field(
        default=0.0, ge=0, description="The value must stay past the limit this long to raise"
    )
    clear_after_s: float | None = Field(
        default=None,
        ge=0,
        description="...and back inside this long to clear (default: min_duration_s)",
    )

    @model_validator(mode="after")
    def _one_limit(self) -> ThresholdRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below' (one rule per limit)")
        return self

    @property
    def direction(self) -> Literal["above", "below"]:
        return "above" if self.above is not None else "below"

    @property
    def limit(self) -> float:
        value = self.above if self.above is not None else self.below
        assert value is not None  # guaranteed by _one_limit
        return value

    @property
    def rule_name(self) -> str:
        return self.name or f"{self.device}.{self.point}.{self.direction}"


class ThresholdsConfig(PluginConfig):
    """Raise and clear alarms when points cross limits, with hysteresis and a minimum duration."""

    type: Literal["thresholds"] = Field(description="Plug-in type")
    rules: list[ThresholdRule] = Field(min_length=1, description="Limits to watch")

    def check(self, catalog: Catalog) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        names: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.rule_name in names:
                problems.append(
                    (("rules", i, "name"), f"rule name {rule.rule_name!r} is used twice")
                )
            names.add(rule.rule_name)
            points = catalog.devices.get(rule.device)
            if points is None:
                problems.append((("rules", i, "device"), catalog.no_device(rule.device)))
            elif rule.point not in points and rule.device not in catalog.incomplete:
                problems.append(
                    (
                        ("rules", i, "point"),
                        catalog.no_point(rule.device, rule.point),
                    )
                )
        return problems
