"""The ingest's validation (pure) and its stores, SQLite and the real PostgreSQL, which must
give the same answers: dedupe by id, gateway states by session, sequence gaps; and the ingest
itself against the real mosquitto: heartbeats on its clock, its tasks its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud_bridge.citybrain.ingest import Ingest, IngestSettings, classify, holds_nul
from cloud_bridge.citybrain.store import Batch, Gap, Incoming, PgStore, SqliteStore, Store
from cloud_bridge.link import LinkSettings, Message, MqttLink
from edge.clock import VirtualClock
from protocols import envelope as env
from protocols import topics
from protocols.ids import Uuid7Generator
from protocols.session import GatewayState, HostState, LinkState, encode_state
from sim.localsite import Broker

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
IDS = Uuid7Generator()
TOPIC = "cityedge/v1/s/g/telemetry/d"


def envelope(session: int | None = None, seq: int = 1, pos: int = 1) -> env.TelemetryEnvelope:
    e = env.TelemetryEnvelope(
        id=IDS.new(1_795_000_000_000 + pos),
        site="s",
        gateway="g",
        device="d",
        time=NOW,
        payload=env.TelemetryPayload(readings=[env.PointValue(point="p", value=pos)]),
    )
    if session is None:
        return e
    return e.model_copy(update={"link": env.LinkInfo(session=session, seq=seq, pos=pos)})


def incoming(e: env.EnvelopeModel) -> Incoming:
    raw = e.model_dump_json(exclude_none=False).encode()
    return Incoming(e, raw)


def resend(e: env.EnvelopeModel, session: int, seq: int) -> Incoming:
    assert e.link is not None
    return incoming(
        e.model_copy(update={"link": env.LinkInfo(session=session, seq=seq, pos=e.link.pos)})
    )


def unavailable(reason: str) -> env.AvailabilityEnvelope:
    return env.AvailabilityEnvelope(
        id=IDS.new(1_795_000_000_000),
        site="s",
        gateway="g",
        device="d",
        time=NOW,
        payload=env.AvailabilityPayload(
            state=env.AvailabilityState.UNAVAILABLE, reason=reason, failed_polls=3, since=NOW
        ),
    )


def state(s: LinkState, session: int) -> GatewayState:
    return GatewayState(state=s, site="s", gateway="g", session=session, time=NOW)


DEAD = [
    ("cityedge/v2/s/g/telemetry/d", env.encode(envelope()), "topic"),
    ("cityedge/v1/s/g/telemetry", env.encode(envelope()), "topic"),
    (TOPIC, b"not json", "invalid envelope"),
    (TOPIC, b'{"kind":"telemetry"}', "invalid envelope"),
    ("cityedge/v1/s/other/telemetry/d", env.encode(envelope()), "came on s/other"),
    ("cityedge/v1/s/g/alarm/d", env.encode(envelope()), "came on"),
    ("cityedge/v1/s/g/state", b"{}", "invalid state"),
    ("cityedge/v1/s/h/state", encode_state(state(LinkState.ONLINE, 1)), "another gateway"),
    ("cityedge/v1/s/g/cmd/res", b"[]", "invalid command reply"),
    # valid messages that decode, but PostgreSQL refuses U+0000 (jsonb, text): the whole
    # batch would fail and be retried for ever
    ("cityedge/v1/s/g/availability/d", env.encode(unavailable("no reply\x00")), "U+0000"),
    (
        "cityedge/v1/s/g/state",
        encode_state(state(LinkState.ONLINE, 1).model_copy(update={"reason": "a\x00b"})),
        "U+0000",
    ),
]


@pytest.mark.parametrize(("topic", "payload", "why"), DEAD)
def test_what_cannot_be_stored_is_a_dead_letter_with_the_reason(
    topic: str, payload: bytes, why: str
) -> None:
    batch = Batch()
    classify(Message(topic, payload, 1, False), batch)
    assert len(batch) == 1 and len(batch.dead) == 1
    assert why in batch.dead[0].reason


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    assert not holds_nul(b'{"a": "\\\\u0000"}')  # a backslash, then the text u0000
    assert holds_nul(b'{"a": ["x", {"b": "\\u0000"}]}')
    assert not holds_nul(b"not json \\u0000")
    # hostile nesting: refused by the bounded reader, not a RecursionError in the ingest
    assert not holds_nul(b"[" * 200_000 + b'"\\u0000"' + b"]" * 200_000)


def test_good_messages_are_sorted_by_what_they_are() -> None:
    batch = Batch()
    classify(Message(TOPIC, env.encode(envelope()), 1, False), batch)
    classify(
        Message("cityedge/v1/s/g/state", encode_state(state(LinkState.ONLINE, 2)), 1, True), batch
    )
    classify(Message("cityedge/v1/s/g/cmd/req", b"anything", 1, False), batch)  # not ours to store
    assert (len(batch.events), len(batch.states), len(batch.dead)) == (1, 1, 0)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "sqlite":
        s = await SqliteStore.connect(tmp_path / "ingest.db")
    else:
        s = await PgStore.connect(request.getfixturevalue("pg_url"))
    yield s
    await s.close()


async def test_duplicates_are_counted_never_stored(store: Store) -> None:
    a, b = envelope(1, 1, 1), envelope(1, 2, 2)
    r1 = await store.write(Batch(events=[incoming(a), incoming(b), incoming(a)]), "w1")
    r2 = await store.write(Batch(events=[incoming(b)]), "w2")
    assert (r1.stored, r1.duplicates, r2.stored, r2.duplicates) == (2, 1, 0, 1)
    s = await store.summary()
    assert s.events == {"telemetry": 2} and s.duplicates == 2
    assert s.workers == {
        "w1": {"stored": 2, "duplicates": 1, "dead": 0},
        "w2": {"stored": 0, "duplicates": 1, "dead": 0},
    }


async def test_gateway_state_follows_the_highest_session(store: Store) -> None:
    for st in (state(LinkState.ONLINE, 2), state(LinkState.OFFLINE, 1), state(LinkState.ONLINE, 1)):
        await store.write(Batch(states=[st]), "w1")
    gw = (await store.summary()).gateways
    assert [(g["state"], g["session"]) for g in gw] == [("online", 2)]  # a late death of 1: ignored
    await store.write(Batch(states=[state(LinkState.OFFLINE, 2)]), "w1")
    assert [(g["state"], g["session"]) for g in (await store.summary()).gateways] == [
        ("offline", 2)
    ]


async def test_gaps_of_ended_sessions_are_noticed_and_resends_fill_them(store: Store) -> None:
    await store.write(Batch(states=[state(LinkState.ONLINE, 1)]), "w1")
    e = [envelope(1, seq, seq) for seq in range(1, 6)]
    # session 1 delivered seq 1, 2, 4, 5: seq 3 was lost between broker and ingest
    await store.write(Batch(events=[incoming(x) for x in (e[0], e[1], e[3], e[4])]), "w1")
    # session 2 resent 4 and 5 (as seq 1, 2), then a new one as seq 3
    await store.write(Batch(states=[state(LinkState.ONLINE, 2)]), "w1")
    new = envelope(2, 3, 6)
    await store.write(Batch(events=[resend(e[3], 2, 1), resend(e[4], 2, 2), incoming(new)]), "w1")
    found, still_open = await store.check_gaps({("s", "g", 1), ("s", "g", 2)})
    assert found == [Gap("s", "g", 1, 1, 5)]
    assert still_open == {("s", "g", 2)}  # no gap there: the resends' numbers count
    await store.write(Batch(states=[state(LinkState.OFFLINE, 2)]), "w1")
    found, still_open = await store.check_gaps(still_open)
    assert (found, still_open) == ([], set())
    assert (await store.summary()).gaps == [Gap("s", "g", 1, 1, 5)]


def ingest_settings(port: int) -> IngestSettings:
    link = LinkSettings(
        "127.0.0.1",
        port,
        client_id="ingest-w1",
        connect_timeout_s=5,
        clean_session=False,
        session_expiry_s=60,
        manual_ack=True,
    )
    return IngestSettings(link=link, worker="w1", heartbeat_s=2.0, reconnect_max_s=0.5)


async def test_the_ingest_beats_on_its_clock_stores_and_says_goodbye(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """Heartbeats are timed and stamped by the injected clock, and the worker's offline comes
    when it stops (the heartbeat task is the ingest's own, no longer left running)."""
    clock = VirtualClock(start_wall=NOW.timestamp())
    store = await SqliteStore.connect(tmp_path / "ingest.db")
    stop = asyncio.Event()
    watcher = LinkSettings("127.0.0.1", mosquitto.port, client_id="watcher")
    try:
        async with MqttLink.open(watcher) as brain:
            await brain.subscribe(topics.host_state_topic("ingest", "w1"), qos=1)
            ingest = Ingest(ingest_settings(mosquitto.port), store, clock)
            run = asyncio.create_task(ingest.run(stop))
            first = HostState.model_validate_json((await brain.receive(10)).payload)
            assert (first.state, first.worker, first.time) == (LinkState.ONLINE, "w1", NOW)
            with pytest.raises(TimeoutError):  # the clock has not moved: no second beat
                await brain.receive(0.5)
            await clock.advance(2.0)
            second = HostState.model_validate_json((await brain.receive(10)).payload)
            assert second.time == datetime.fromtimestamp(NOW.timestamp() + 2, UTC)

            await brain.publish(TOPIC, env.encode(envelope(1, 1, 1)))
            async with asyncio.timeout(10):
                while ingest.stored == 0:  # noqa: ASYNC110 - a figure the ingest keeps
                    await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(run, 10)
            last = HostState.model_validate_json((await brain.receive(10)).payload)
            assert last.state is LinkState.OFFLINE
    finally:
        await store.close()


async def test_a_crash_in_the_heartbeat_ends_the_ingest_with_it(
    mosquitto: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Ingest, link: MqttLink) -> None:
        raise RuntimeError("heartbeat broke")

    monkeypatch.setattr(Ingest, "_heartbeat", broken)
    store = await SqliteStore.connect(tmp_path / "ingest.db")
    try:
        ingest = Ingest(ingest_settings(mosquitto.port), store)
        with pytest.raises(ExceptionGroup) as crash:
            await asyncio.wait_for(ingest.run(asyncio.Event()), 10)
        assert crash.value.subgroup(RuntimeError) is not None  # before: it died unseen
    finally:
        await store.close()
