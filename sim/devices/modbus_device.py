"""A Modbus device simulated from a profile, over TCP (``cityedge simulate PROFILE --port N``)
or RTU on a serial line (``--serial /dev/pts/N``, e.g. one end of a ``socat`` pty pair).

Values wander plausibly: each point with a ``sim`` block follows a mean-reverting random walk
around its nominal value plus a slow cycle, clamped to its range, and is quantised through the
point's own encoding so what is served is exactly what a correct decoder reads back. Points
without ``sim`` hold their value (0 until written). Writes to holding registers and coils stick.

Served on pymodbus's server (``SimDevice``): only the registers of the profile exist, so a read
across an unmapped address gets exception 2, as on many real devices.

Faults (see :mod:`sim.devices.faults`) come from a schedule or from the control API:

- ``GET  /state``   current values, the fault mode, and request counts
- ``GET  /served``  for each point, the values served so far (oldest first, last 10 000)
- ``GET  /writes``  values clients wrote, in order, with the time (e.g. a gate relay set, cleared)
- ``POST /fault``   ``{"mode": "normal" | "silent" | "exception", "code": 4}``
- ``POST /spike``   ``{"point": "turbidity", "value": 250, "duration_s": 15}``

With several unit ids on one port, faults and the control API apply to the first unit; the
silent fault silences the whole port, as a dead TCP gateway would. ``dead`` unit ids are on the
bus but never answer (a unit without power), on TCP and RTU alike.

A pty pair forwards bytes at once, whatever the baud rate: on RTU each answer is delayed by the
time its request and response take on a real line at the configured baud rate
(:class:`LineTiming`), so a bus of many units is as slow as a real one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from edge.clock import Clock, SystemClock
from edge.profiles import DeviceProfile, SimBehaviour
from protocols.errors import DecodeError, EncodeError
from protocols.modbus import (
    PointSpec,
    RegisterType,
    Value,
    char_bits,
    decode_value,
    encode_value,
    rtu_frame_sizes,
    rtu_silence_s,
)
from sim.devices.faults import FaultSchedule

log = logging.getLogger(__name__)

_TABLE_OF_FUNCTION = {
    1: RegisterType.COIL,
    5: RegisterType.COIL,
    15: RegisterType.COIL,
    2: RegisterType.DISCRETE_INPUT,
    3: RegisterType.HOLDING,
    6: RegisterType.HOLDING,
    16: RegisterType.HOLDING,
    22: RegisterType.HOLDING,
    23: RegisterType.HOLDING,
    4: RegisterType.INPUT,
}
_TABLE_ORDER = (
    RegisterType.COIL,
    RegisterType.DISCRETE_INPUT,
    RegisterType.HOLDING,
    RegisterType.INPUT,
)


class Drift:
    """Mean-reverting random walk plus a slow cycle, clamped and quantised by the point's type."""

    def __init__(self, spec: PointSpec, sim: SimBehaviour, rng: random.Random) -> None:
        self.spec = spec
        self.sim = sim
        self.rng = rng
        self.x = sim.nominal
        self.t_last: float | None = None

    def at(self, t: float) -> Value:
        s = self.sim
        dt = 0.0 if self.t_last is None else min(max(t - self.t_last, 0.0), 60.0)
        self.t_last = t
        if dt > 0:
            self.x += (
                s.reversion * (s.nominal - self.x) * dt + s.noise * math.sqrt(dt) * self.rng.gauss()
            )
            self.x = min(max(self.x, s.minimum), s.maximum)
        value = self.x + s.cycle_amplitude * math.sin(2 * math.pi * t / s.cycle_period_s)
        return quantise(self.spec, min(max(value, s.minimum), s.maximum))


def quantise(spec: PointSpec, value: float) -> Value:
    """What a decoder will read back after ``value`` is encoded for ``spec``."""
    if spec.dtype.value == "bool" or spec.register_type.is_bit:
        return bool(value)
    try:
        return decode_value(spec, encode_value(spec, value))
    except (EncodeError, DecodeError):
        return decode_value(spec, encode_value(spec, spec.offset))


@dataclass(frozen=True)
class LineTiming:
    """How long frames take on a serial line at ``baudrate`` (socat does not slow them)."""

    baudrate: int
    parity: str = "E"
    stopbits: int = 1

    @property
    def char_s(self) -> float:
        return char_bits(self.parity, self.stopbits) / self.baudrate

    def exchange_s(self, function: int, count: int) -> float:
        """Request plus response on the wire, plus the silence between them."""
        try:
            req, resp = rtu_frame_sizes(function, count)
        except ValueError:
            req, resp = 8, 8
        return (req + resp) * self.char_s + rtu_silence_s(
            self.baudrate, char_bits(self.parity, self.stopbits)
        )


@dataclass
class DeviceSim:
    profile: DeviceProfile
    seed: int = 1
    clock: Clock = field(default_factory=SystemClock)
    faults: FaultSchedule = field(default_factory=FaultSchedule)
    history: int = 10_000
    line: LineTiming | None = None

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.specs = [p.spec() for p in self.profile.points]
        self.drifts: dict[str, Drift] = {
            p.name: Drift(p.spec(), p.sim, random.Random(rng.random()))
            for p in self.profile.points
            if p.sim
        }
        self.held: dict[str, Value] = {}
        self.served: dict[str, deque[Value]] = {
            p.name: deque(maxlen=self.history) for p in self.specs
        }
        self.requests = 0
        # every value written by a client, in order: (wall time, point, value)
        self.writes: deque[tuple[float, str, Value]] = deque(maxlen=self.history)
        #: (event-loop time the request was handled, function code, count), newest last
        self.request_log: deque[tuple[float, int, int]] = deque(maxlen=1000)
        self.t0 = self.clock.monotonic()
        self._last_t = -1.0
        self._last_values: dict[str, Value] = {}

    @property
    def elapsed(self) -> float:
        return self.clock.monotonic() - self.t0

    def values(self) -> dict[str, Value]:
        """Current value of every point (faults' spikes applied)."""
        t = self.elapsed
        if t != self._last_t:
            self._last_t = t
            out: dict[str, Value] = {}
            for spec in self.specs:
                if spec.name in self.held:
                    out[spec.name] = self.held[spec.name]
                elif spec.name in self.drifts:
                    out[spec.name] = self.drifts[spec.name].at(t)
                else:
                    out[spec.name] = False if spec.dtype.value == "bool" else 0
            for point, value in self.faults.spikes(t).items():
                spiked = next((s for s in self.specs if s.name == point), None)
                if spiked is not None:
                    out[point] = quantise(spiked, value)
            self._last_values = out
        return self._last_values

    def registers(self, values: dict[str, Value]) -> dict[RegisterType, dict[int, int]]:
        """Register (or bit) contents of each table for ``values``."""
        tables: dict[RegisterType, dict[int, int]] = {t: {} for t in RegisterType}
        for spec in self.specs:
            table = tables[spec.register_type]
            if spec.bit is not None:
                word = table.get(spec.address, 0)
                mask = 1 << spec.bit
                table[spec.address] = (word | mask) if values[spec.name] else (word & ~mask)
                continue
            for i, reg in enumerate(encode_value(spec, values[spec.name])):
                table[spec.address + i] = reg
        return tables

    def simdevice(self, unit_id: int) -> SimDevice:
        initial = self.registers(self.values())
        blocks: list[list[SimData]] = []
        for table in _TABLE_ORDER:
            regs = initial[table]
            runs: list[SimData] = []
            addresses = sorted(regs)
            i = 0
            while i < len(addresses):
                j = i
                while j + 1 < len(addresses) and addresses[j + 1] == addresses[j] + 1:
                    j += 1
                run = addresses[i : j + 1]
                if table.is_bit:
                    runs.append(
                        SimData(run[0], values=[bool(regs[a]) for a in run], datatype=SimType.BITS)
                    )
                else:
                    runs.append(
                        SimData(run[0], values=[regs[a] for a in run], datatype=SimType.REGISTERS)
                    )
                i = j + 1
            if not runs:
                # pymodbus wants a block in every table: an unused table gets one entry at the
                # top address (a bit table cannot hold INVALID entries), which no profile uses.
                runs.append(
                    SimData(65535, values=[False], datatype=SimType.BITS)
                    if table.is_bit
                    else SimData(65535, count=1, datatype=SimType.INVALID)
                )
            blocks.append(runs)
        return SimDevice(
            id=unit_id, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]), action=self.action
        )

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        self.request_log.append((asyncio.get_running_loop().time(), function_code, count))
        if self.line is not None:
            await asyncio.sleep(self.line.exchange_s(function_code, count))
        mode, code = self.faults.mode(self.elapsed)
        if mode == "exception":
            try:
                return ExcCodes(code)
            except ValueError:
                return ExcCodes.DEVICE_FAILURE
        table = _TABLE_OF_FUNCTION.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        values = self.values()
        current = self.registers(values)[table]
        for addr, reg in current.items():
            registers[addr - start_address] = int(reg)
        if set_values is not None:
            self._hold_written(table, address, [int(v) for v in set_values], current)
            return None
        end = address + count
        for spec in self.specs:
            if spec.register_type is table and spec.address >= address and spec.end <= end:
                self.served[spec.name].append(values[spec.name])
        return None

    def _hold_written(
        self, table: RegisterType, address: int, written: list[int], current: dict[int, int]
    ) -> None:
        merged = dict(current)
        for i, v in enumerate(written):
            merged[address + i] = v
        for spec in self.specs:
            if (
                spec.register_type is not table
                or spec.end <= address
                or spec.address >= address + len(written)
            ):
                continue
            data = [merged.get(spec.address + i, 0) for i in range(spec.count)]
            try:
                self.held[spec.name] = decode_value(spec, data)
            except DecodeError:
                continue
            self.writes.append((self.clock.time(), spec.name, self.held[spec.name]))
        self._last_t = -1.0

    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and self.faults.mode(self.elapsed)[0] == "silent":
            return b""  # the request was read, the answer never leaves: the client times out
        return data

    # -- control API -------------------------------------------------------------------------

    def control_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/state", self._state)
        app.router.add_get("/served", self._served)
        app.router.add_get("/writes", self._writes)
        app.router.add_post("/fault", self._fault)
        app.router.add_post("/spike", self._spike)
        return app

    async def _state(self, _r: web.Request) -> web.Response:
        mode, code = self.faults.mode(self.elapsed)
        return web.json_response(
            {
                "profile": self.profile.name,
                "mode": mode,
                "code": code,
                "requests": self.requests,
                "values": self.values(),
                "units": {s.name: s.unit for s in self.specs},
            }
        )

    async def _served(self, _r: web.Request) -> web.Response:
        return web.json_response({k: list(v) for k, v in self.served.items()})

    async def _writes(self, _r: web.Request) -> web.Response:
        """What clients wrote, in order (a gate relay's opening and closing, for instance)."""
        return web.json_response([{"time": t, "point": p, "value": v} for t, p, v in self.writes])

    async def _fault(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        mode = body.get("mode")
        if mode not in ("normal", "silent", "exception"):
            return web.json_response(
                {"error": "mode must be normal, silent or exception"}, status=400
            )
        self.faults.manual_mode = mode
        self.faults.manual_code = int(body.get("code", 4))
        log.info("fault mode now %s", mode)
        return web.json_response({"mode": mode})

    async def _spike(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        point = str(body.get("point"))
        if point not in self.served:
            return web.json_response({"error": f"no point {point!r}"}, status=400)
        until = self.elapsed + float(body.get("duration_s", 10))
        self.faults.manual_spikes[point] = (float(body["value"]), until)
        return web.json_response({"point": point, "until_s": until})


@dataclass(frozen=True)
class SerialLine:
    """Where an RTU simulator listens: a serial device (one end of a pty pair) and its line."""

    device: str
    baudrate: int = 9600
    parity: str = "E"
    stopbits: int = 1


async def serve(
    sims: dict[int, DeviceSim],
    host: str,
    port: int,
    control_port: int | None = None,
    ready: asyncio.Event | None = None,
    serial: SerialLine | None = None,
    dead: frozenset[int] = frozenset(),
) -> None:
    """Serve each ``{unit_id: sim}`` on one Modbus TCP port (a multi-drop bus behind a TCP
    gateway) or, with ``serial``, on an RTU line; plus the control API of the lowest unit id,
    until cancelled. Units in ``dead`` never answer."""
    first = sims[min(sims)]
    devices = [sim.simdevice(uid) for uid, sim in sorted(sims.items())]
    unit_at = 0 if serial is not None else 6  # RTU: address byte; TCP: MBAP unit id

    def trace(sending: bool, data: bytes) -> bytes:
        # pymodbus answers every unit id it serves: a dead unit's answer is dropped on the way out
        if sending and len(data) > unit_at and data[unit_at] in dead:
            return b""
        return first.trace_packet(sending, data)

    server: ModbusTcpServer | ModbusSerialServer
    if serial is not None:
        server = ModbusSerialServer(
            devices,
            port=serial.device,
            baudrate=serial.baudrate,
            parity=serial.parity,
            stopbits=serial.stopbits,
            trace_packet=trace,
        )
    else:
        server = ModbusTcpServer(devices, address=(host, port), trace_packet=trace)
    runner: web.AppRunner | None = None
    if control_port is not None:
        runner = web.AppRunner(first.control_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, control_port).start()
    try:
        await server.serve_forever(background=True)
        log.info(
            "simulating %s (units %s%s) on %s%s",
            first.profile.name,
            ",".join(map(str, sorted(sims))),
            f"; dead {','.join(map(str, sorted(dead)))}" if dead else "",
            f"{serial.device} at {serial.baudrate}" if serial else f"{host}:{port}",
            f", control on :{control_port}" if control_port else "",
        )
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        if runner is not None:
            await runner.cleanup()


FLEET_PROFILES = ("water-sonde", "air-station")


def fleet_layout(devices: int, buses: int) -> list[tuple[int, int, str, str]]:
    """``(bus index, unit id, profile, device name)`` of each device of the benchmark fleet:
    water sondes and air stations alternating, dealt round-robin over the buses."""
    layout = []
    units = [0] * buses
    for i in range(devices):
        bus = i % buses
        units[bus] += 1
        layout.append((bus, units[bus], FLEET_PROFILES[i % 2], f"dev-{i:03d}"))
    return layout
