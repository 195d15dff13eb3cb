"""The mqtt sink keeps envelopes in its durable outbox while the broker is away, across a
restart of the sink, and delivers them in order after."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud_bridge.link import LinkSettings, MqttLink
from edge.channel import Channel
from edge.metrics import GatewayMetrics
from edge.mqtt_sink.config import MqttSinkConfig
from edge.mqtt_sink.sink import MqttSink
from protocols import envelope as env
from protocols.ids import Uuid7Generator
from sim.localsite import Broker
from tests.edge import contexts

GEN = Uuid7Generator()


def telemetry(n: int) -> env.TelemetryEnvelope:
    return env.TelemetryEnvelope(
        id=GEN.new(1_700_000_000_000 + n),
        site="s",
        gateway="g",
        device="d",
        time=datetime.now(UTC),
        payload=env.TelemetryPayload(readings=[env.PointValue(point="n", value=n)]),
    )


def make_sink(
    port: int, state_dir: Path
) -> tuple[MqttSink, Channel[env.EnvelopeModel], GatewayMetrics]:
    cfg = MqttSinkConfig.model_validate(
        {
            "type": "mqtt",
            "name": "brain",
            "host": "127.0.0.1",
            "port": port,
            "reconnect_initial_s": 0.1,
            "reconnect_max_s": 0.3,
            "connect_timeout_s": 2,
            "outbox": {"path": "outbox.db", "group_commit_ms": 20},
        }
    )
    box: Channel[env.EnvelopeModel] = Channel("sink", 1000)
    built = contexts.sink("brain", outbox=box, base_dir=state_dir)
    return MqttSink(cfg, built.ctx), box, built.metrics


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto with persistence, so a subscriber's session survives the restart in the test."""
    broker = Broker.start(tmp_path / "durable", persistence=True)
    yield broker
    broker.stop()


def subscriber_settings(port: int) -> LinkSettings:
    return LinkSettings(
        host="127.0.0.1", port=port, client_id="brain-sub", protocol="3.1.1", clean_session=False
    )


async def subscribe_then_leave(port: int) -> None:
    """Register a durable QoS 1 subscription, then disconnect: the broker queues for it."""
    async with MqttLink.open(subscriber_settings(port)) as link:
        await link.subscribe("cityedge/v1/#", qos=1)


async def read_queued(port: int, n: int, timeout_s: float = 10) -> list[int]:
    async with MqttLink.open(subscriber_settings(port)) as link:
        return await _read(link, n, timeout_s)


async def _read(link: MqttLink, n: int, timeout_s: float) -> list[int]:
    got: list[int] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            async for msg in link.messages():
                if msg.topic.endswith("/state"):
                    continue  # births and deaths
                e = env.decode(msg.payload)
                assert isinstance(e, env.TelemetryEnvelope)
                got.append(int(e.payload.readings[0].value))
                if len(got) >= n:
                    break
    return got


async def test_broker_away_at_start_then_everything_arrives_in_order(
    durable_broker: Broker, tmp_path: Path
) -> None:
    await subscribe_then_leave(durable_broker.port)
    durable_broker.stop()
    sink, box, metrics = make_sink(durable_broker.port, tmp_path)
    task = asyncio.create_task(sink.run())
    for i in range(300):
        await box.put(telemetry(i))
    await asyncio.sleep(0.5)
    assert sink.bridge is not None and sink.bridge.outbox.depth == 300  # stored on disk
    durable_broker.restart()
    box.close()
    await asyncio.wait_for(task, 20)
    got = await read_queued(durable_broker.port, 300)
    assert got == list(range(300))
    published = {"sink": "brain", "kind": "telemetry"}
    assert metrics.registry.get_sample_value("cityedge_published_total", published) == 300


async def test_what_is_held_survives_a_restart_of_the_sink(
    durable_broker: Broker, tmp_path: Path
) -> None:
    await subscribe_then_leave(durable_broker.port)
    durable_broker.stop()
    sink, box, _ = make_sink(durable_broker.port, tmp_path)
    task = asyncio.create_task(sink.run())
    for i in range(50):
        await box.put(telemetry(i))
    await asyncio.sleep(0.5)
    task.cancel()  # the gateway stops (or dies) with the broker away
    with contextlib.suppress(asyncio.CancelledError):
        await task
    durable_broker.restart()
    sink, box, _ = make_sink(durable_broker.port, tmp_path)
    task = asyncio.create_task(sink.run())
    for i in range(50, 60):
        await box.put(telemetry(i))
    box.close()
    await asyncio.wait_for(task, 20)
    got = await read_queued(durable_broker.port, 60)
    assert got == list(range(60))


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"commands": {"keys": {"ops": "c2hvcnQ"}}}, "expected 32 bytes"),
        ({"commands": {"keys": {"ops": "!!not base64!!"}}}, "expected 32 bytes"),
        ({"outbox": {"budget_bytes": 1000}}, "greater than or equal to 65536"),
        ({"outbox": {"durability": "sometimes"}}, "'group' or 'fsync'"),
        ({"outbox": {"group_commit_ms": 0}}, "greater than or equal to 1"),
        ({"outbox": {"budget": 1}}, "Extra inputs"),
        ({"wait_for_ingest": "a/b"}, "pattern"),
    ],
)
def test_bad_sink_settings_are_refused_naming_the_field(
    patch: dict[str, object], message: str
) -> None:
    from pydantic import ValidationError

    base = {"type": "mqtt", "name": "brain", "host": "127.0.0.1"}
    with pytest.raises(ValidationError, match=message):
        MqttSinkConfig.model_validate({**base, **patch})


def test_command_keys_become_public_keys_and_the_outbox_path_follows_the_site(
    tmp_path: Path,
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge.mqtt_sink.sink import bridge_settings
    from protocols.signed import b64url, public_key_raw

    key = Ed25519PrivateKey.generate()
    cfg = MqttSinkConfig.model_validate(
        {
            "type": "mqtt",
            "name": "brain",
            "host": "h",
            "commands": {"keys": {"ops": b64url(public_key_raw(key))}},
            "outbox": {"durability": "fsync"},
        }
    )
    s = bridge_settings(cfg, "site", "gw", tmp_path)
    assert public_key_raw(s.command_keys["ops"]) == public_key_raw(key)
    assert s.outbox_path == tmp_path / "cityedge-state" / "outbox-brain.db"
    assert s.group_commit_ms == 0 and s.link.client_id == "site-gw"
