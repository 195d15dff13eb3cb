"""The ``traffic_signal`` app: its config checks, and its I/O around the control loop — writes
through the actuators, events to the city brain, the link watchdog on the injected clock.

The cabinet is the simulated one behind a fake writer (the real modbus path is covered in
tests/sim/junction/test_junction_modbus.py and the hil-test)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.actuators import Actuators
from edge.clock import VirtualClock
from edge.config.base import Catalog, PointInfo
from edge.errors import DeviceError
from edge.metrics import GatewayMetrics
from edge.readings import Reading, ReadingBatch
from edge.traffic_signal import load_junction
from edge.traffic_signal.app import TrafficSignalApp
from edge.traffic_signal.config import TrafficSignalConfig
from protocols import envelope as env
from protocols.modbus import Value
from protocols.signal_controller import Mode
from sim.junction.cabinet import Cabinet
from sim.junction.loop import through_registers
from tests.edge import contexts

J = load_junction("four-arm")


class CabinetWriter:
    """A fake Modbus source: writes go straight into a simulated cabinet (or fail on cue)."""

    def __init__(self, cabinet: Cabinet) -> None:
        self.cabinet = cabinet
        self.fail = False
        self.requests = 0

    async def write(self, device: str, point: str, value: Value) -> Value:
        return (await self.write_many(device, {point: value}))[point]

    async def write_many(self, device: str, values: Mapping[str, Value]) -> dict[str, Value]:
        if self.fail:
            raise DeviceError("no reply from unit 1 (fake)")
        self.requests += 1
        back = through_registers(values)
        self.cabinet.write(back)
        return back


def make_app(**config: Any) -> tuple[TrafficSignalApp, Cabinet, CabinetWriter, list[Any]]:
    clock = VirtualClock()
    metrics = GatewayMetrics()
    cabinet = Cabinet(J)
    writer = CabinetWriter(cabinet)
    actuators = Actuators(metrics)
    actuators.register("junction-1", writer)
    cfg = TrafficSignalConfig.model_validate(
        {"type": "traffic_signal", "name": "ctl", "device": "junction-1", "junction": "four-arm"}
        | config
    )
    built = contexts.app("ctl", clock=clock, metrics=metrics, actuators=actuators)
    return TrafficSignalApp(cfg, built.ctx), cabinet, writer, built.events


def batch(cabinet: Cabinet, time: float) -> ReadingBatch:
    values = through_registers(cabinet.state())
    return ReadingBatch(
        "cabinet-link", "junction-1", time, tuple(Reading(k, v) for k, v in values.items())
    )


async def test_the_app_takes_control_and_reports_every_stage() -> None:
    app, cabinet, _writer, events = make_app()
    for t in range(1, 200):
        cabinet.advance(float(t))
        await app.handle(batch(cabinet, 1_700_000_000.0 + t))
    assert cabinet.mode is Mode.REMOTE
    plans = [e for e in events if isinstance(e, env.SignalPlanEnvelope)]
    assert len(plans) >= 5
    first = plans[0].payload
    assert first.junction == "four-arm" and first.controller == "cityedge"
    assert first.phase in {p.name for p in J.phases} and first.green_s >= 5
    assert plans[0].device == "junction-1"
    assert not [e for e in events if isinstance(e, env.SignalFallbackEnvelope)]


async def test_a_failed_write_is_a_fallback_event() -> None:
    app, cabinet, writer, events = make_app()
    cabinet.advance(1.0)
    await app.handle(batch(cabinet, 1.0))
    writer.fail = True
    cabinet.advance(2.0)
    await app.handle(batch(cabinet, 2.0))
    (fallback,) = [e for e in events if isinstance(e, env.SignalFallbackEnvelope)]
    assert fallback.payload.state is env.SignalFallbackState.ENTERED
    assert "write failed" in fallback.payload.reason


async def test_no_poll_for_link_timeout_is_a_fallback_event_once() -> None:
    app, cabinet, _writer, events = make_app(link_timeout_s=3.0)
    clock = app.ctx.clock
    assert isinstance(clock, VirtualClock)
    runner = asyncio.create_task(app.run())
    await clock.advance(0.5)
    await app.ctx.inbox.put(batch(cabinet, clock.time()))
    await clock.advance(10.0)
    fallbacks = [e for e in events if isinstance(e, env.SignalFallbackEnvelope)]
    assert len(fallbacks) == 1
    assert "controller link lost (no poll of junction-1" in fallbacks[0].payload.reason
    app.ctx.inbox.close()
    await asyncio.wait_for(runner, 5)


def test_config_names_what_is_wrong() -> None:
    with pytest.raises(
        ValidationError, match="no shipped timing sheet 'four-arms'; did you mean \"four-arm\""
    ):
        TrafficSignalConfig.model_validate(
            {"type": "traffic_signal", "name": "c", "device": "d", "junction": "four-arms"}
        )
    inline = TrafficSignalConfig.model_validate(
        {
            "type": "traffic_signal",
            "name": "c",
            "device": "d",
            "junction": J.model_dump(by_alias=True),
        }
    )
    assert inline.spec().table_id() == J.table_id()


def test_config_check_wants_a_signal_controller_device() -> None:
    cfg = TrafficSignalConfig.model_validate(
        {"type": "traffic_signal", "name": "c", "device": "junction-1", "junction": "four-arm"}
    )
    assert "no source provides device 'junction-1'" in cfg.check(Catalog())[0][1]
    sonde = Catalog(devices={"junction-1": {"ph": PointInfo()}})
    assert "give it profile 'signal-controller'" in cfg.check(sonde)[0][1]


def test_the_example_site_file_is_valid() -> None:
    from edge.config.site import load_site

    site = load_site(Path(__file__).parents[3] / "examples" / "junction.yaml", env={})
    (app,) = site.config.apps
    assert isinstance(app, TrafficSignalConfig) and app.spec().name == "four-arm"
