"""The coap source against the simulated CoAP air sensor (a real aiocoap server on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge.coap.config import CoapSourceConfig
from edge.coap.source import CoapSource, values_of
from protocols import envelope as env
from protocols import senml
from protocols.errors import DecodeError
from sim.devices.coap_air import AirSensor, serve
from sim.localsite import free_port
from tests.edge.source_harness import Captured, source_context


def free_udp_port() -> int:
    return free_port(kind=socket.SOCK_DGRAM)


@contextlib.asynccontextmanager
async def sensor(
    period_s: float = 0.2, port: int | None = None
) -> AsyncIterator[tuple[AirSensor, int]]:
    air = AirSensor("air-1", seed=4)
    for attempt in range(3):  # another program may take a free port before we bind it
        p = port or free_udp_port()
        ready = asyncio.Event()
        task = asyncio.create_task(serve("127.0.0.1", p, air, period_s, ready=ready))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if ready.is_set():
            port = p
            break
        if not task.done() or attempt == 2 or port:
            task.cancel()
            raise RuntimeError(f"the CoAP simulator did not start on {p}: {task}")
    assert port is not None
    try:
        yield air, port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def source(*devices: dict[str, Any], **kw: Any) -> AsyncIterator[tuple[CoapSource, Captured]]:
    cfg = CoapSourceConfig.model_validate(
        {"type": "coap", "name": "coap", "timeout_s": 2, "devices": list(devices), **kw}
    )
    cap = source_context("coap")
    src = CoapSource(cfg, cap.ctx)
    try:
        yield src, cap
    finally:
        await src.close()


@pytest.mark.parametrize("fmt", ["auto", "senml+json", "senml+cbor", "json"])
async def test_every_format_gives_the_values_the_sensor_served(fmt: str) -> None:
    async with (
        sensor(period_s=60) as (air, port),
        source({"name": "air", "uri": f"coap://127.0.0.1:{port}/air", "format": fmt}) as (src, cap),
    ):
        await src.poll_once(src.devices[0])
        (batch,) = cap.batches()
    got = {r.point: r for r in batch.readings}
    assert {k: r.value for k, r in got.items()} == air.current
    if fmt != "json":  # plain JSON carries no units
        assert got["pm2_5"].unit == "µg/m³" and got["co"].unit == "mg/m³"


async def test_points_pick_rename_and_scale() -> None:
    points = [
        {"name": "fine_dust", "key": "pm2_5"},
        {"name": "co_ug", "key": "co", "scale": 1000, "unit": "µg/m³"},
    ]
    async with (
        sensor(period_s=60) as (air, port),
        source({"name": "air", "uri": f"coap://127.0.0.1:{port}/air", "points": points}) as (
            src,
            cap,
        ),
    ):
        await src.poll_once(src.devices[0])
        (batch,) = cap.batches()
    assert [(r.point, r.value, r.unit) for r in batch.readings] == [
        ("fine_dust", air.current["pm2_5"], "µg/m³"),
        ("co_ug", air.current["co"] * 1000, "µg/m³"),
    ]


async def test_text_resource_is_one_point() -> None:
    dev = {
        "name": "pm",
        "uri": "",
        "format": "text",
        "points": [{"name": "pm2_5", "unit": "µg/m³"}],
    }
    async with sensor(period_s=60) as (air, port):
        dev["uri"] = f"coap://127.0.0.1:{port}/air/pm2_5"
        async with source(dev) as (src, cap):
            await src.poll_once(src.devices[0])
            (batch,) = cap.batches()
    (r,) = batch.readings
    assert (
        r.point == "pm2_5"
        and r.unit == "µg/m³"
        and r.value == pytest.approx(air.current["pm2_5"], rel=1e-5)
    )


async def test_blockwise_history_is_reassembled() -> None:
    async with sensor(period_s=60) as (air, port):
        for _ in range(59):
            air.tick()  # 60 samples of 8 values
        dev = {
            "name": "hist",
            "uri": f"coap://127.0.0.1:{port}/air/history",
            "format": "senml+json",
        }
        async with source(dev) as (src, _cap):
            response = await src.get(src.devices[0])
    assert len(response.payload) > 20 * 1024  # twenty and more 1024-byte blocks
    assert senml.decode_json(response.payload) == air.history_records()


async def test_observe_delivers_each_sample() -> None:
    async with sensor(period_s=0.1) as (_air, port):
        dev = {
            "name": "air",
            "uri": f"coap://127.0.0.1:{port}/air",
            "observe": True,
            "max_silence_s": 2,
        }
        async with source(dev) as (src, cap):
            task = asyncio.create_task(src.run())
            await cap.wait_batches(5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    batches = cap.batches()
    assert len(batches) >= 5
    pm = [b.value_of("pm2_5") for b in batches]
    assert all(p is not None for p in pm)
    assert not cap.availability()


async def test_silent_device_times_out_with_retries_then_recovers_once() -> None:
    port = free_udp_port()
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.1", port))  # swallows every request: the sender's timeouts run out
    dev = {"name": "air", "uri": f"coap://127.0.0.1:{port}/air"}
    async with source(dev, timeout_s=0.3, retries=1, unavailable_after=2) as (src, cap):
        for _ in range(3):
            await src.poll_once(src.devices[0])
        quiet.setblocking(False)
        datagrams = []
        with contextlib.suppress(BlockingIOError):
            while True:
                datagrams.append(quiet.recv(2048))
        quiet.close()
        # three polls of two requests each (new message ids), each retransmitted within its deadline
        assert len({d[2:4] for d in datagrams}) == 6
        assert len(datagrams) > 6
        async with sensor(period_s=60, port=port) as (_air, _p):
            await src.poll_once(src.devices[0])
    states = [e.payload.state for e in cap.availability()]
    assert states == [env.AvailabilityState.UNAVAILABLE, env.AvailabilityState.RECOVERED]
    reason = cap.availability()[0].payload.reason
    assert f"no reply from coap://127.0.0.1:{port}/air within 0.3 s (2 requests)" in reason


@pytest.mark.parametrize(
    ("path", "fmt", "message"),
    [
        ("/nope", "auto", "answered 4.04 Not Found.*check the resource path"),
        ("/air", "text", "answered 4.06 Not Acceptable"),
        ("/air/history", "json", "a JSON payload must be an object"),
    ],
)
async def test_refusals_and_bad_payloads_are_named(path: str, fmt: str, message: str) -> None:
    points = [{"name": "x"}] if fmt == "text" else []
    async with sensor(period_s=60) as (_air, port):
        dev = {
            "name": "air",
            "uri": f"coap://127.0.0.1:{port}{path}",
            "format": fmt,
            "points": points,
        }
        async with source(dev, unavailable_after=1) as (src, cap):
            await src.poll_once(src.devices[0])
    (event,) = cap.availability()
    assert re.search(message, event.payload.reason), event.payload.reason


@pytest.mark.parametrize(
    ("payload", "fmt", "expected"),
    [
        (b"23.5", "text", {"": (23.5, None)}),
        (b"17 Cel", "text", {"": (17, None)}),
        (b'{"a": 1, "b": true, "c": "x", "d": null}', "json", {"a": (1, None), "b": (True, None)}),
        (
            b'[{"bn":"s:","n":"t","u":"Cel","v":21.5},{"n":"open","vb":false},{"n":"l","vs":"x"}]',
            "senml+json",
            {"s:t": (21.5, "Cel"), "s:open": (False, None)},
        ),
    ],
)
def test_values_of_table(payload: bytes, fmt: str, expected: dict[str, object]) -> None:
    assert values_of(payload, fmt, 0.0) == expected


@pytest.mark.parametrize(
    ("payload", "fmt"), [(b"nan", "text"), (b"", "text"), (b"[1]", "json"), (b"\xff", "senml+cbor")]
)
def test_values_of_refuses(payload: bytes, fmt: str) -> None:
    with pytest.raises(DecodeError):
        values_of(payload, fmt, 0.0)


async def test_simulator_keeps_a_bounded_deduplication_cache() -> None:
    """aiocoap keeps every request's answer for EXCHANGE_LIFETIME (~247 s); the simulator only
    the newest ``dedup_window``, so a load test does not grow its memory."""
    import aiocoap
    from aiocoap.messagemanager import MessageManager

    from sim.devices.coap_air import start_server

    port = free_udp_port()
    server, _air = await start_server("127.0.0.1", port, AirSensor(), dedup_window=50)
    client = await aiocoap.Context.create_client_context()
    try:
        for _ in range(200):
            response = await client.request(
                aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/air/pm2_5")
            ).response
            assert response.code.is_successful()
        managers = [
            ri.token_interface
            for ri in server.request_interfaces
            if isinstance(getattr(ri, "token_interface", None), MessageManager)
        ]
        assert managers and all(len(m._recent_messages) <= 50 for m in managers)
    finally:
        await client.shutdown()
        await server.shutdown()
