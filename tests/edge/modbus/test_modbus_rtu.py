"""Modbus RTU through a socat pty pair: the source's serial client against pymodbus's serial
server serving simulated profiles, with the line's timing emulated by the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from edge.actuators import ActuationError
from edge.errors import DeviceError
from edge.profiles import ProfileLibrary
from protocols import envelope as env
from protocols.modbus import rtu_silence_s
from sim.devices.faults import FaultSchedule
from sim.devices.modbus_device import DeviceSim, LineTiming, SerialLine, serve
from sim.localsite import PtyPair, start_pty_pair
from tests.edge.modbus.test_modbus_source import Harness

BAUD = 9600
# a Linux pty refuses parity (EINVAL from tcsetattr), so the tests run 8N2: no parity and two
# stop bits, which Modbus over Serial Line 2.5.1 allows (11 bits per character either way)


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyPair]:
    pair = start_pty_pair(tmp_path)
    yield pair
    pair.stop()


@contextlib.asynccontextmanager
async def rtu_simulator(
    pair: PtyPair,
    profile: str = "water-sonde",
    units: int = 1,
    dead: frozenset[int] = frozenset(),
    faults: FaultSchedule | None = None,
    baud: int = BAUD,
) -> AsyncIterator[dict[int, DeviceSim]]:
    prof = ProfileLibrary().load(profile)
    line = LineTiming(baud, "N", 2)
    sims = {
        u: DeviceSim(
            prof,
            seed=u,
            line=line,
            faults=(faults or FaultSchedule()) if u == 1 else FaultSchedule(),
        )
        for u in range(1, units + 1)
    }
    ready = asyncio.Event()
    task = asyncio.create_task(
        serve(sims, "", 0, ready=ready, serial=SerialLine(pair.a, baud, "N", 2), dead=dead)
    )
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield sims
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def rtu_harness(
    pair: PtyPair,
    devices: Sequence[Mapping[str, object]] | None = None,
    baud: int = BAUD,
    **kw: object,
) -> Harness:
    return Harness(
        502,
        transport="rtu",
        host=None,
        serial={"device": pair.b, "baudrate": baud, "parity": "N", "stopbits": 2},
        devices=devices or [{"name": "sonde", "profile": "water-sonde", "poll_interval_s": 1}],
        **kw,
    )


async def test_rtu_points_decode_to_what_the_units_served(pty: PtyPair) -> None:
    devices = [
        {"name": f"sonde{u}", "unit_id": u, "profile": "water-sonde", "poll_interval_s": 1}
        for u in (1, 2)
    ]
    async with rtu_simulator(pty, units=2) as sims, rtu_harness(pty, devices) as h:
        for i, unit in enumerate((1, 2)):
            (batch,) = await h.poll(i)
            assert len(batch.readings) == 8
            for r in batch.readings:
                assert r.value == sims[unit].served[r.point][-1], r
        assert h.source.requests == 4  # two planned reads per sonde


async def test_rtu_writes_a_coil_and_a_register_and_reads_them_back(pty: PtyPair) -> None:
    devices = [{"name": "gate", "profile": "gate-controller", "poll_interval_s": 1}]
    async with rtu_simulator(pty, "gate-controller") as sims, rtu_harness(pty, devices) as h:
        assert await h.source.write("gate", "relay", True) is True
        assert sims[1].held["relay"] is True
        assert await h.source.write("gate", "relay", False) is False
        writable = next(
            p for p in ProfileLibrary().load("gate-controller").points if p.table.value == "holding"
        )
        assert await h.source.write("gate", writable.name, 3) == 3
        with pytest.raises(ActuationError, match="no point"):
            await h.source.write("gate", "nope", 1)


async def test_rtu_exception_code_names_the_line_and_the_fix(pty: PtyPair) -> None:
    faults = FaultSchedule(manual_mode="exception", manual_code=2)
    async with rtu_simulator(pty, faults=faults), rtu_harness(pty) as h:
        with pytest.raises(
            DeviceError,
            match=rf"unit 1 on {pty.b} at {BAUD} 8N2 answered .* exception 2 \(illegal data address\)",
        ) as info:
            await h.source.write("sonde", "wiper_interval_min", 10)
        assert "register map" in (info.value.hint or "")


async def test_rtu_dead_unit_is_reported_with_a_hint_about_the_wiring(pty: PtyPair) -> None:
    devices = [
        {"name": f"u{u}", "unit_id": u, "profile": "water-sonde", "poll_interval_s": 1}
        for u in (1, 2)
    ]
    async with (
        rtu_simulator(pty, units=2, dead=frozenset({2})),
        rtu_harness(pty, devices, timeout_s=0.3, unavailable_after=1) as h,
    ):
        assert await h.poll(1) == []
        assert len(await h.poll(0)) == 1  # the live unit still answers after the timeout
    (event,) = [e for e in h.events if isinstance(e, env.AvailabilityEnvelope)]
    assert f"no reply from unit 2 on {pty.b} at {BAUD} 8N2" in event.payload.reason
    assert "A/B polarity and termination" in event.payload.reason


async def test_rtu_keeps_the_line_silent_for_t35_between_frames(pty: PtyPair) -> None:
    baud = 1200  # t3.5 = 32 ms: long enough to see on a busy machine
    devices = [{"name": "sonde", "profile": "water-sonde", "poll_interval_s": 1}]
    async with (
        rtu_simulator(pty, baud=baud) as sims,
        rtu_harness(pty, devices, baud=baud, timeout_s=2) as h,
    ):
        for _ in range(3):
            await h.poll()
    log = list(sims[1].request_log)
    line = LineTiming(baud, "N", 2)
    assert len(log) == 6
    for (t0, fc, n), (t1, _, _) in itertools.pairwise(log):
        # the next request arrived no sooner than the answer's end plus the silence
        assert t1 - (t0 + line.exchange_s(fc, n)) >= rtu_silence_s(baud) * 0.9
