"""Source ``modbus``: poll devices behind one Modbus TCP connection.

Per connection: one request on the wire at a time, devices staggered across their interval,
points merged into few reads by :func:`protocols.modbus.plan_reads`. Per device: a schedule on
the injected clock that skips missed slots instead of bunching up, an
:class:`~edge.availability.Availability` tracker that emits one "unavailable" and one
"recovered", and metrics. While the connection is down, polls fail at once (no timeout is spent)
and reconnects follow a capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.actuators import ActuationError
from edge.availability import Availability, AvailabilityChange
from edge.backoff import Backoff
from edge.errors import DeviceError, PermanentError
from edge.plugin import SourceContext
from edge.readings import Reading, ReadingBatch
from edge.sources.modbus_config import ModbusDeviceConfig, ModbusSourceConfig
from protocols import envelope as env
from protocols.errors import DecodeError, EncodeError
from protocols.modbus import (
    PointSpec,
    ReadBlock,
    RegisterType,
    Value,
    decode_value,
    describe_exception,
    encode_value,
    plan_reads,
)

log = logging.getLogger(__name__)
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we report failures ourselves, once


@dataclass
class _Device:
    config: ModbusDeviceConfig
    blocks: tuple[ReadBlock, ...]
    availability: Availability
    points: dict[str, PointSpec]
    bad_points: set[str] = field(default_factory=set)


class ModbusSource:
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
        self.devices = [
            _Device(
                config=d,
                blocks=plan_reads(
                    (p.spec() for p in points[d.name]),
                    max_gap=config.max_gap if d.max_gap is None else d.max_gap,
                    max_registers=d.max_registers_per_read or config.max_registers_per_read,
                ),
                availability=Availability(config.unavailable_after, now),
                points={p.name: p.spec() for p in points[d.name]},
            )
            for d in config.devices
        ]
        self.name = config.name
        self._by_name = {d.config.name: d for d in self.devices}
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | None = None
        self._next_connect = 0.0
        self._reconnect = Backoff(0.5, config.reconnect_max_s)
        self._where = f"{config.host}:{config.port}"

    def device_health(self) -> dict[str, str]:
        return {d.config.name: d.availability.health.value for d in self.devices}

    async def run(self) -> None:
        n = len(self.devices)
        try:
            async with asyncio.TaskGroup() as tg:
                for i, dev in enumerate(self.devices):
                    stagger = dev.config.poll_interval_s * i / n
                    tg.create_task(self._poll_loop(dev, stagger), name=f"poll-{dev.config.name}")
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection (the next poll opens a new one)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _poll_loop(self, dev: _Device, stagger: float) -> None:
        clock = self.ctx.clock
        interval = dev.config.poll_interval_s
        due = clock.monotonic() + stagger
        while True:
            await clock.sleep(due - clock.monotonic())
            await self.poll_once(dev)
            due += interval
            now = clock.monotonic()
            if due <= now:  # overran: skip the slots we missed rather than bunching up
                due += interval * (int((now - due) / interval) + 1)

    async def poll_once(self, dev: _Device) -> None:
        name = dev.config.name
        m = self.ctx.metrics
        started = self.ctx.clock.monotonic()
        wall = self.ctx.clock.time()
        m.polls.labels(self.config.name, name).inc()
        try:
            readings = await self._read_device(dev)
        except DeviceError as err:
            m.poll_errors.labels(self.config.name, name, err.code).inc()
            await self._availability(dev, dev.availability.failure(wall, err.message), wall)
            return
        finally:
            m.poll_latency.labels(self.config.name, name).observe(
                self.ctx.clock.monotonic() - started
            )
        await self._availability(dev, dev.availability.success(wall), wall)
        if readings:
            m.readings.labels(self.config.name, name).inc(len(readings))
            await self.ctx.readings.put(ReadingBatch(self.config.name, name, wall, tuple(readings)))

    async def _availability(
        self, dev: _Device, change: AvailabilityChange | None, now: float
    ) -> None:
        self.ctx.metrics.device_up.labels(self.config.name, dev.config.name).set(
            0 if dev.availability.health.value == "down" else 1
        )
        if change is None:
            return
        who = f"device {dev.config.name} (unit {dev.config.unit_id} at {self._where})"
        if change.state == "unavailable":
            log.warning(
                "%s unavailable after %d failed polls: %s", who, change.failed_polls, change.reason
            )
        else:
            log.info("%s recovered after %d failed polls", who, change.failed_polls)
        payload = env.AvailabilityPayload(
            state=env.AvailabilityState(change.state),
            reason=change.reason,
            failed_polls=change.failed_polls,
            since=env.utc_datetime(change.since),
        )
        await self.ctx.emitter.send(self.ctx.emitter.availability(dev.config.name, now, payload))

    async def _read_device(self, dev: _Device) -> list[Reading]:
        readings: list[Reading] = []
        for block in dev.blocks:
            data = await self._read_block(dev, block)
            for point in block.points:
                try:
                    value = decode_value(point, block.values_of(point, data))
                except DecodeError as err:
                    self.ctx.metrics.poll_errors.labels(
                        self.config.name, dev.config.name, "decode"
                    ).inc()
                    if point.name not in dev.bad_points:
                        dev.bad_points.add(point.name)
                        log.warning("device %s point %s: %s", dev.config.name, point.name, err)
                    continue
                if point.name in dev.bad_points:
                    dev.bad_points.discard(point.name)
                    log.info("device %s point %s: good values again", dev.config.name, point.name)
                readings.append(Reading(point.name, value, point.unit))
        return readings

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is None:
            self._client = AsyncModbusTcpClient(
                self.config.host,
                port=self.config.port,
                name=self.config.name,
                timeout=self.config.timeout_s,
                retries=0,
                reconnect_delay=0,  # reconnects are ours: backoff on the injected clock
            )
        client = self._client
        if client.connected:
            return client
        now = self.ctx.clock.monotonic()
        if now < self._next_connect:
            raise DeviceError(
                f"no connection to {self._where}; next attempt in {self._next_connect - now:.1f} s",
                hint="check the device's power, network and port",
            )
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            self._next_connect = now + self._reconnect.next_delay()
            raise DeviceError(
                f"cannot connect to {self._where}",
                hint="check the device's power, network, IP address and port",
            )
        self._reconnect.reset()
        log.info("connected to %s", self._where)
        return client

    async def _request(
        self,
        unit: int,
        function: int,
        start: int,
        count: int,
        call: Callable[[AsyncModbusTcpClient], Awaitable[Any]],
    ) -> Any:
        """One request on the wire (under the connection's lock), with its deadline, and the
        device's exception code turned into a :class:`DeviceError` a technician can act on."""
        async with self._lock:
            client = await self._connected()
            try:
                async with asyncio.timeout(self.config.timeout_s + 0.25):
                    response = await call(client)
            except (TimeoutError, ModbusException) as err:
                if not client.connected:
                    self._next_connect = self.ctx.clock.monotonic()
                raise DeviceError(
                    f"no reply from unit {unit} at {self._where} (fc {function}, "
                    f"{start}+{count}) within {self.config.timeout_s} s",
                    hint="check the device is powered, the unit id, and the network path",
                ) from err
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            what, hint = describe_exception(code)
            raise DeviceError(
                f"unit {unit} at {self._where} answered fc {function} "
                f"{start}+{count} with exception {code} ({what})",
                hint=hint,
            )
        return response

    async def _read_block(self, dev: _Device, block: ReadBlock) -> list[int] | list[bool]:
        unit = dev.config.unit_id

        def read(client: AsyncModbusTcpClient) -> Awaitable[Any]:
            fn = {
                RegisterType.COIL: client.read_coils,
                RegisterType.DISCRETE_INPUT: client.read_discrete_inputs,
                RegisterType.HOLDING: client.read_holding_registers,
                RegisterType.INPUT: client.read_input_registers,
            }[block.register_type]
            return fn(block.start, count=block.count, device_id=unit)

        response = await self._request(unit, block.function, block.start, block.count, read)
        if block.register_type.is_bit:
            bits = list(response.bits[: block.count])
            if len(bits) < block.count:
                raise DeviceError(f"unit {unit} sent {len(bits)} bits, expected {block.count}")
            return bits
        registers = list(response.registers)
        if len(registers) != block.count:
            raise DeviceError(
                f"unit {unit} sent {len(registers)} registers, expected {block.count}"
            )
        return registers

    def _writable(self, device: str, point: str) -> tuple[_Device, PointSpec]:
        dev = self._by_name.get(device)
        if dev is None:
            raise ActuationError(f"source {self.config.name} has no device {device!r}")
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

        A read-back that differs from what was written is a :class:`DeviceError`: the device
        did not take the value (a local/remote switch, a write-protected register)."""
        dev, spec = self._writable(device, point)
        try:
            registers = encode_value(spec, value)
        except EncodeError as err:
            raise ActuationError(f"device {device} point {point}: {err}") from err
        unit = dev.config.unit_id

        def send(client: AsyncModbusTcpClient) -> Awaitable[Any]:
            if spec.register_type is RegisterType.COIL:
                return client.write_coil(spec.address, bool(registers[0]), device_id=unit)
            if len(registers) == 1:
                return client.write_register(spec.address, registers[0], device_id=unit)
            return client.write_registers(spec.address, registers, device_id=unit)

        function = (
            5 if spec.register_type is RegisterType.COIL else 6 if len(registers) == 1 else 16
        )
        await self._request(unit, function, spec.address, spec.count, send)
        block = ReadBlock(spec.register_type, spec.address, spec.count, (spec,))
        back = await self._read_block(dev, block)
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

        def send(client: AsyncModbusTcpClient) -> Awaitable[Any]:
            return client.write_registers(start, registers, device_id=unit)

        await self._request(unit, 16, start, len(registers), send)
        block = ReadBlock(RegisterType.HOLDING, start, len(registers), tuple(specs))
        back = [int(v) for v in await self._read_block(dev, block)]
        if back != registers:
            raise DeviceError(
                f"device {device}: wrote {registers} at {start}, read back {back}",
                hint="the device did not take the values: check its local/remote switch and write protection",
            )
        return {spec.name: decode_value(spec, block.values_of(spec, back)) for spec in specs}
