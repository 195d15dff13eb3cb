"""The ingest's NATS transport with a fake pull subscription and the real SQLite store: a
batch is acknowledged only after its transaction committed, never while the database fails."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_bridge.citybrain.ingest import Ingest, IngestSettings
from cloud_bridge.citybrain.ingest_nats import FILTER, NatsIngest, NatsSettings, message_of
from cloud_bridge.citybrain.store import Batch, SqliteStore, StoreError, WriteResult
from cloud_bridge.link import LinkSettings
from protocols import envelope as env
from protocols import topics
from protocols.ids import Uuid7Generator

IDS = Uuid7Generator()


@dataclass
class FakeMsg:
    subject: str
    data: bytes
    acked: bool = False

    async def ack(self) -> None:
        self.acked = True


@dataclass
class FakeSub:
    """Hands out what it holds, in fetches of at most ``batch``; then nothing (a timeout)."""

    msgs: list[FakeMsg]
    fetched: list[int] = field(default_factory=list)

    async def fetch(self, batch: int, timeout: float) -> list[FakeMsg]:  # noqa: ASYNC109 - nats-py's
        if not self.msgs:
            await asyncio.sleep(min(timeout, 0.01))
            raise TimeoutError
        got, self.msgs = self.msgs[:batch], self.msgs[batch:]
        self.fetched.append(len(got))
        return got


def nats_msgs(n: int, gateway: str = "gw.1") -> list[FakeMsg]:
    out = []
    for i in range(1, n + 1):
        e = env.TelemetryEnvelope(
            id=IDS.new(1_795_000_000_000 + i),
            site="s",
            gateway=gateway,
            device="d",
            time="2026-11-24T08:00:00Z",
            payload=env.TelemetryPayload(readings=[env.PointValue(point="p", value=i)]),
        )
        topic = topics.data_topic("s", gateway, "telemetry", "d")
        subject = topics.NATS_MQTT_PREFIX + topics.nats_subject(topic)
        out.append(FakeMsg(subject, env.with_link(env.encode(e), 1, i, i)))
    return out


def worker(store: Any) -> NatsIngest:
    settings = IngestSettings(
        link=LinkSettings("127.0.0.1"), worker="w1", batch_max=4, reconnect_initial_s=0.01
    )
    return NatsIngest(Ingest(settings, store), NatsSettings(("nats://127.0.0.1:4222",)))


def test_the_consumer_reads_the_mqtt_layers_stream_and_maps_subjects_back() -> None:
    assert FILTER == "$MQTT.msgs.cityedge.v1.>"
    (m,) = nats_msgs(1)
    assert message_of(m).topic == "cityedge/v1/s/gw.1/telemetry/d"  # type: ignore[arg-type]


async def test_batches_are_stored_then_acknowledged(tmp_path: Path) -> None:
    store = await SqliteStore.connect(tmp_path / "i.db")
    try:
        msgs = nats_msgs(10)
        sub = FakeSub(list(msgs))
        w = worker(store)
        stop = asyncio.Event()
        w.ingest.on_batch = lambda _b: stop.set() if w.ingest.stored >= 10 else None
        await asyncio.wait_for(w._consume(sub, stop), 10)  # type: ignore[arg-type]
        assert all(m.acked for m in msgs)
        assert sum(sub.fetched) == 10 and max(sub.fetched) <= 4  # batch_max
        assert (await store.summary()).events == {"telemetry": 10}
    finally:
        await store.close()


class FailingStore:
    """A database that is away: every write fails."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.writes = 0
        self.stop = stop

    async def write(self, batch: Batch, worker: str) -> WriteResult:
        self.writes += 1
        if self.writes == 3:  # retried with backoff; then the worker is stopped
            self.stop.set()
        raise StoreError("PostgreSQL: connection refused")


async def test_nothing_is_acknowledged_while_the_database_fails() -> None:
    msgs = nats_msgs(3)
    stop = asyncio.Event()
    store = FailingStore(stop)
    w = worker(store)
    await asyncio.wait_for(w._consume(FakeSub(list(msgs)), stop), 10)  # type: ignore[arg-type]
    assert store.writes == 3
    assert not any(m.acked for m in msgs)  # JetStream hands them out again
