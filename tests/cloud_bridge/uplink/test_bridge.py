"""The bridge against the real mosquitto: births, sequence numbers, events before telemetry,
the death on a clean stop, and a refused publish counted and dropped."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud_bridge.link import LinkSettings, MqttLink
from cloud_bridge.uplink.bridge import Bridge, BridgeSettings
from cloud_bridge.uplink.outbox import OutboxClass, Record, record_of
from edge.clock import VirtualClock
from protocols import envelope as env
from protocols.ids import Uuid7Generator
from protocols.session import HostState, LinkState, decode_state
from sim.localsite import Broker, free_port

IDS = Uuid7Generator()
NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def telemetry(n: int) -> env.TelemetryEnvelope:
    return env.TelemetryEnvelope(
        id=IDS.new(1_795_000_000_000 + n),
        site="s",
        gateway="g",
        device="d",
        time=NOW,
        payload=env.TelemetryPayload(readings=[env.PointValue(point="n", value=n)]),
    )


def availability(n: int) -> env.AvailabilityEnvelope:
    return env.AvailabilityEnvelope(
        id=IDS.new(1_795_000_000_000 + n),
        site="s",
        gateway="g",
        device="d",
        time=NOW,
        payload=env.AvailabilityPayload(
            state=env.AvailabilityState.UNAVAILABLE, reason="x", failed_polls=3, since=NOW
        ),
    )


def settings(port: int, path: Path) -> BridgeSettings:
    return BridgeSettings(
        site="s",
        gateway="g",
        link=LinkSettings("127.0.0.1", port, client_id="g", connect_timeout_s=3),
        outbox_path=path,
        group_commit_ms=10,
        reconnect_initial_s=0.1,
        reconnect_max_s=0.3,
    )


async def drain(link: MqttLink) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    while True:
        try:
            msg = await link.receive(1.5)
        except TimeoutError:
            return got
        got.append((msg.topic, msg.payload))


async def test_session_numbers_order_and_goodbye(mosquitto: Broker, tmp_path: Path) -> None:
    async with MqttLink.open(LinkSettings("127.0.0.1", mosquitto.port, client_id="sub")) as sub:
        await sub.subscribe("cityedge/v1/#")
        async with Bridge.open(settings(mosquitto.port, tmp_path / "o.db")) as bridge:
            # queued before the bridge runs: telemetry first, then an availability event
            for i in range(5):
                await bridge.put(record_of(telemetry(i)))
            await bridge.put(record_of(availability(5)))
            run = asyncio.create_task(bridge.run())
            bridge.close_intake()
            await asyncio.wait_for(run, 20)
        got = await drain(sub)
    states = [decode_state(p) for t, p in got if t.endswith("/state")]
    assert [(s.state, s.session) for s in states] == [(LinkState.ONLINE, 1), (LinkState.OFFLINE, 1)]
    assert states[0].outbox is not None  # what the outbox held as the session began
    assert states[1].reason == "shutdown"
    data = [env.decode(p) for t, p in got if not t.endswith("/state")]
    assert [e.kind for e in data] == ["availability"] + ["telemetry"] * 5  # events first
    links = [e.link for e in data]
    assert [(lk.session, lk.seq) for lk in links if lk] == [(1, i) for i in range(1, 7)]
    assert [lk.pos for lk in links if lk] == [6, 1, 2, 3, 4, 5]


async def test_a_publish_the_broker_refuses_is_counted_and_dropped(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic write cityedge/v1/s/g/#\ntopic read cityedge/v1/s/g/cmd/req\n")
    broker = Broker.start(tmp_path / "b", extra_conf=f"acl_file {acl}\n")
    try:
        async with Bridge.open(settings(broker.port, tmp_path / "o.db")) as bridge:
            await bridge.put(
                Record(
                    "cityedge/v1/s/other/telemetry/d",
                    env.encode(telemetry(1)),
                    OutboxClass.TELEMETRY,
                )
            )
            await bridge.put(record_of(telemetry(2)))
            run = asyncio.create_task(bridge.run())
            bridge.close_intake()
            await asyncio.wait_for(run, 20)
            assert bridge.counters.refused == 1
            assert bridge.counters.published == {"telemetry": 1}
            assert bridge.outbox.depth == 0
    finally:
        broker.stop()


async def test_the_bridge_closes_its_outbox_on_leaving_async_with(tmp_path: Path) -> None:
    """The docstring said "use as ``async with Bridge.open(settings)``"; now it can be."""
    async with Bridge.open(settings(free_port(), tmp_path / "o.db")) as bridge:
        await bridge.put(record_of(telemetry(1)))
        assert (await bridge.refresh_stats()).classes["telemetry"].depth == 0  # not committed
    with pytest.raises(RuntimeError, match="outbox thread is stopped"):
        await bridge.refresh_stats()


async def test_ingest_heartbeats_expire_on_the_bridges_clock(tmp_path: Path) -> None:
    """A heartbeat is fresh for three of its intervals on the bridge's (injected) clock; the
    bridge used to time them with time.monotonic() past it."""
    clock = VirtualClock()
    s = dataclasses.replace(settings(free_port(), tmp_path / "o.db"), wait_for_ingest="brain")
    async with Bridge.open(s, clock=clock) as bridge:
        beat = HostState(
            state=LinkState.ONLINE,
            group="brain",
            worker="w1",
            time=datetime.fromtimestamp(clock.time(), UTC),
            interval_s=5,
        )
        bridge._host_message(beat.model_dump_json().encode(), retained=False)
        assert bridge._ingest_alive()
        await clock.advance(14)
        assert bridge._ingest_alive()
        await clock.advance(2)
        assert not bridge._ingest_alive()
