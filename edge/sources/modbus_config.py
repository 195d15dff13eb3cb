"""Configuration of the ``modbus`` source: one Modbus TCP connection, one or more devices
(unit ids) behind it, each with points from a shipped profile and/or listed inline.

Only pydantic here, so ``check-config`` works without pymodbus installed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge.config.base import CheckContext, PluginConfig, PointInfo, SourceCatalog, StrictModel
from edge.config.problems import did_you_mean
from protocols.envelope import Ident
from protocols.modbus import (
    MAX_REGISTERS_PER_READ,
    DataType,
    Order,
    PointSpec,
    RegisterType,
)


class ModbusPointConfig(StrictModel):
    name: Ident = Field(description="Point name, unique within the device (e.g. 'ph')")
    address: int = Field(
        ge=0, le=65535, description="Zero-based address in its table (PDU address)"
    )
    table: RegisterType = Field(
        default=RegisterType.HOLDING,
        description="Modbus table: coil, discrete_input, holding or input",
    )
    dtype: DataType = Field(
        default=DataType.UINT16,
        description="bool, int16, uint16, int32, uint32, float32, int64, uint64 or float64 "
        "(coils and discrete inputs: bool)",
    )
    byte_order: Order = Field(default=Order.BIG, description="Byte order inside each register")
    word_order: Order = Field(
        default=Order.BIG,
        description="Register order of multi-register values (big: high word first)",
    )
    scale: float = Field(default=1.0, description="Engineering value = raw * scale + offset")
    offset: float = Field(default=0.0, description="Engineering value = raw * scale + offset")
    unit: str | None = Field(default=None, description="Unit of the engineering value")
    bit: int | None = Field(
        default=None, ge=0, le=15, description="For dtype bool in a register: which bit (0-15)"
    )
    description: str = Field(default="", description="What the point measures")

    @model_validator(mode="before")
    @classmethod
    def _bits_are_bool(cls, data: object) -> object:
        """Coils and discrete inputs hold one bit: their dtype defaults to bool."""
        if (
            isinstance(data, dict)
            and "dtype" not in data
            and data.get("table") in ("coil", "discrete_input")
        ):
            return {**data, "dtype": "bool"}
        return data

    @model_validator(mode="after")
    def _valid_on_a_device(self) -> ModbusPointConfig:
        self.spec()  # raises ValueError with the reason
        return self

    def spec(self) -> PointSpec:
        return PointSpec(
            name=self.name,
            address=self.address,
            register_type=self.table,
            dtype=self.dtype,
            byte_order=self.byte_order,
            word_order=self.word_order,
            scale=self.scale,
            offset=self.offset,
            unit=self.unit,
            bit=self.bit,
        )


class ModbusDeviceConfig(StrictModel):
    name: Ident = Field(description="Device id, unique within the site; used in topics and events")
    unit_id: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id")
    profile: str | None = Field(
        default=None, description="Shipped or site profile whose register map the device uses"
    )
    points: list[ModbusPointConfig] = Field(
        default_factory=list, description="Points beyond (or instead of) the profile's"
    )
    poll_interval_s: float = Field(default=5.0, gt=0, le=86400, description="Seconds between polls")
    max_gap: int | None = Field(
        default=None, ge=0, le=124, description="Override of the source's max_gap for this device"
    )
    max_registers_per_read: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REGISTERS_PER_READ,
        description="Override for devices that refuse long reads",
    )

    @model_validator(mode="after")
    def _has_points(self) -> ModbusDeviceConfig:
        if self.profile is None and not self.points:
            raise ValueError("give a 'profile' or a list of 'points' (or both)")
        return self


class ModbusSourceConfig(PluginConfig):
    """Poll Modbus TCP devices on an interval; report availability once per change."""

    type: Literal["modbus"] = Field(description="Plug-in type")
    host: str = Field(description="Device or Modbus gateway host name / address")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port")
    timeout_s: float = Field(default=1.0, gt=0, le=60, description="Deadline for one request")
    connect_timeout_s: float = Field(default=3.0, gt=0, le=60, description="Deadline to connect")
    reconnect_max_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest wait between reconnect attempts"
    )
    max_gap: int = Field(
        default=0, ge=0, le=124, description="Unused registers a merged read may span (0: none)"
    )
    max_registers_per_read: int = Field(
        default=MAX_REGISTERS_PER_READ,
        ge=1,
        le=MAX_REGISTERS_PER_READ,
        description="Largest read request in registers (protocol limit 125)",
    )
    unavailable_after: int = Field(
        default=2, ge=1, le=100, description="Consecutive failed polls before 'unavailable'"
    )
    devices: list[ModbusDeviceConfig] = Field(
        min_length=1, description="Devices on this connection"
    )

    def resolve_points(
        self, ctx: CheckContext
    ) -> tuple[dict[str, list[ModbusPointConfig]], SourceCatalog]:
        """Each device's points (profile first, inline after), and the catalog with problems."""
        from edge.profiles import ProfileLibrary

        library = ProfileLibrary(ctx.profiles_dirs)
        out: dict[str, list[ModbusPointConfig]] = {}
        found = SourceCatalog()
        for i, dev in enumerate(self.devices):
            points: list[ModbusPointConfig] = []
            if dev.profile is not None:
                try:
                    points.extend(library.load(dev.profile).points)
                except KeyError:
                    names = library.names()
                    hint = did_you_mean(dev.profile, names) or f"; known: {', '.join(names)}"
                    found.problems.append(
                        (("devices", i, "profile"), f"no profile {dev.profile!r}{hint}")
                    )
                    found.incomplete.add(dev.name)
                except ValueError as err:
                    found.problems.append((("devices", i, "profile"), str(err)))
                    found.incomplete.add(dev.name)
            points.extend(dev.points)
            seen: set[str] = set()
            for p in points:
                if p.name in seen:
                    found.problems.append(
                        (("devices", i, "points"), f"point {p.name!r} is defined twice")
                    )
                seen.add(p.name)
            out[dev.name] = points
            found.devices[dev.name] = {
                p.name: PointInfo(unit=p.unit, writable=p.table.writable) for p in points
            }
        return out, found

    def catalog(self, ctx: CheckContext) -> SourceCatalog:
        return self.resolve_points(ctx)[1]
