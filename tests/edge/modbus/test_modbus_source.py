"""The modbus source against a real pymodbus server serving a simulated profile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from edge.modbus.config import ModbusSourceConfig
from edge.modbus.source import ModbusSource
from edge.profiles import ProfileLibrary
from edge.readings import ReadingBatch
from protocols import envelope as env
from sim.devices.faults import FaultSchedule
from sim.devices.modbus_device import DeviceSim, serve
from sim.localsite import free_port
from tests.edge.source_harness import source_context


@contextlib.asynccontextmanager
async def simulator(
    profile: str = "water-sonde",
    faults: FaultSchedule | None = None,
    units: int = 1,
    dead: frozenset[int] = frozenset(),
) -> AsyncIterator[tuple[DeviceSim, int]]:
    sim = DeviceSim(ProfileLibrary().load(profile), seed=3, faults=faults or FaultSchedule())
    sims = {1: sim} | {u: DeviceSim(sim.profile, seed=u) for u in range(2, units + 1)}
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(serve(sims, "127.0.0.1", port, ready=ready, dead=dead))
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
        self.captured = source_context("bus")
        self.events = self.captured.events
        self.metrics = self.captured.metrics
        self.readings = self.captured.readings
        self.source = ModbusSource(self.config, self.captured.ctx)

    async def __aenter__(self) -> Harness:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.source.close()

    async def poll(self, device: int = 0) -> list[ReadingBatch]:
        await self.source.poll_once(self.source.devices[device])
        return self.captured.batches()


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
        await asyncio.sleep(0.25)  # the breaker's next try (one poll interval)
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


async def test_a_dead_unit_costs_one_timeout_then_is_skipped_with_backoff() -> None:
    devices = [
        {"name": "live", "unit_id": 1, "profile": "water-sonde", "poll_interval_s": 0.2},
        {"name": "dead", "unit_id": 2, "profile": "water-sonde", "poll_interval_s": 0.2},
    ]
    async with (
        simulator(units=2, dead=frozenset({2})) as (_sim, port),
        Harness(port, devices=devices, retry_dead_max_s=5) as h,
    ):
        dead = h.source.devices[1]
        breaker = dead.breaker
        assert breaker is not None
        loop = asyncio.get_running_loop()
        assert await h.poll(1) == []
        first_retry = breaker.retry_at - loop.time()
        t0 = loop.time()
        for _ in range(5):
            assert await h.poll(1) == []  # skipped: no request, no timeout spent
        assert loop.time() - t0 < 0.3  # five skips cost less than one 0.3 s timeout
        assert (dead.polls, dead.skipped) == (1, 5)
        await asyncio.sleep(max(first_retry, 0) + 0.05)
        await h.poll(1)  # the retry: one more timeout, and the wait doubles
        assert dead.polls == 2 and breaker.trips == 2
        second_retry = breaker.retry_at - loop.time()
        assert second_retry > first_retry
        assert len(await h.poll(0)) == 1  # the live unit on the same connection answers
    avail = [e for e in h.events if isinstance(e, env.AvailabilityEnvelope)]
    assert [(e.device, e.payload.state) for e in avail] == [
        ("dead", env.AvailabilityState.UNAVAILABLE)
    ]
    assert "no reply from unit 2" in avail[0].payload.reason


async def test_dead_units_share_one_try_per_cycle() -> None:
    devices = [
        {"name": f"d{u}", "unit_id": u, "profile": "water-sonde", "poll_interval_s": 0.5}
        for u in (1, 2, 3)
    ]
    async with (
        simulator(units=3, dead=frozenset({1, 2, 3})) as (_sim, port),
        Harness(port, devices=devices, retry_dead_initial_s=0.01, timeout_s=0.1) as h,
    ):
        for i in range(3):
            await h.poll(i)  # each dead unit is found out once
        await asyncio.sleep(0.05)  # every breaker is due for a try again
        for i in range(3):
            await h.poll(i)
        # only one of the three tries went on the wire within one poll interval
        assert [d.polls for d in h.source.devices] == [2, 1, 1]


async def test_writes_reach_a_unit_whose_breaker_is_open_and_close_it() -> None:
    faults = FaultSchedule(manual_mode="silent")
    async with simulator(faults=faults) as (sim, port), Harness(port) as h:
        await h.poll()
        breaker = h.source.devices[0].breaker
        assert breaker is not None
        assert breaker.open
        faults.manual_mode = "normal"
        assert await h.source.write("sonde", "wiper_interval_min", 40) == 40
        assert not breaker.open
        assert sim.held["wiper_interval_min"] == 40
