"""Source ``modbus``: one coordinator per bus — a Modbus TCP connection or an RTU serial line.

The coordinator is the only one that talks on the bus, one request at a time (apps' writes
queue behind the poll request in flight), as a Home Assistant coordinator polls a device once
for many entities:

- **Schedule.** Every device has a slot every ``poll_interval_s``; devices are staggered over
  the interval; a slot missed because the bus was busy is skipped, not bunched up.
- **Planning.** A device's points are merged into few reads (:func:`protocols.modbus.plan_reads`).
- **Circuit breaker per device.** A poll stops at its first unanswered request, so a dead unit
  costs at most one timeout. After that the unit is *open*: its slots are skipped (no request)
  until a retry time that doubles per failed try (``retry_dead_initial_s`` …
  ``retry_dead_max_s``). Tries of dead units share one budget per bus — one try per shortest
  poll interval — so however many units are dead, they cost the live ones at most one timeout
  per cycle. A unit that answers again closes its breaker at once.
- **Availability** is decided here (:class:`~edge.availability.Availability`): one
  "unavailable" after ``unavailable_after`` failed or skipped slots, one "recovered".
- **RTU.** Between frames the coordinator keeps the line silent for t3.5 (Modbus over Serial
  Line 2.5.1.1); messages name the line (``/dev/ttyUSB0 at 9600 8E1``) and what to check.
- **Exception codes** become messages a technician can act on
  (:data:`protocols.modbus.EXCEPTION_CODES`): the device answered, so they never trip the
  breaker.
- **Writes** (:meth:`ModbusSource.write`, used through ``ctx.actuators``) go through the same
  line, then the point is read back.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from edge.actuators import ActuationError, MultiWriter, Writer
from edge.availability import Availability, AvailabilityChange
from edge.backoff import Backoff
from edge.errors import DeviceError, PermanentError
from edge.modbus.config import ModbusDeviceConfig, ModbusSourceConfig
from edge.plugin import Plugin, SourceContext, TracksDevices
from edge.polling import report_availability
from edge.readings import Reading, ReadingBatch
from protocols.errors import DecodeError, EncodeError
from protocols.modbus import (
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

log = logging.getLogger(__name__)
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we report failures ourselves, once

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class NoReply(DeviceError):
    """A unit did not answer within the deadline (what trips its breaker)."""

    code = "CE311"


class BusDown(DeviceError):
    """The connection or serial line itself is unusable (no unit is to blame)."""

    code = "CE312"


@dataclass
class Breaker:
    """Per-device circuit breaker: closed, or open until ``retry_at`` (monotonic seconds)."""

    backoff: Backoff
    open: bool = False
    retry_at: float = 0.0
    trips: int = 0

    def trip(self, now: float) -> float:
        self.open = True
        self.trips += 1
        self.retry_at = now + self.backoff.next_delay()
        return self.retry_at

    def close(self) -> None:
        self.open = False
        self.backoff.reset()


@dataclass
class _Device:
    config: ModbusDeviceConfig
    blocks: tuple[ReadBlock, ...]
    availability: Availability
    points: dict[str, PointSpec]
    breaker: Breaker
    bad_points: set[str] = field(default_factory=set)
    polls: int = 0  # requests-free skips are not counted
    skipped: int = 0


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
                breaker=Breaker(
                    Backoff(
                        min(
                            config.retry_dead_initial_s or d.poll_interval_s,
                            config.retry_dead_max_s,
                        ),
                        config.retry_dead_max_s,
                        jitter=0.2,
                    )
                ),
            )
            for d in config.devices
        ]
        self.name = config.name
        self._by_name = {d.config.name: d for d in self.devices}
        self._lock = asyncio.Lock()  # one request on the wire at a time
        self._client: Client | None = None
        self._next_connect = 0.0
        self._reconnect = Backoff(0.5, config.reconnect_max_s)
        self._where = config.where
        serial = config.serial
        self._silence = 0.0
        if serial is not None:
            self._silence = (
                serial.inter_frame_ms / 1000
                if serial.inter_frame_ms is not None
                else rtu_silence_s(serial.baudrate, char_bits(serial.parity, serial.stopbits))
            )
        #: one try of a dead unit per this many seconds on the whole bus
        self.probe_gap_s = min(d.poll_interval_s for d in config.devices)
        self._last_probe = float("-inf")
        self.requests = 0  # requests sent on the bus (benchmarks read it)

    def device_health(self) -> dict[str, str]:
        return {d.config.name: d.availability.health.value for d in self.devices}

    async def run(self) -> None:
        try:
            await self._coordinate()
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection or line (the next request opens it again)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- schedule -----------------------------------------------------------------------------

    async def _coordinate(self) -> None:
        clock = self.ctx.clock
        n = len(self.devices)
        start = clock.monotonic()
        due: list[tuple[float, int]] = [
            (start + d.config.poll_interval_s * i / n, i) for i, d in enumerate(self.devices)
        ]
        heapq.heapify(due)
        while True:
            when, i = due[0]
            await clock.sleep(when - clock.monotonic())
            heapq.heappop(due)
            dev = self.devices[i]
            await self.poll_once(dev)
            interval = dev.config.poll_interval_s
            nxt = when + interval
            now = clock.monotonic()
            if nxt <= now:  # overran: skip the slots we missed rather than bunching up
                nxt += interval * (int((now - nxt) / interval) + 1)
            heapq.heappush(due, (nxt, i))

    async def poll_once(self, dev: _Device) -> None:
        """Poll one device now (or skip it while its breaker is open)."""
        name = dev.config.name
        m = self.ctx.metrics
        mono = self.ctx.clock.monotonic()
        wall = self.ctx.clock.time()
        breaker = dev.breaker
        if breaker.open:
            if mono < breaker.retry_at or mono - self._last_probe < self.probe_gap_s:
                dev.skipped += 1
                m.poll_errors.labels(self.name, name, "circuit_open").inc()
                reason = dev.availability.last_error or "not answering"
                await self._availability(dev, dev.availability.failure(wall, reason), wall)
                return
            self._last_probe = mono
        dev.polls += 1
        m.polls.labels(self.name, name).inc()
        try:
            readings = await self._read_device(dev)
        except NoReply as err:
            retry_at = breaker.trip(self.ctx.clock.monotonic())
            m.poll_errors.labels(self.name, name, err.code).inc()
            if breaker.trips == 1 or breaker.trips % 10 == 0:
                log.info(
                    "device %s (unit %d on %s): no reply; skipped until the next try in %.1f s",
                    name,
                    dev.config.unit_id,
                    self._where,
                    retry_at - self.ctx.clock.monotonic(),
                )
            await self._availability(dev, dev.availability.failure(wall, str(err)), wall)
            return
        except DeviceError as err:
            m.poll_errors.labels(self.name, name, err.code).inc()
            await self._availability(dev, dev.availability.failure(wall, str(err)), wall)
            return
        finally:
            m.poll_latency.labels(self.name, name).observe(self.ctx.clock.monotonic() - mono)
        breaker.close()
        await self._availability(dev, dev.availability.success(wall), wall)
        if readings:
            m.readings.labels(self.name, name).inc(len(readings))
            await self.ctx.readings.put(ReadingBatch(self.name, name, wall, tuple(readings)))

    async def _availability(
        self, dev: _Device, change: AvailabilityChange | None, now: float
    ) -> None:
        who = f"device {dev.config.name} (unit {dev.config.unit_id} on {self._where})"
        await report_availability(
            self.ctx, self.name, dev.config.name, who, dev.availability, change, now
        )

    async def _read_device(self, dev: _Device) -> list[Reading]:
        readings: list[Reading] = []
        for block in dev.blocks:
            data = await self._read_block(dev, block)
            for point in block.points:
                try:
                    value = decode_value(point, block.values_of(point, data))
                except DecodeError as err:
                    self.ctx.metrics.poll_errors.labels(self.name, dev.config.name, "decode").inc()
                    if point.name not in dev.bad_points:
                        dev.bad_points.add(point.name)
                        log.warning("device %s point %s: %s", dev.config.name, point.name, err)
                    continue
                if point.name in dev.bad_points:
                    dev.bad_points.discard(point.name)
                    log.info("device %s point %s: good values again", dev.config.name, point.name)
                readings.append(Reading(point.name, value, point.unit))
        return readings

    # -- the line -----------------------------------------------------------------------------

    def _new_client(self) -> Client:
        c = self.config
        if c.serial is not None:
            s = c.serial
            client: Client = AsyncModbusSerialClient(
                s.device,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                name=c.name,
                timeout=c.timeout_s,
                retries=0,
                reconnect_delay=0,  # reconnects are ours: backoff on the injected clock
            )
        else:
            assert c.host is not None  # checked by the config model
            client = AsyncModbusTcpClient(
                c.host,
                port=c.port,
                name=c.name,
                timeout=c.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        # a dead unit behind a TCP gateway must not close the connection the live ones use:
        # only a run of unanswered requests longer than the bus has units does
        client.set_max_no_responses(3 + len(self.devices))
        return client

    async def _connected(self) -> Client:
        if self._client is None:
            self._client = self._new_client()
        client = self._client
        if client.connected:
            return client
        now = self.ctx.clock.monotonic()
        if now < self._next_connect:
            raise BusDown(
                f"no connection to {self._where}; next attempt in {self._next_connect - now:.1f} s",
                hint=self._bus_hint(),
            )
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                ok = await client.connect()
        except (TimeoutError, OSError):
            ok = False
        if not ok:
            self._next_connect = now + self._reconnect.next_delay()
            raise BusDown(
                f"cannot {'open' if self.config.serial else 'connect to'} {self._where}",
                hint=self._bus_hint(),
            )
        self._reconnect.reset()
        log.info("%s %s", "opened" if self.config.serial else "connected to", self._where)
        return client

    def _bus_hint(self) -> str:
        if self.config.serial is not None:
            return (
                "check the USB/RS-485 adapter is plugged in, the device path "
                "(ls /dev/serial/by-id) and that no other program holds the port"
            )
        return "check the device's power, network, IP address and port"

    def _no_reply_hint(self) -> str:
        if self.config.serial is not None:
            return (
                "check the unit is powered, its address (unit id) and line settings, "
                "A/B polarity and termination"
            )
        return "check the device is powered, the unit id, and the network path"

    async def _request(
        self,
        unit: int,
        function: int,
        start: int,
        count: int,
        call: Callable[[Client], Awaitable[Any]],
    ) -> Any:
        """One request on the wire (under the bus lock) with its deadline, the RTU silence after
        it, and the device's exception code turned into a :class:`DeviceError` a technician can
        act on."""
        async with self._lock:
            client = await self._connected()
            self.requests += 1
            try:
                async with asyncio.timeout(self.config.timeout_s + 0.25):
                    response = await call(client)
            except (TimeoutError, ModbusException) as err:
                if isinstance(err, ConnectionException) or not client.connected:
                    self._next_connect = self.ctx.clock.monotonic()
                    raise BusDown(
                        f"lost {self._where} during fc {function} to unit {unit}",
                        hint=self._bus_hint(),
                    ) from err
                raise NoReply(
                    f"no reply from unit {unit} on {self._where} (fc {function}, "
                    f"{start}+{count}) within {self.config.timeout_s} s",
                    hint=self._no_reply_hint(),
                ) from err
            finally:
                if self._silence:
                    await asyncio.sleep(self._silence)  # t3.5 before the next frame
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            what, hint = describe_exception(code)
            raise DeviceError(
                f"unit {unit} on {self._where} answered fc {function} "
                f"{start}+{count} with exception {code} ({what})",
                hint=hint,
            )
        return response

    async def _read_block(self, dev: _Device, block: ReadBlock) -> list[int] | list[bool]:
        unit = dev.config.unit_id

        def read(client: Client) -> Awaitable[Any]:
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

        def send(client: Client) -> Awaitable[Any]:
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
        dev.breaker.close()
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

        def send(client: Client) -> Awaitable[Any]:
            return client.write_registers(start, registers, device_id=unit)

        await self._request(unit, 16, start, len(registers), send)
        block = ReadBlock(RegisterType.HOLDING, start, len(registers), tuple(specs))
        back = [int(v) for v in await self._read_block(dev, block)]
        dev.breaker.close()
        if back != registers:
            raise DeviceError(
                f"device {device}: wrote {registers} at {start}, read back {back}",
                hint="the device did not take the values: check its local/remote switch and write protection",
            )
        return {spec.name: decode_value(spec, block.values_of(spec, back)) for spec in specs}
