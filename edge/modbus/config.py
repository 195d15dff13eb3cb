"""Configuration of the ``modbus`` source: one bus — a Modbus TCP connection or an RTU serial
line — with one or more devices (unit ids) on it, each with points from a shipped profile
and/or listed inline.

Only pydantic here, so ``check-config`` works without the plug-in's extras installed.
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
    max_in_flight: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Requests to this device on the wire at once (tcp). Keep 1 unless the "
        "device's manual says it queues requests: many devices, and gateways to serial lines, "
        "answer one at a time",
    )

    @model_validator(mode="after")
    def _has_points(self) -> ModbusDeviceConfig:
        if self.profile is None and not self.points:
            raise ValueError("give a 'profile' or a list of 'points' (or both)")
        return self


class SerialConfig(StrictModel):
    """An RS-485/RS-232 line for Modbus RTU."""

    device: str = Field(description="Serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int = Field(default=9600, ge=300, le=4_000_000, description="Bits per second")
    parity: Literal["N", "E", "O"] = Field(
        default="E", description="Parity: N none, E even (the Modbus default), O odd"
    )
    bytesize: Literal[7, 8] = Field(default=8, description="Data bits (RTU needs 8)")
    stopbits: Literal[1, 2] = Field(default=1, description="Stop bits")
    inter_frame_ms: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Silence between frames; default the 3.5 characters of Modbus over Serial "
        "Line 2.5.1.1 (1.75 ms above 19200 baud)",
    )

    @model_validator(mode="after")
    def _rtu_is_8_bit(self) -> SerialConfig:
        if self.bytesize != 8:
            raise ValueError("Modbus RTU sends 8 data bits per character; set bytesize: 8")
        return self

    def describe(self) -> str:
        """``/dev/ttyUSB0 at 9600 8E1``."""
        return f"{self.device} at {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


class ModbusSourceConfig(PluginConfig):
    """Poll Modbus devices on one bus (a TCP connection or an RTU serial line) on an interval;
    on TCP the devices in parallel, each with up to its max_in_flight requests on the wire; on
    RTU one request at a time; a dead unit is skipped with backoff; availability is reported
    once per change."""

    type: Literal["modbus"] = Field(description="Plug-in type")
    transport: Literal["tcp", "rtu"] = Field(
        default="tcp", description="tcp: Modbus TCP (host, port); rtu: Modbus RTU (serial)"
    )
    host: str | None = Field(
        default=None, description="Device or Modbus gateway host name / address (tcp)"
    )
    port: int = Field(default=502, ge=1, le=65535, description="TCP port (tcp)")
    serial: SerialConfig | None = Field(default=None, description="The serial line (rtu)")
    timeout_s: float = Field(default=1.0, gt=0, le=60, description="Deadline for one request")
    connect_timeout_s: float = Field(default=3.0, gt=0, le=60, description="Deadline to connect")
    reconnect_max_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest wait between reconnect attempts"
    )
    retry_dead_initial_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="First wait before a unit that stopped answering is tried again "
        "(default: its poll interval); doubles per failed try",
    )
    retry_dead_max_s: float = Field(
        default=60.0, gt=0, le=86400, description="Longest wait between tries of a dead unit"
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
    devices: list[ModbusDeviceConfig] = Field(min_length=1, description="Devices on this bus")

    @model_validator(mode="after")
    def _transport_fields(self) -> ModbusSourceConfig:
        if self.transport == "tcp" and not self.host:
            raise ValueError("transport tcp needs 'host' (and 'port', default 502)")
        if self.transport == "rtu" and self.serial is None:
            raise ValueError("transport rtu needs 'serial: {device: /dev/ttyUSB0, baudrate: ...}'")
        if self.transport == "rtu" and self.host is not None:
            raise ValueError("'host' is for transport tcp; an rtu bus has 'serial'")
        if self.transport == "rtu" and any(d.max_in_flight > 1 for d in self.devices):
            raise ValueError(
                "an rtu line carries one request at a time: max_in_flight is for transport tcp"
            )
        units = [d.unit_id for d in self.devices]
        dup = sorted({u for u in units if units.count(u) > 1})
        if dup:
            raise ValueError(f"unit id {dup[0]} is used by two devices on this bus")
        return self

    @property
    def where(self) -> str:
        """Where the bus is, for messages: ``10.0.0.5:502`` or ``/dev/ttyUSB0 at 9600 8E1``."""
        if self.serial is not None:
            return self.serial.describe()
        return f"{self.host}:{self.port}"

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
