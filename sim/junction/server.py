"""``cityedge simulate junction``: a signal controller on Modbus TCP that drives a SUMO junction.

The cabinet (:mod:`sim.junction.cabinet`) speaks the register map of
:mod:`protocols.signal_controller` on pymodbus's server, built by the same
:class:`~sim.devices.modbus_device.DeviceSim` as every other simulated device (so faults
like ``silent@120+20`` work the same way, on simulation seconds). SUMO steps in real time
(or ``speed`` times faster); a gateway polling and writing the registers controls the
junction exactly as it would a cabinet at the roadside.

When the scenario ends (or on SIGINT/SIGTERM) it writes a JSON report — delays, SUMO's
collision and braking counts, every breach the independent safety monitor saw, the cabinet's
mode changes — to ``report`` and exits.

Control API (``--control-port``): the device's ``/state``, ``/served``, ``/fault`` and
``/spike``, plus ``GET /junction``: simulation time, the cabinet's mode and the monitor's
findings so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pymodbus.constants import ExcCodes

from edge.clock import Clock
from edge.profiles import signal_controller_profile
from protocols.errors import DecodeError
from protocols.modbus import RegisterType, Value, decode_value
from protocols.signal_controller import Mode
from sim.devices.faults import FaultSchedule
from sim.devices.modbus_device import DeviceSim, serve
from sim.junction.cabinet import Cabinet, CommandRefused
from sim.junction.loop import JunctionSimulation

log = logging.getLogger(__name__)


class SimTimeClock:
    """A clock that reads the simulation's time (faults and the device's clock use it)."""

    def __init__(self, sim: JunctionSimulation) -> None:
        self.sim = sim
        self._wall0 = time.time()

    def time(self) -> float:
        return self._wall0 + self.sim.time_s

    def monotonic(self) -> float:
        return self.sim.time_s

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class CabinetDevice(DeviceSim):
    """The register map served from a :class:`Cabinet`: reads show its state, writes go to it
    (refused values get Modbus exception 3, illegal data value)."""

    def __init__(self, cabinet: Cabinet, clock: Clock, faults: FaultSchedule) -> None:
        super().__init__(signal_controller_profile(), clock=clock, faults=faults, history=1)
        self.cabinet = cabinet
        self.sim: JunctionSimulation | None = None  # set: writes show at once in SUMO
        self.write_count = 0
        self.refused = 0

    def control_app(self) -> web.Application:
        app = super().control_app()
        app.router.add_get("/junction", self._junction)
        return app

    async def _junction(self, _r: web.Request) -> web.Response:
        cab = self.cabinet
        body: dict[str, Any] = {
            "mode": cab.mode.name.lower(),
            "phase": cab.junction.phases[cab.phase].name,
            "interval": cab.interval.name.lower(),
            "writes": self.write_count,
            "refused": self.refused,
        }
        if self.sim is not None:
            body["time_s"] = self.sim.time_s
            body["violations"] = [asdict(v) for v in self.sim.run.monitor.violations]
            body["collisions"] = self.sim.run.collisions
        return web.json_response(body)

    def values(self) -> dict[str, Value]:
        out = dict(self.cabinet.state())
        for spec in self.specs:
            if spec.register_type is RegisterType.HOLDING:
                out[spec.name] = self.cabinet.held.get(spec.name, 0)
        return out

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if set_values is not None and self.faults.mode(self.elapsed)[0] == "normal":
            written = self._decode_holding(address, [int(v) for v in set_values])
            try:
                self.cabinet.write(written)
            except CommandRefused as err:
                self.refused += 1
                log.warning("cabinet refused a write at %d: %s", address, err)
                return ExcCodes.ILLEGAL_VALUE
            self.write_count += 1
            if self.sim is not None:
                self.sim.show_now()
        return await super().action(
            function_code, start_address, address, count, registers, set_values
        )

    def _decode_holding(self, address: int, written: list[int]) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for spec in self.specs:
            if spec.register_type is not RegisterType.HOLDING:
                continue
            offset = spec.address - address
            if offset >= 0 and offset + spec.count <= len(written):
                try:
                    out[spec.name] = decode_value(spec, written[offset : offset + spec.count])
                except DecodeError:
                    continue
        return out

    def _hold_written(
        self, table: RegisterType, address: int, written: list[int], current: dict[int, int]
    ) -> None:
        """The cabinet already took the write in :meth:`action`."""


@dataclass
class Report:
    scenario: str
    seed: int
    speed: float
    result: dict[str, Any] = field(default_factory=dict)
    violations: list[dict[str, Any]] = field(default_factory=list)
    modes: list[tuple[float, str]] = field(default_factory=list)
    detector_faults_seen: list[str] = field(default_factory=list)
    commands: dict[str, int] = field(default_factory=dict)


async def serve_junction(
    sim: JunctionSimulation,
    *,
    host: str,
    port: int,
    unit_id: int = 1,
    speed: float = 1.0,
    faults: FaultSchedule | None = None,
    control_port: int | None = None,
    report_path: Path | None = None,
    seed: int = 1,
) -> Report:
    """Serve the cabinet and step SUMO in (scaled) real time until the scenario ends."""
    device = CabinetDevice(sim.cabinet, SimTimeClock(sim), faults or FaultSchedule())
    device.sim = sim
    report = Report(scenario=sim.run.scenario.name, seed=seed, speed=speed)
    mode: Mode | None = None
    faulted = 0
    sim.start()
    ready = asyncio.Event()
    # owned here: cancelled and awaited in the finally below
    server = asyncio.create_task(serve({unit_id: device}, host, port, control_port, ready))
    try:
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({server, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if server.done():
            server.result()  # it could not listen: raise why
        log.info(
            "junction %s, scenario %s: cabinet on %s:%d (unit %d), %gx real time",
            sim.junction.name,
            report.scenario,
            host,
            port,
            unit_id,
            speed,
        )
        wall0 = time.monotonic()
        while sim.running:
            sim.step()
            cab = sim.cabinet
            if cab.mode is not mode:
                mode = cab.mode
                report.modes.append((sim.time_s, mode.name.lower()))
                log.info("t=%.1f s: cabinet mode %s", sim.time_s, mode.name.lower())
            for i, d in enumerate(sim.junction.detectors):
                if cab.detector_faults & ~faulted & (1 << i):
                    report.detector_faults_seen.append(d.name)
                    log.warning("t=%.1f s: detector %s flagged failed", sim.time_s, d.name)
            faulted = cab.detector_faults
            behind = wall0 + sim.time_s / speed - time.monotonic()
            await asyncio.sleep(max(0.0, behind))
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):  # OSError: raised above
            await server
        result = sim.finish("gateway")
        report.result = asdict(result)
        report.violations = [asdict(v) for v in sim.run.monitor.violations]
        report.commands = {
            "writes": device.write_count,
            "refused": device.refused,
            "conflict_trips": sim.cabinet.conflict_trips,
        }
        if report_path is not None:
            text = json.dumps(asdict(report), indent=2)
            await asyncio.to_thread(report_path.write_text, text, encoding="utf-8")
        log.info(
            "scenario %s done at t=%.0f s: %d vehicles, mean delay %.1f s, %d collisions, "
            "%d monitor violations",
            report.scenario,
            result.sim_time_s,
            result.vehicles,
            result.mean_delay_s,
            result.collisions,
            len(report.violations),
        )
    return report
