"""A gateway whose mqtt sink has a task crash: the supervisor sees it, logs it with its
traceback, counts it in /metrics, reports it in /healthz and starts the sink again; nothing
accepted is lost. Real gateway object, real mosquitto, real HTTP endpoint."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloud_bridge.link import LinkSettings, MqttLink
from edge.config.site import load_site
from edge.gateway import STAGE_CLEANUP_S, Gateway
from edge.mqtt_sink.sink import MqttSink
from edge.readings import Reading, ReadingBatch
from protocols import envelope as env
from protocols import topics
from sim.localsite import Broker
from tests.cloud_bridge.uplink.test_bridge import drain
from tests.cloud_bridge.uplink.test_bridge_faults import CrashingDesk, until


async def get(port: int, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        body = await (resp.json() if path == "/healthz" else resp.text())
        return resp.status, body


def gateway(tmp_path: Path, port: int) -> Gateway:
    path = tmp_path / "site.yaml"
    path.write_text(
        "site: s\ngateway: g\nhttp: {port: 0}\nshutdown_flush_s: 5\nsinks:\n"
        f"  - {{type: mqtt, name: brain, host: 127.0.0.1, port: {port}, "
        "reconnect_initial_s: 0.1, reconnect_max_s: 0.3, outbox: {path: outbox.db}, "
        "restart: {backoff_initial_s: 0.2, backoff_max_s: 0.5}}\n"
    )
    return Gateway(load_site(path))


async def emit(gw: Gateway, n: int) -> None:
    now = time.time()
    payload = env.AvailabilityPayload(
        state=env.AvailabilityState.UNAVAILABLE,
        reason=f"test {n}",
        failed_polls=n,
        since=datetime.fromtimestamp(now, UTC),
    )
    await gw.emitter.send(gw.emitter.availability("d", now, payload))


async def test_a_crashing_sink_task_is_seen_counted_reported_and_restarted(
    tmp_path: Path, mosquitto: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    sub = await MqttLink.open(LinkSettings("127.0.0.1", mosquitto.port, client_id="sub"))
    await sub.subscribe("cityedge/v1/s/g/availability/#")
    gw = gateway(tmp_path, mosquitto.port)
    sink = gw.sinks[0].plugin
    assert isinstance(sink, MqttSink)
    stop = asyncio.Event()
    run = asyncio.create_task(gw.run(stop))
    await until(lambda: gw.http is not None and gw.http.port is not None, "http endpoint")
    assert gw.http is not None and gw.http.port is not None
    port = gw.http.port
    await until(lambda: sink.bridge is not None and sink.bridge.connected.is_set(), "link up")
    status, health = await get(port, "/healthz")
    assert (status, health["status"], health["reasons"]) == (200, "ok", [])
    for n in range(3):
        await emit(gw, n)

    first = sink.bridge
    assert first is not None
    first.commands = CrashingDesk()  # type: ignore[assignment]
    async with MqttLink.open(LinkSettings("127.0.0.1", mosquitto.port, client_id="ops")) as ops:
        await ops.publish(topics.command_request_topic("s", "g"), b"{}", qos=1)

    brain = gw.supervisor.status["brain"]
    await until(lambda: brain.crashes == 1, "the crash seen by the supervisor")
    status, health = await get(port, "/healthz")
    assert status == 200 and health["status"] == "degraded"
    [reason] = health["reasons"]
    assert reason.startswith("sink brain ") and "RecursionError" in reason
    assert "listener" in reason
    _, metrics = await get(port, "/metrics")
    assert 'cityedge_plugin_crashes_total{plugin="brain",role="sink"} 1.0' in metrics
    tracebacks = [r for r in caplog.records if r.exc_info and "brain" in r.getMessage()]
    assert len(tracebacks) == 1  # logged once, with its traceback

    await until(
        lambda: (
            sink.bridge is not first and sink.bridge is not None and sink.bridge.connected.is_set()
        ),
        "the sink started again",
    )
    for n in range(3, 6):
        await emit(gw, n)
    stop.set()
    await asyncio.wait_for(run, 20)
    got = [env.decode(p) for _, p in await drain(sub)]
    await sub.close()
    polls = sorted(e.payload.failed_polls for e in got if isinstance(e, env.AvailabilityEnvelope))
    assert sorted(set(polls)) == list(range(6))  # nothing accepted was lost


async def test_shutdown_ends_within_its_deadline_when_a_sink_takes_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "outbox.db").mkdir()  # the sink fails at every start: it never takes anything
    path = tmp_path / "site.yaml"
    path.write_text(
        "site: s\ngateway: g\nhttp: {enabled: false}\nshutdown_flush_s: 1\n"
        "channels: {sink_outbox: {capacity: 1}}\nsinks:\n"
        "  - {type: mqtt, name: brain, host: 127.0.0.1, port: 1, outbox: {path: outbox.db}, "
        "restart: {backoff_initial_s: 0.1, backoff_max_s: 0.2}}\n"
    )
    gw = Gateway(load_site(path))
    stop = asyncio.Event()
    run = asyncio.create_task(gw.run(stop))
    for n in range(5):  # the dispatcher blocks on the sink's full channel
        gw.readings.offer(ReadingBatch("src", "d", time.time(), (Reading("n", n),)))
    await until(
        lambda: getattr(gw.supervisor.status.get("brain"), "restarts", 0) >= 2, "the sink failing"
    )
    stop.set()
    # before: SIGTERM hung on the dispatcher, blocked for good on the sink's channel
    await asyncio.wait_for(run, 1 + STAGE_CLEANUP_S + 5)
