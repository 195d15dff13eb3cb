"""Configuration of the ``traffic_signal`` app (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edge.config.base import Catalog, Loc, PluginConfig
from edge.config.problems import did_you_mean
from protocols.envelope import Ident
from protocols.junction import JunctionSpec

#: Points the app reads and writes; the device must have them (profile 'signal-controller').
REQUIRED_POINTS = (
    "cabinet_time",
    "mode",
    "phase",
    "interval",
    "table_id",
    "mode_request",
    "heartbeat",
    "cmd_seq",
    "cmd_next_green",
)


class TrafficSignalConfig(PluginConfig):
    """Adaptive control of one signalised junction, safe by construction (see docs)."""

    type: Literal["traffic_signal"] = Field(description="Plug-in type")
    device: Ident = Field(
        description="The signal controller: a modbus device with profile 'signal-controller'"
    )
    junction: str | JunctionSpec = Field(
        description="Timing sheet: a shipped name (e.g. 'four-arm') or the sheet itself"
    )
    controller: Literal["cityedge", "max_pressure"] = Field(
        default="cityedge",
        description="cityedge (adaptive, the default) or max_pressure (the textbook method)",
    )
    ped_margin_s: float = Field(
        default=2.0,
        ge=0,
        le=30,
        description="Pedestrians are served this much before their maximum wait (latency)",
    )
    recover_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="Trouble must be gone this long (cabinet seconds) before control resumes",
    )
    link_timeout_s: float = Field(
        default=3.0,
        gt=0,
        le=600,
        description="No poll of the controller for this long: the link is lost (fallback event)",
    )

    @field_validator("junction")
    @classmethod
    def _known(cls, v: str | JunctionSpec) -> str | JunctionSpec:
        if isinstance(v, str):
            from edge.traffic_signal import junction_names

            names = junction_names()
            if v not in names:
                hint = did_you_mean(v, names) or f"; shipped: {', '.join(names)}"
                raise ValueError(f"no shipped timing sheet {v!r}{hint}")
        return v

    def spec(self) -> JunctionSpec:
        if isinstance(self.junction, JunctionSpec):
            return self.junction
        from edge.traffic_signal import load_junction

        return load_junction(self.junction)

    def check(self, catalog: Catalog) -> list[tuple[Loc, str]]:
        points = catalog.devices.get(self.device)
        if points is None:
            return [(("device",), catalog.no_device(self.device))]
        if self.device in catalog.incomplete:
            return []
        missing = [p for p in REQUIRED_POINTS if p not in points]
        if missing:
            return [
                (
                    ("device",),
                    f"device {self.device!r} lacks signal-controller points "
                    f"({', '.join(missing)}): give it profile 'signal-controller'",
                )
            ]
        if not points["cmd_seq"].writable:
            return [(("device",), f"device {self.device!r}: the plan registers must be writable")]
        return []
