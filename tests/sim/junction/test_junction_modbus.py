"""The cabinet on a real pymodbus server, read and written by the real modbus source: the
register map end to end, and the one-request plan write (``write_many``, fc 16)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from edge.actuators import ActuationError, Actuators
from edge.channel import Channel
from edge.clock import SystemClock
from edge.errors import DeviceError
from edge.metrics import GatewayMetrics
from edge.modbus.config import ModbusSourceConfig
from edge.modbus.source import ModbusSource
from edge.readings import ReadingBatch
from edge.traffic_signal import load_junction
from edge.traffic_signal.safety import Guard, Proposal
from protocols.signal_controller import CommandStatus, ControllerState, Interval, Mode
from sim.devices.faults import FaultSchedule
from sim.devices.modbus_device import serve
from sim.junction.cabinet import Cabinet
from sim.junction.server import CabinetDevice
from sim.localsite import free_port
from tests.edge import contexts

J = load_junction("four-arm")


@contextlib.asynccontextmanager
async def cabinet_on_modbus(
    faults: FaultSchedule | None = None,
) -> AsyncIterator[tuple[Cabinet, ModbusSource]]:
    cabinet = Cabinet(J)
    device = CabinetDevice(cabinet, SystemClock(), faults or FaultSchedule())
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(serve({1: device}, "127.0.0.1", port, ready=ready))
    await asyncio.wait_for(ready.wait(), 5)
    config = ModbusSourceConfig.model_validate(
        {
            "type": "modbus",
            "name": "cabinet-link",
            "host": "127.0.0.1",
            "port": port,
            "timeout_s": 0.5,
            "devices": [{"name": "junction", "profile": "signal-controller"}],
        }
    )
    source = ModbusSource(
        config, contexts.source("cabinet-link", readings=Channel("readings", 10)).ctx
    )
    try:
        yield cabinet, source
    finally:
        source.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def poll(source: ModbusSource) -> ControllerState:
    await source.poll_once(source.devices[0])
    batch: ReadingBatch | None = source.ctx.readings.get_nowait()
    assert batch is not None
    return ControllerState.from_points({r.point: r.value for r in batch.readings}, len(J.detectors))


async def test_a_poll_is_the_cabinets_state_in_two_reads() -> None:
    async with cabinet_on_modbus() as (cabinet, source):
        cabinet.advance(12.34)
        cabinet.press(2)
        state = await poll(source)
    assert state.table_id == J.table_id() and state.phase_count == 5
    assert state.time_s == pytest.approx(12.3) and state.green_elapsed_s == pytest.approx(12.3)
    assert state.mode is Mode.LOCAL and state.interval is Interval.GREEN
    assert state.ped_demand == 0b100
    assert sorted(b.function for b in source.devices[0].blocks) == [3, 4]  # one read each


async def test_a_plan_is_written_in_one_request_and_read_back() -> None:
    async with cabinet_on_modbus() as (cabinet, source):
        actuators = Actuators(GatewayMetrics())
        actuators.register("junction", source)
        await actuators.write_many("junction", {"mode_request": 1})
        state = await poll(source)
        cmd = Guard(J).admit(state, Proposal(18.0, 2, 9.0))
        back = await actuators.write_many("junction", cmd.registers(seq=7, heartbeat=1))
        assert back["cmd_green"] == pytest.approx(18.0) and back["cmd_seq"] == 7
        assert cabinet.cmd_status is CommandStatus.APPLIED and cabinet.cmd_seq_applied == 7
        assert cabinet.plan.green_s == pytest.approx(18.0) and cabinet.plan.next_phase == 2
        assert cabinet.mode is Mode.REMOTE


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"heartbeat": 1, "cmd_phase": 0}, "not adjacent"),
        ({"cmd_seq": 1, "phase": 0}, "read-only"),
        ({"cmd_green": -1.0}, "out of range"),
        ({}, "nothing to write"),
    ],
)
async def test_plans_the_source_cannot_write_in_one_request(
    values: dict[str, float], message: str
) -> None:
    async with cabinet_on_modbus() as (_cabinet, source):
        with pytest.raises(ActuationError, match=message):
            await source.write_many("junction", values)


async def test_a_plan_the_cabinet_refuses_is_exception_3() -> None:
    async with cabinet_on_modbus() as (cabinet, source):
        bad = {
            "heartbeat": 1,
            "cmd_seq": 1,
            "cmd_phase": 0,
            "cmd_green": 10.0,
            "cmd_next_phase": 9,  # there is no phase 9
            "cmd_amber": 3.0,
            "cmd_all_red": 2.0,
            "cmd_next_green": 7.0,
        }
        with pytest.raises(DeviceError, match="exception 3 \\(illegal data value\\)"):
            await source.write_many("junction", bad)
        assert cabinet.cmd_seq_applied == 0 and "cmd_seq" not in cabinet.held


async def test_a_silent_cabinet_fails_the_write() -> None:
    async with cabinet_on_modbus(FaultSchedule(manual_mode="silent")) as (_cabinet, source):
        with pytest.raises(DeviceError, match="no reply"):
            await source.write_many("junction", {"heartbeat": 3})
