"""Source ``modbus``: one bus — a Modbus TCP connection or an RTU serial line — with its units.

The schedule, the breaker per device and availability are the shared poller's
(:mod:`edge.polling`); the wire is the plug-in's own client (:mod:`edge.modbus.client` on the
sans-IO codec :mod:`protocols.modbus_wire`):

- **Schedule.** Every device has a slot every ``poll_interval_s``; devices are staggered over
  the interval; a slot missed because the device (or the line) was busy is skipped, not
  bunched up.
- **Planning.** A device's points are merged into few reads (:func:`protocols.modbus.plan_reads`),
  each decoded straight from the reply's bytes (:class:`protocols.modbus.BlockReader`).
- **In flight.** On TCP every device is polled by its own task: devices on one connection (a
  Modbus gateway's units) are asked in parallel, each with at most ``max_in_flight`` of its
  requests on the wire (default 1: many devices, and gateways to serial lines, answer one
  request at a time). Replies are matched by transaction id, so a late or out-of-order answer
  is never taken for another. An RTU line carries one request at a time, whoever asks.
- **Circuit breaker per device.** A poll stops at its first unanswered request, so a dead unit
  costs at most one timeout. After that the unit is *open*: its slots are skipped (no request)
  until a retry time that doubles per failed try (``retry_dead_initial_s`` …
  ``retry_dead_max_s``). Tries of dead units share one budget per bus — one try per shortest
  poll interval — so however many units are dead, they cost the live ones at most one timeout
  per cycle. A unit that answers again closes its breaker at once.
- **Availability**: one "unavailable" after ``unavailable_after`` failed or skipped slots, one
  "recovered".
- **RTU.** Between frames the line stays silent for t3.5 (Modbus over Serial Line 2.5.1.1);
  messages name the line (``/dev/ttyUSB0 at 9600 8E1``) and what to check.
- **Exception codes** become messages a technician can act on
  (:data:`protocols.modbus.EXCEPTION_CODES`): the device answered, so they never trip the
  breaker.
- **Writes** (:meth:`ModbusSource.write`, used through ``ctx.actuators``) go through the same
  line and the device's in-flight limit, then the point is read back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from cloud_bridge.aio import Slots
from edge.actuators import ActuationError, MultiWriter, Writer
from edge.availability import Availability
from edge.errors import DeviceError, PermanentError
from edge.modbus.client import BusDown, Line, NoReply, RtuLine, TcpLine
from edge.modbus.config import ModbusDeviceConfig, ModbusSourceConfig
from edge.plugin import Plugin, SourceContext, TracksDevices
from edge.polling import PolledDevice, Poller, dead_unit_breaker
from edge.readings import Reading
from protocols.errors import DecodeError, EncodeError
from protocols.modbus import (
    BlockReader,
    PointSpec,
    ReadBlock,
    RegisterType,
    Value,
    char_bits,
    decode_value,
    describe_exception,
    encode_value,
    plan_reads,
    rtu_silence_s,
)
from protocols.modbus_wire import ExceptionReply, ReadReply, Reply, Request

log = logging.getLogger(__name__)

__all__ = ["BusDown", "ModbusSource", "NoReply"]


@dataclass(kw_only=True)
class _Device(PolledDevice):
    config: ModbusDeviceConfig
    blocks: tuple[ReadBlock, ...]
    points: dict[str, PointSpec]
    readers: tuple[tuple[Request, BlockReader], ...] = ()
    slots: Slots = field(default_factory=lambda: Slots(1))
    bad_points: set[str] = field(default_factory=set)


class ModbusSource(Plugin, Writer, MultiWriter, TracksDevices):
    def __init__(self, config: ModbusSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self.ctx = ctx
        points, found = config.resolve_points(ctx.check)
        if found.problems:
            raise PermanentError(
                f"source {config.name}: "
                + "; ".join(f"{loc}: {msg}" for loc, msg in found.problems),
                hint="run 'cityedge check-config' on the site file",
            )
        now = ctx.clock.time()
        self._where = config.where
        self.devices: list[_Device] = []
        for d in config.devices:
            blocks = plan_reads(
                (p.spec() for p in points[d.name]),
                max_gap=config.max_gap if d.max_gap is None else d.max_gap,
                max_registers=d.max_registers_per_read or config.max_registers_per_read,
            )
            self.devices.append(
                _Device(
                    name=d.name,
                    poll_interval_s=d.poll_interval_s,
                    who=f"device {d.name} (unit {d.unit_id} on {self._where})",
                    availability=Availability(config.unavailable_after, now),
                    breaker=dead_unit_breaker(
                        config.retry_dead_initial_s, config.retry_dead_max_s, d.poll_interval_s
                    ),
                    config=d,
                    blocks=blocks,
                    points={p.name: p.spec() for p in points[d.name]},
                    readers=tuple(
                        (Request(d.unit_id, b.function, b.start, b.count), BlockReader(b))
                        for b in blocks
                    ),
                    slots=Slots(d.max_in_flight),
                )
            )
        self.name = config.name
        self.poller = Poller(ctx, self.devices, self._read_device)
        self._by_name = {d.config.name: d for d in self.devices}
        self._timeout_s = config.timeout_s
        self.line = self._new_line()

    def _new_line(self) -> Line:
        c = self.config
        if c.serial is not None:
            s = c.serial
            silence = (
                s.inter_frame_ms / 1000
                if s.inter_frame_ms is not None
                else rtu_silence_s(s.baudrate, char_bits(s.parity, s.stopbits))
            )
            return RtuLine(
                s.device,
                s.baudrate,
                s.parity,
                s.stopbits,
                silence,
                where=self._where,
                bus_hint="check the USB/RS-485 adapter is plugged in, the device path "
                "(ls /dev/serial/by-id) and that no other program holds the port",
                no_reply_hint="check the unit is powered, its address (unit id) and line "
                "settings, A/B polarity and termination",
                connect_timeout_s=c.connect_timeout_s,
                reconnect_max_s=c.reconnect_max_s,
                now=self.ctx.clock.monotonic,
            )
        assert c.host is not None  # checked by the config model
        return TcpLine(
            c.host,
            c.port,
            len(self.devices),
            where=self._where,
            bus_hint="check the device's power, network, IP address and port",
            no_reply_hint="check the device is powered, the unit id, and the network path",
            connect_timeout_s=c.connect_timeout_s,
            reconnect_max_s=c.reconnect_max_s,
            now=self.ctx.clock.monotonic,
        )

    @property
    def requests(self) -> int:
        """Requests sent on the bus (benchmarks and tests read it)."""
        return self.line.requests

    def device_health(self) -> dict[str, str]:
        return {d.config.name: d.availability.health.value for d in self.devices}

    async def run(self) -> None:
        try:
            await self.poller.run()
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection or line (the next request opens it again)."""
        self.line.close()

    async def poll_once(self, dev: _Device) -> None:
        """Poll one device now (or skip it while its breaker is open)."""
        await self.poller.poll_once(dev)

    async def _read_device(self, dev: _Device) -> list[Reading]:
        limit = dev.config.max_in_flight
        readers = dev.readers
        if limit == 1 or len(readers) == 1:
            replies = [await self._request(dev, req) for req, _ in readers]
        else:  # up to max_in_flight reads on the wire at once (the semaphore keeps the limit)
            replies = list(await asyncio.gather(*(self._request(dev, req) for req, _ in readers)))
        readings: list[Reading] = []
        bad = dev.bad_points
        for (_req, reader), reply in zip(readers, replies, strict=True):
            assert isinstance(reply, ReadReply)  # _request checked the kind
            for point, value in reader.values(reply.data):
                if isinstance(value, DecodeError):
                    self.ctx.metrics.poll_errors.labels(self.name, dev.name, "decode").inc()
                    if point.name not in bad:
                        bad.add(point.name)
                        log.warning("device %s point %s: %s", dev.name, point.name, value)
                    continue
                if bad and point.name in bad:
                    bad.discard(point.name)
                    log.info("device %s point %s: good values again", dev.name, point.name)
                readings.append(Reading(point.name, value, point.unit))
        return readings

    # -- the line -----------------------------------------------------------------------------

    async def _request(self, dev: _Device, req: Request) -> Reply:
        """One request within the device's in-flight limit, with its deadline; the device's
        exception code turned into a :class:`DeviceError` a technician can act on."""
        slots = dev.slots
        if not slots.try_acquire():
            await slots.acquire()
        try:
            reply = await self.line.request(req, self._timeout_s)
        finally:
            slots.release()
        if isinstance(reply, ExceptionReply):
            what, hint = describe_exception(reply.code)
            raise DeviceError(
                f"unit {req.unit} on {self._where} answered fc {req.function} "
                f"{req.address}+{req.count} with exception {reply.code} ({what})",
                hint=hint,
            )
        return reply

    async def _read_block(self, dev: _Device, block: ReadBlock) -> list[int] | list[bool]:
        req = Request(dev.config.unit_id, block.function, block.start, block.count)
        reply = await self._request(dev, req)
        assert isinstance(reply, ReadReply)
        if block.register_type.is_bit:
            return reply.bits(block.count)
        return reply.registers()

    def _writable(self, device: str, point: str) -> tuple[_Device, PointSpec]:
        dev = self._by_name.get(device)
        if dev is None:
            raise ActuationError(f"source {self.name} has no device {device!r}")
        spec = dev.points.get(point)
        if spec is None:
            raise ActuationError(
                f"device {device} has no point {point!r}; it has {', '.join(dev.points)}"
            )
        if not spec.register_type.writable:
            raise ActuationError(
                f"device {device} point {point} is in the {spec.register_type.value} table, which is read-only",
                hint="only coils and holding registers can be written",
            )
        return dev, spec

    async def write(self, device: str, point: str, value: Value) -> Value:
        """Write one point (fc 5 for a coil, 6 or 16 for registers), read it back, return it.

        Writes are sent even to a unit whose breaker is open (an app asked for it; an answer
        closes the breaker). A read-back that differs from what was written is a
        :class:`DeviceError`: the device did not take the value (a local/remote switch, a
        write-protected register)."""
        dev, spec = self._writable(device, point)
        try:
            registers = encode_value(spec, value)
        except EncodeError as err:
            raise ActuationError(f"device {device} point {point}: {err}") from err
        unit = dev.config.unit_id
        function = (
            5 if spec.register_type is RegisterType.COIL else 6 if len(registers) == 1 else 16
        )
        await self._request(
            dev, Request(unit, function, spec.address, len(registers), tuple(registers))
        )
        block = ReadBlock(spec.register_type, spec.address, spec.count, (spec,))
        back = await self._read_block(dev, block)
        self.poller.answered(dev)
        if [int(v) for v in back] != registers:
            raise DeviceError(
                f"device {device} point {point}: wrote {registers}, read back {[int(v) for v in back]}",
                hint="the device did not take the value: check its local/remote switch and write protection",
            )
        return decode_value(spec, back)

    async def write_many(self, device: str, values: Mapping[str, Value]) -> dict[str, Value]:
        """Write adjacent holding-register points with one fc 16 — the device applies a
        write-multiple request as a whole — then read the run back and return the values.

        The points must form one run of registers without gaps (any order in ``values``)."""
        if not values:
            raise ActuationError(f"device {device}: nothing to write")
        found = [self._writable(device, point) for point in values]
        dev = found[0][0]
        specs = sorted((spec for _, spec in found), key=lambda s: s.address)
        if any(s.register_type is not RegisterType.HOLDING for s in specs):
            raise ActuationError(
                f"device {device}: several points in one request must all be holding registers",
                hint="write coils one at a time",
            )
        for a, b in itertools.pairwise(specs):
            if b.address != a.end:
                raise ActuationError(
                    f"device {device}: points {a.name} (ends at {a.end - 1}) and {b.name} "
                    f"(starts at {b.address}) are not adjacent; one request writes one run",
                )
        registers: list[int] = []
        for spec in specs:
            try:
                registers += encode_value(spec, values[spec.name])
            except EncodeError as err:
                raise ActuationError(f"device {device} point {spec.name}: {err}") from err
        unit, start = dev.config.unit_id, specs[0].address
        await self._request(dev, Request(unit, 16, start, len(registers), tuple(registers)))
        block = ReadBlock(RegisterType.HOLDING, start, len(registers), tuple(specs))
        back = [int(v) for v in await self._read_block(dev, block)]
        self.poller.answered(dev)
        if back != registers:
            raise DeviceError(
                f"device {device}: wrote {registers} at {start}, read back {back}",
                hint="the device did not take the values: check its local/remote switch and write protection",
            )
        return {spec.name: decode_value(spec, block.values_of(spec, back)) for spec in specs}
