"""Configuration of the ``environment`` app (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge.config.base import Catalog, Loc, PluginConfig, StrictModel
from edge.config.problems import did_you_mean
from protocols.envelope import Ident

#: quantities the national standards know, by medium (see edge/environment/limits/*.yaml)
WATER_PARAMETERS = (
    "ph", "dissolved_oxygen", "codmn", "cod", "bod5", "ammonia_nitrogen", "total_phosphorus",
    "total_nitrogen", "copper", "zinc", "fluoride", "selenium", "arsenic", "mercury", "cadmium",
    "chromium_vi", "lead", "cyanide", "volatile_phenol", "petroleum", "las", "sulfide",
    "fecal_coliform",
)  # fmt: skip
AIR_PARAMETERS = ("so2", "no2", "co", "o3", "pm10", "pm2_5", "tsp", "nox", "pb", "bap")


class StationConfig(StrictModel):
    device: Ident = Field(description="The monitoring device (from any source)")
    medium: Literal["water", "air"] = Field(description="What it monitors")
    points: dict[Ident, str] = Field(
        default_factory=dict,
        description="Point -> national parameter (e.g. {do: dissolved_oxygen}); points named as "
        "a parameter map to it by themselves; others are aggregated without limits",
    )
    water_class: Literal["I", "II", "III", "IV", "V"] = Field(
        default="III", description="Water: GB 3838-2002 class the water body must meet"
    )
    lake: bool = Field(default=False, description="Water: a lake or reservoir (lower TP limits)")
    air_grade: Literal[1, 2] = Field(
        default=2, description="Air: GB 3095-2012 area class (1 nature reserve, 2 urban)"
    )

    @model_validator(mode="after")
    def _known_parameters(self) -> StationConfig:
        known = WATER_PARAMETERS if self.medium == "water" else AIR_PARAMETERS
        for point, parameter in self.points.items():
            if parameter not in known:
                hint = did_you_mean(parameter, known) or f"; known: {', '.join(known)}"
                raise ValueError(f"point {point}: no {self.medium} parameter {parameter!r}{hint}")
        return self

    def parameter_of(self, point: str) -> str | None:
        if point in self.points:
            return self.points[point]
        known = WATER_PARAMETERS if self.medium == "water" else AIR_PARAMETERS
        return point if point in known else None


class EnvironmentConfig(PluginConfig):
    """Water and air stations: minute, hour and day aggregates; alarms against GB 3838-2002 and
    GB 3095-2012 limits; the HJ 633-2012 AQI and primary pollutant with each hour and day."""

    type: Literal["environment"] = Field(description="Plug-in type")
    stations: list[StationConfig] = Field(min_length=1, description="Monitoring stations")
    send_minutes: bool = Field(default=True, description="Send minute aggregates too")
    utc_offset_h: float = Field(
        default=8.0, ge=-12, le=14, description="Local time zone of days (China: +8)"
    )
    grace_s: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="Wait this long after a period ends for late readings",
    )

    def check(self, catalog: Catalog) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        seen: set[str] = set()
        for i, st in enumerate(self.stations):
            if st.device in seen:
                problems.append(
                    (("stations", i, "device"), f"device {st.device!r} is listed twice")
                )
            seen.add(st.device)
            points = catalog.devices.get(st.device)
            if points is None:
                problems.append((("stations", i, "device"), catalog.no_device(st.device)))
                continue
            if st.device in catalog.incomplete:
                continue
            for point in st.points:
                if point not in points:
                    problems.append(
                        (
                            ("stations", i, "points"),
                            catalog.no_point(st.device, point),
                        )
                    )
        return problems
