"""PostgreSQL's ``events`` partitioned by day (the id's UUIDv7 time): partitions made ahead,
retention dropping whole days, each id stored once across workers and partitions, an older
unpartitioned table refused or migrated. Against a real PostgreSQL (the ``pg_url`` fixture)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cloud_bridge.citybrain.ingest import classify
from cloud_bridge.citybrain.store import Batch, Incoming, PgStore, WriteResult
from cloud_bridge.citybrain.store.pg_partitions import PLAIN_EVENTS, PartitionOptions, day_bound
from cloud_bridge.citybrain.store.postgres import OldEventsTable
from cloud_bridge.link import Message
from protocols import envelope as env
from protocols.ids import uuid7_from_parts

DAY = datetime(2026, 11, 24, tzinfo=UTC)
TOPIC = "cityedge/v1/s/g/telemetry/d"


@dataclass
class Clock:
    t: datetime

    def __call__(self) -> datetime:
        return self.t


def envelope(made: datetime, n: int, *, time: datetime | None = None) -> Incoming:
    e = env.TelemetryEnvelope(
        id=uuid7_from_parts(int(made.timestamp() * 1000), n),
        site="s",
        gateway="g",
        device="d",
        time=time or made,
        payload=env.TelemetryPayload(readings=[env.PointValue(point="p", value=n)]),
        link=env.LinkInfo(session=1, seq=n, pos=n),
    )
    return Incoming(e, e.model_dump_json().encode())


def rows(url: str, sql: str, args: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, args or []).fetchall())


def partitions(url: str) -> list[str]:
    return [
        r[0]
        for r in rows(
            url,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass ORDER BY 1",
        )
    ]


@pytest.fixture
async def clock_store(pg_url: str) -> AsyncIterator[tuple[PgStore, Clock]]:
    clock = Clock(DAY + timedelta(hours=8))
    store = await PgStore.connect(
        pg_url, partitions=PartitionOptions(days_ahead=2, retention_days=3), now=clock
    )
    yield store, clock
    await store.close()


async def test_partitions_are_made_ahead_with_the_operator_indexes(
    pg_url: str, clock_store: tuple[PgStore, Clock]
) -> None:
    assert partitions(pg_url) == [
        "events_other",
        "events_p20261124",
        "events_p20261125",
        "events_p20261126",
    ]
    # the operator's and the ingest's indexes are on every day's partition
    for name in ("events_p20261124", "events_p20261126"):
        idx = {
            r[0]
            for r in rows(pg_url, "SELECT indexdef FROM pg_indexes WHERE tablename = %s", [name])
        }
        for cols in (
            "(id)",
            "(site, gateway, session, seq)",
            '(site, gateway, device, kind, "time")',
            "(site, gateway, \"time\") WHERE (kind = 'alarm'::text)",
        ):
            assert any(i.endswith(cols) for i in idx), (name, cols, idx)
    # a second worker starting finds them made: nothing to do, nothing fails
    again = await PgStore.connect(pg_url, partitions=PartitionOptions(days_ahead=2))
    try:
        m = await again.maintain()
        assert (m.made, m.dropped) == ([], [])
    finally:
        await again.close()


async def test_a_day_made_later_takes_its_rows_from_the_default_partition(
    pg_url: str, clock_store: tuple[PgStore, Clock]
) -> None:
    store, clock = clock_store
    late = DAY + timedelta(days=4, hours=1)  # a gateway clock ahead of the days made
    r = await store.write(Batch(events=[envelope(late, 1)]), "w1")
    assert r.stored == 1
    assert rows(pg_url, "SELECT count(*) FROM events_other") == [(1,)]
    clock.t = DAY + timedelta(days=2, hours=1)  # the next pass makes 26..28
    m = await store.maintain()
    assert "events_p20261128" in m.made and m.moved == 1
    assert rows(pg_url, "SELECT count(*) FROM events_other") == [(0,)]
    assert rows(pg_url, "SELECT count(*) FROM events_p20261128") == [(1,)]
    # and a duplicate of it is still a duplicate
    r = await store.write(Batch(events=[envelope(late, 1)]), "w2")
    assert (r.stored, r.duplicates) == (0, 1)


async def test_retention_drops_whole_days_on_the_writers_clock(
    pg_url: str, clock_store: tuple[PgStore, Clock]
) -> None:
    store, clock = clock_store
    old = DAY - timedelta(days=5)  # before the first partition: kept in events_other
    await store.write(
        Batch(events=[envelope(DAY + timedelta(hours=h), h + 1) for h in range(3)]), "w"
    )
    await store.write(Batch(events=[envelope(DAY + timedelta(days=1), 10)]), "w")
    await store.write(Batch(events=[envelope(old, 20)]), "w")
    assert rows(pg_url, "SELECT count(*) FROM events") == [(5,)]
    # three days later, a write past the hourly pass drops the 24th (kept: 25th, 26th, 27th)
    clock.t = DAY + timedelta(days=3, hours=8)
    await store.write(Batch(events=[envelope(clock.t, 30)]), "w")
    names = partitions(pg_url)
    assert "events_p20261124" not in names and "events_p20261125" in names
    assert "events_p20261129" in names  # and made ahead again
    kept = rows(pg_url, "SELECT seq FROM events ORDER BY seq")
    assert kept == [(10,), (30,)]  # the 24th's three and the old one in events_other are gone


async def test_each_id_is_stored_once_by_racing_workers_across_days(pg_url: str) -> None:
    opts = PartitionOptions(days_ahead=2)
    clock = Clock(DAY + timedelta(hours=23))
    a = await PgStore.connect(pg_url, partitions=opts, now=clock)
    b = await PgStore.connect(pg_url, partitions=opts, now=clock)
    try:
        midnight = DAY + timedelta(days=1)
        # ids on both sides of midnight, and one sent again with another envelope time
        evs = [envelope(midnight + timedelta(milliseconds=k - 100), k + 1) for k in range(200)]
        moved = envelope(
            midnight - timedelta(milliseconds=1), 100, time=midnight + timedelta(days=1)
        )
        assert evs[99].envelope.id == moved.envelope.id
        results: list[WriteResult] = []
        for k in range(0, 200, 20):  # overlapping batches, written at once by both
            part = evs[max(0, k - 10) : k + 20]
            results += await asyncio.gather(
                a.write(Batch(events=part), "a"),
                b.write(Batch(events=[*reversed(part), moved]), "b"),
            )
        assert sum(r.stored for r in results) == 200
        assert rows(pg_url, "SELECT count(*), count(DISTINCT id) FROM events") == [(200, 200)]
        per_day = dict(
            rows(pg_url, "SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1")
        )
        assert per_day == {"events_p20261124": 100, "events_p20261125": 100}
        # the copy with the next day's time was a duplicate too: one row, in its id's day
        assert rows(
            pg_url, "SELECT tableoid::regclass::text FROM events WHERE id = %s", [moved.envelope.id]
        ) == [("events_p20261124",)]
        s = await a.summary()
        assert s.events == {"telemetry": 200}
        assert s.duplicates == sum(r.duplicates for r in results)
    finally:
        await a.close()
        await b.close()


async def test_a_malformed_envelope_still_goes_to_the_dead_letters(
    pg_url: str, clock_store: tuple[PgStore, Clock]
) -> None:
    store, _ = clock_store
    batch = Batch()
    good = envelope(DAY + timedelta(hours=1), 1)
    classify(Message(TOPIC, good.raw, 1, False), batch)
    classify(Message(TOPIC, b'{"kind":"telemetry"}', 1, False), batch)
    r = await store.write(batch, "w")
    assert (r.stored, r.duplicates) == (1, 0)
    assert rows(pg_url, "SELECT topic, reason LIKE 'invalid envelope%%' FROM dead_letters") == [
        (TOPIC, True)
    ]


def old_database(url: str, evs: list[Incoming]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PLAIN_EVENTS)
        for i in evs:
            e = i.envelope
            conn.execute(
                "INSERT INTO events (id, site, gateway, device, kind, time, session, seq, pos, "
                "worker, envelope) VALUES (%s, 's', 'g', 'd', 'telemetry', %s, 1, %s, %s, 'old', %s)",
                [e.id, e.time, e.link and e.link.seq, e.link and e.link.pos, i.raw.decode()],
            )


async def test_an_old_unpartitioned_table_is_refused_then_migrated(pg_url: str) -> None:
    evs = [envelope(DAY - timedelta(days=d), d + 1) for d in range(3)]
    old_database(pg_url, evs)
    with pytest.raises(OldEventsTable, match="older cityedge"):
        await PgStore.connect(pg_url)
    assert rows(pg_url, "SELECT count(*) FROM events") == [(3,)]  # untouched

    store = await PgStore.connect(pg_url, migrate=True, now=lambda: DAY)
    try:
        assert rows(pg_url, "SELECT count(*) FROM events_unpartitioned") == [(3,)]
        got = rows(pg_url, "SELECT n, seq, tableoid::regclass::text FROM events ORDER BY n")
        assert got == [
            (1, 1, "events_p20261124"),
            (2, 2, "events_p20261123"),
            (3, 3, "events_p20261122"),
        ]
        r = await store.write(Batch(events=[evs[1], envelope(DAY, 9)]), "w")
        assert (r.stored, r.duplicates) == (1, 1)
        ((n,),) = rows(pg_url, "SELECT n FROM events WHERE seq = 9")
        assert n > 3  # the storage order goes on after the old rows
    finally:
        await store.close()
    again = await PgStore.connect(pg_url, migrate=True)  # migrated once: nothing more to do
    await again.close()
    assert rows(pg_url, "SELECT count(*) FROM events") == [(4,)]


def test_the_ingest_names_the_old_table_and_what_to_do(pg_url: str) -> None:
    old_database(pg_url, [])
    p = subprocess.run(
        [sys.executable, "-m", "cityedge", "ingest", "--db", pg_url, "--broker", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert p.returncode != 0
    assert "CE601" in p.stderr and "--pg-migrate" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_bad_partition_options_are_refused_before_anything_starts() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "cityedge", "ingest", "--db", "x.db", "--pg-days-ahead", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0 and "--pg-days-ahead" in p.stderr and "Traceback" not in p.stderr


def test_day_bounds_are_the_smallest_uuid7_of_the_day() -> None:
    lo = day_bound(DAY.date())
    first = uuid7_from_parts(int(DAY.timestamp() * 1000), 0)
    last_before = uuid7_from_parts(int(DAY.timestamp() * 1000) - 1, (1 << 74) - 1)
    assert str(last_before) < lo <= str(first)
