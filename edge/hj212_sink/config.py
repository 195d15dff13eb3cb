"""Configuration of the ``hj212`` sink (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from edge.config.base import Catalog, Loc, PluginConfig, StrictModel
from protocols.envelope import Ident


class Hj212StationConfig(StrictModel):
    device: Ident = Field(description="The gateway device this station reports")
    mn: str = Field(
        pattern=r"^[A-Za-z0-9]{1,24}$", description="Station id (MN) the platform knows, 1-24 chars"
    )
    st: int = Field(
        default=21,
        ge=0,
        le=99,
        description="System code (ST): 21 surface water, 22 air quality, 32 water pollution source",
    )
    codes: dict[Ident, str] = Field(
        default_factory=dict,
        description="Point -> pollutant code (HJ 212-2017 appendix B, e.g. {ph: w01001}); points "
        "named like the shipped profiles map by themselves; others are not sent",
    )

    @field_validator("codes")
    @classmethod
    def _codes(cls, v: dict[str, str]) -> dict[str, str]:
        for point, code in v.items():
            if not code or not code.replace("_", "").isalnum():
                raise ValueError(f"point {point}: code {code!r} must be letters and digits")
        return v


class Hj212SinkConfig(PluginConfig):
    """Send monitoring data to an environment bureau's platform over HJ 212-2017 (TCP):
    real-time (2011), minute (2051), hour (2061) and day (2031) data, answered and resent."""

    type: Literal["hj212"] = Field(description="Plug-in type")
    host: str = Field(description="Platform host name or address")
    port: int = Field(ge=1, le=65535, description="Platform TCP port")
    pw: SecretStr = Field(description="Access password (PW, up to 6 characters); use !secret")
    stations: list[Hj212StationConfig] = Field(min_length=1, description="Stations to report")
    realtime_interval_s: float = Field(
        default=30.0,
        ge=0,
        le=86400,
        description="Real-time data (2011) at most this often per station; 0: none. The "
        "platform may change it (command 1062)",
    )
    send_minutes: bool = Field(default=True, description="Send minute data (2051)")
    ack_timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="OverTime: wait for the platform's answer"
    )
    resends: int = Field(
        default=3, ge=0, le=20, description="ReCount: resends of an unanswered message"
    )
    utc_offset_h: float = Field(
        default=8.0, ge=-12, le=14, description="Time zone of QN and DataTime (China: +8)"
    )
    max_segment: int = Field(
        default=1024, ge=200, le=1024, description="Largest data segment; longer data is split"
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120, description="Deadline to connect")
    reconnect_max_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest wait between connection attempts"
    )
    buffer_capacity: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Messages held while the platform is away; beyond it the oldest real-time "
        "data goes first, then the oldest of the rest",
    )
    answer_platform: Literal["yes", "no"] = Field(
        default="yes",
        description="Answer the platform's commands (1000, 1011, 1061, 1062, 2011, 2012)",
    )

    @field_validator("pw")
    @classmethod
    def _pw(cls, v: SecretStr) -> SecretStr:
        text = v.get_secret_value()
        if not (1 <= len(text) <= 6 and text.isalnum()):
            raise ValueError("PW must be 1-6 letters or digits")
        return v

    def check(self, catalog: Catalog) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        for i, st in enumerate(self.stations):
            points = catalog.devices.get(st.device)
            if points is None:
                problems.append((("stations", i, "device"), catalog.no_device(st.device)))
            elif st.device not in catalog.incomplete:
                for point in st.codes:
                    if point not in points:
                        problems.append(
                            (
                                ("stations", i, "codes"),
                                catalog.no_point(st.device, point),
                            )
                        )
        mns = [s.mn for s in self.stations]
        for i, mn in enumerate(mns):
            if mns.index(mn) != i:
                problems.append((("stations", i, "mn"), f"MN {mn!r} is used by two stations"))
        return problems
