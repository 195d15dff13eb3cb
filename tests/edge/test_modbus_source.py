"""The modbus source against a real pymodbus server serving a simulated profile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.channel import Channel
from edge.clock import SystemClock
from edge.config.base import CheckContext
from edge.localsite import free_port
from edge.metrics import GatewayMetrics
from edge.plugin import Emitter, SourceContext
from edge.profiles import ProfileLibrary
from edge.readings import ReadingBatch
from edge.simulators.faults import FaultSchedule
from edge.simulators.modbus_device import DeviceSim, serve
from edge.sources.modbus import ModbusSource
from edge.sources.modbus_config import ModbusSourceConfig
from protocols import envelope as env


@contextlib.asynccontextmanager
async def simulator(
    profile: str = "water-sonde", faults: FaultSchedule | None = None
) -> AsyncIterator[tuple[DeviceSim, int]]:
    sim = DeviceSim(ProfileLibrary().load(profile), seed=3, faults=faults or FaultSchedule())
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(serve({1: sim}, "127.0.0.1", port, ready=ready))
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield sim, port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Harness:
    def __init__(self, port: int, **overrides: object) -> None:
        cfg = {
            "type": "modbus",
            "name": "bus",
            "host": "127.0.0.1",
            "port": port,
            "timeout_s": 0.3,
            "unavailable_after": 2,
            "devices": [{"name": "sonde", "profile": "water-sonde", "poll_interval_s": 0.2}],
        }
        cfg.update(overrides)
        self.config = ModbusSourceConfig.model_validate(cfg)
        self.events: list[env.EnvelopeModel] = []
        self.metrics = GatewayMetrics()
        clock = SystemClock()

        async def deliver(e: env.EnvelopeModel) -> None:
            self.events.append(e)

        self.readings: Channel[ReadingBatch] = Channel("readings", 100)
        ctx = SourceContext(
            name="bus",
            site="s",
            gateway="g",
            clock=clock,
            metrics=self.metrics,
            emitter=Emitter("s", "g", clock, deliver, self.metrics),
            check=CheckContext(Path(".")),
            readings=self.readings,
        )
        self.source = ModbusSource(self.config, ctx)

    async def __aenter__(self) -> Harness:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.source.close()

    async def poll(self) -> list[ReadingBatch]:
        await self.source.poll_once(self.source.devices[0])
        out = []
        while (b := self.readings.get_nowait()) is not None:
            out.append(b)
        return out


async def test_every_point_decodes_to_what_the_device_served() -> None:
    async with simulator() as (sim, port), Harness(port) as h:
        batches = await h.poll()
    assert len(batches) == 1
    readings = {r.point: r for r in batches[0].readings}
    profile = {p.name: p for p in ProfileLibrary().load("water-sonde").points}
    assert set(readings) == set(profile)
    for name, r in readings.items():
        assert r.unit == profile[name].unit
        assert sim.served[name], name
        assert r.value == sim.served[name][-1], name
    assert isinstance(readings["conductivity"].value, int)
    assert isinstance(readings["window_fouled"].value, bool)


async def test_reads_are_merged_into_two_requests() -> None:
    async with simulator() as (sim, port), Harness(port) as h:
        await h.poll()  # connect first
        before = sim.requests
        await h.poll()
        assert sim.requests - before == 2  # input 0..9 and holding 100


async def test_exception_code_is_named_with_a_hint_and_reported_once() -> None:
    faults = FaultSchedule(manual_mode="exception", manual_code=2)
    async with simulator(faults=faults) as (_sim, port), Harness(port) as h:
        for _ in range(5):
            assert await h.poll() == []
    avail = [e for e in h.events if isinstance(e, env.AvailabilityEnvelope)]
    assert len(avail) == 1
    assert avail[0].payload.state is env.AvailabilityState.UNAVAILABLE
    assert "exception 2 (illegal data address)" in avail[0].payload.reason


async def test_silent_device_times_out_then_recovers_once() -> None:
    faults = FaultSchedule(manual_mode="silent")
    async with simulator(faults=faults) as (_sim, port), Harness(port) as h:
        for _ in range(3):
            assert await h.poll() == []
        faults.manual_mode = "normal"
        results = [await h.poll() for _ in range(3)]
    states = [e.payload.state for e in h.events if isinstance(e, env.AvailabilityEnvelope)]
    assert states == [env.AvailabilityState.UNAVAILABLE, env.AvailabilityState.RECOVERED]
    assert any(results)
    assert "no reply from unit 1" in h.events[0].payload.reason  # type: ignore[union-attr]


async def test_refused_connection_fails_fast_and_backs_off() -> None:
    port = free_port()
    async with Harness(port) as h:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(4):
            await h.poll()
        assert loop.time() - t0 < 1.0  # no request timeouts are spent on a closed port
    avail = [e for e in h.events if isinstance(e, env.AvailabilityEnvelope)]
    assert len(avail) == 1
    assert "connect" in avail[0].payload.reason


async def test_reading_across_an_unmapped_gap_gets_exception_2() -> None:
    points = [
        {"name": "a", "address": 0, "table": "input", "dtype": "int16"},
        {"name": "b", "address": 100, "table": "holding"},
        {"name": "c", "address": 110, "table": "holding"},
    ]
    async with simulator() as (_sim, port):
        h = Harness(
            port, max_gap=20, devices=[{"name": "sonde", "points": points, "poll_interval_s": 1}]
        )
        async with h:
            assert await h.poll() == []
    assert h.metrics.poll_errors.labels("bus", "sonde", "CE310")._value.get() == 1


@pytest.mark.parametrize("profile", ["water-sonde", "air-station"])
async def test_profiles_decode_within_their_simulated_ranges(profile: str) -> None:
    prof = ProfileLibrary().load(profile)
    async with simulator(profile) as (_sim, port):
        h = Harness(port, devices=[{"name": "dev", "profile": profile, "poll_interval_s": 1}])
        async with h:
            batches = await h.poll()
    for r in batches[0].readings:
        point = next(p for p in prof.points if p.name == r.point)
        if point.sim:
            assert point.sim.minimum - 1e-3 <= float(r.value) <= point.sim.maximum + 1e-3, r


async def test_write_a_holding_register_reads_it_back_and_it_sticks() -> None:
    async with simulator() as (sim, port), Harness(port) as h:
        back = await h.source.write("sonde", "wiper_interval_min", 45)
        assert back == 45
        assert sim.held["wiper_interval_min"] == 45
        readings = {r.point: r.value for r in (await h.poll())[0].readings}
        assert readings["wiper_interval_min"] == 45


async def test_write_a_coil_on_the_gate_controller() -> None:
    async with simulator("gate-controller") as (sim, port):
        h = Harness(
            port, devices=[{"name": "gate", "profile": "gate-controller", "poll_interval_s": 1}]
        )
        async with h:
            assert await h.source.write("gate", "relay", True) is True
            assert sim.held["relay"] is True
            assert await h.source.write("gate", "relay", False) is False
            readings = {r.point: r.value for r in (await h.poll())[0].readings}
    assert readings["relay"] is False


@pytest.mark.parametrize(
    ("point", "value", "message"),
    [
        ("ph", 7.0, "read-only"),
        ("nope", 1, "has no point"),
        ("wiper_interval_min", -1, "out of range"),
        ("wiper_interval_min", 70000, "out of range"),
    ],
)
async def test_refused_writes_say_why(point: str, value: float, message: str) -> None:
    from edge.actuators import ActuationError

    async with simulator() as (_sim, port), Harness(port) as h:
        with pytest.raises(ActuationError, match=message):
            await h.source.write("sonde", point, value)


async def test_write_to_a_failing_device_is_a_device_error() -> None:
    from edge.errors import DeviceError

    faults = FaultSchedule(manual_mode="exception", manual_code=6)
    async with simulator(faults=faults) as (_sim, port), Harness(port) as h:
        with pytest.raises(DeviceError, match="exception 6 \\(server device busy\\)"):
            await h.source.write("sonde", "wiper_interval_min", 10)
