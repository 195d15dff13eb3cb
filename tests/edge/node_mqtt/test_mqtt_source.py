"""The ``mqtt`` source turns node frames into readings: dedupe, clock skew, unknown nodes, bad
frames, availability from the will; and end to end through a real mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.link import LinkSettings, Message, MqttLink
from edge.channel import Channel
from edge.clock import Clock, SystemClock, VirtualClock
from edge.config.base import CheckContext
from edge.node_mqtt.config import MqttSourceConfig
from edge.node_mqtt.source import MqttSource
from edge.readings import ReadingBatch
from protocols import envelope as env
from protocols import nodewire
from protocols.nodewire import NodeState
from sim.localsite import Broker
from tests.edge import contexts

NOW = 1_795_500_000.0


def make(
    port: int = 1, clock: Clock | None = None, commands: dict[str, Any] | None = None
) -> tuple[MqttSource, Channel[ReadingBatch], list[env.EnvelopeModel]]:
    cfg = MqttSourceConfig.model_validate(
        {
            "type": "mqtt",
            "name": "nodes",
            "host": "127.0.0.1",
            "port": port,
            "reconnect_initial_s": 0.1,
            "reconnect_max_s": 0.3,
            "nodes": [
                {"name": "bin-17", "kind": "bin-fill"},
                {"name": "gate-1", "kind": "gate-relay"},
            ],
        }
        | ({"commands": commands} if commands is not None else {})
    )
    readings: Channel[ReadingBatch] = Channel("readings", 100)
    built = contexts.source(
        "nodes",
        readings=readings,
        clock=clock or VirtualClock(start_wall=NOW),
        site="riverside",
        gateway="gw-1",
    )
    return MqttSource(cfg, built.ctx), readings, built.events


def up(node: str, payload: bytes, channel: str = "up") -> Message:
    return Message(nodewire.node_topic("riverside", node, channel), payload, 1, False)


def frame(seq: int, time: int, fill: float = 42.5) -> bytes:
    return nodewire.encode_readings(seq, time, [("fill_pct", fill), ("distance_mm", 640)])


async def test_frames_become_readings_with_units_and_node_time() -> None:
    src, readings, _ = make()
    await src.handle(up("bin-17", frame(1, int(NOW) - 10)))
    batch = readings.get_nowait()
    assert batch is not None
    assert batch.device == "bin-17" and batch.source == "nodes" and batch.time == NOW - 10
    assert [(r.point, r.value, r.unit) for r in batch.readings] == [
        ("fill_pct", 42.5, "%"),
        ("distance_mm", 640, "mm"),
    ]


async def test_unset_or_skewed_node_clock_uses_arrival_time() -> None:
    src, readings, _ = make()
    await src.handle(up("bin-17", frame(1, 0)))
    await src.handle(up("bin-17", frame(2, int(NOW) - 3600)))
    assert [b.time for b in drain(readings)] == [NOW, NOW]


async def test_repeated_frames_are_dropped_once_seen() -> None:
    src, readings, _ = make()
    for seq in (1, 2, 1, 2, 3):
        await src.handle(up("bin-17", frame(seq, int(NOW))))
    assert readings.depth == 3 and src.duplicates == 2


async def test_queued_reports_once_by_boot_and_seq_acknowledged_only_once_stored() -> None:
    src, readings, _ = make()

    def queued(seq: int, boot: int = 9) -> bytes:
        return nodewire.encode_readings(seq, int(NOW), [("fill_pct", 50.0)], boot)

    for seq, boot in ((1, 9), (2, 9), (1, 9), (1, 10)):  # (9, 1) again before it was stored
        await src.handle(up("bin-17", queued(seq, boot)))
    batches = drain(readings)
    assert [b.origin for b in batches] == [(9, 1), (9, 2), (10, 1)] and src.duplicates == 1
    assert src._acks == {}  # nothing is acknowledged before the outbox has it
    for b in batches[:2]:
        assert b.receipt is not None
        b.receipt()  # stored
    assert src._acks == {("bin-17", 9): [1, 2]}
    src._acks.clear()
    await src.handle(up("bin-17", queued(2)))  # a repeat of a stored one: its ack was lost
    assert readings.depth == 0 and src._acks == {("bin-17", 9): [2]}
    ack = nodewire.decode(nodewire.encode_ack(9, [1, 2]))
    assert ack == nodewire.AckFrame(0, 0, 9, (1, 2))


async def test_unknown_nodes_bad_frames_and_foreign_topics_are_counted_not_read() -> None:
    src, readings, _ = make()
    await src.handle(up("stranger", frame(1, 0)))
    await src.handle(up("bin-17", b"\xce\x01\x01garbage"))
    await src.handle(Message("cityedge/node/v1/other-site/bin-17/up", frame(1, 0), 1, False))
    await src.handle(Message("not/a/node/topic", b"", 0, False))
    assert readings.depth == 0
    assert src.unknown == {"stranger"}
    assert src.nodes["bin-17"].bad_frames == 1
    text = src.ctx.metrics.poll_errors.labels("nodes", "bin-17", "decode")._value.get()
    assert text == 1


async def test_will_makes_the_node_unavailable_once_and_a_frame_recovers_it() -> None:
    src, _readings, sent = make()
    await src.handle(
        up("bin-17", nodewire.encode_status(1, 0, NodeState.BOOT, (1, 0, 0)), "status")
    )
    for seq in (2, 3):  # the will, retained and seen again after a reconnect
        await src.handle(
            up(
                "bin-17",
                nodewire.encode_status(seq, 0, NodeState.OFFLINE, (1, 0, 0), "lost"),
                "status",
            )
        )
    assert src.device_health()["bin-17"] == "down"
    await src.handle(up("bin-17", frame(4, 0)))
    states = [e.payload.state for e in sent if isinstance(e, env.AvailabilityEnvelope)]
    assert states == [env.AvailabilityState.UNAVAILABLE, env.AvailabilityState.RECOVERED]
    assert src.device_health() == {"bin-17": "up", "gate-1": "unknown"}
    assert src.nodes["bin-17"].version == (1, 0, 0)


def test_config_catalog_lists_the_points_of_each_kind() -> None:
    src, _, _ = make()
    cat = src.config.catalog(CheckContext(Path(".")))
    assert sorted(cat.devices["bin-17"]) == ["distance_mm", "fill_pct", "temperature_c"]
    assert cat.devices["bin-17"]["fill_pct"].unit == "%"
    assert sorted(cat.devices["gate-1"]) == ["door_open", "relay_on"]
    with pytest.raises(ValueError, match="kind"):
        MqttSourceConfig.model_validate(
            {"type": "mqtt", "name": "n", "host": "h", "nodes": [{"name": "x", "kind": "toaster"}]}
        )


def fake_node(port: int) -> LinkSettings:
    return LinkSettings(host="127.0.0.1", port=port, client_id="fake-node")


async def test_through_a_real_broker_with_reconnect(mosquitto: Broker) -> None:
    src, readings, _ = make(mosquitto.port, SystemClock())
    task = asyncio.create_task(src.run())
    topic = nodewire.node_topic("riverside", "bin-17", "up")
    try:
        async with MqttLink.open(fake_node(mosquitto.port)) as pub, asyncio.timeout(20):
            while readings.depth == 0:  # until the source has subscribed
                await pub.publish(topic, frame(0, 0, 1.0))
                await asyncio.sleep(0.2)
        mosquitto.restart()
        async with MqttLink.open(fake_node(mosquitto.port)) as pub, asyncio.timeout(20):
            seq = 1
            while not any(b.readings[0].value == 99.0 for b in list(drain(readings))):
                await pub.publish(topic, frame(seq, 0, 99.0))
                seq += 1
                await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_frames_sent_while_the_gateway_is_away_wait_at_the_broker(mosquitto: Broker) -> None:
    """The source's session is persistent: a gateway restart loses no node frame."""
    src, readings, _ = make(mosquitto.port, SystemClock())
    task = asyncio.create_task(src.run())
    topic = nodewire.node_topic("riverside", "bin-17", "up")
    try:
        async with MqttLink.open(fake_node(mosquitto.port)) as pub:
            async with asyncio.timeout(20):
                while readings.depth == 0:  # until the source has subscribed
                    await pub.publish(topic, frame(0, 0, 1.0))
                    await asyncio.sleep(0.2)
            task.cancel()  # the gateway stops
            with pytest.raises(asyncio.CancelledError):
                await task
            for seq in range(1, 6):  # the node goes on reporting
                await pub.publish(topic, frame(seq, 0, 50.0 + seq))
            src, readings, _ = make(mosquitto.port, SystemClock())  # the gateway starts again
            task = asyncio.create_task(src.run())
            got: list[float] = []
            async with asyncio.timeout(20):
                while len(got) < 5:
                    got += [float(b.readings[0].value) for b in drain(readings)]
                    await asyncio.sleep(0.1)
            assert got == [51.0, 52.0, 53.0, 54.0, 55.0]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def drain(ch: Channel[ReadingBatch]) -> list[ReadingBatch]:
    out = []
    while (b := ch.get_nowait()) is not None:
        out.append(b)
    return out
