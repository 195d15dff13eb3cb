"""The operator page's questions to the store, on SQLite and on the real PostgreSQL: the same
answers from both, written through the ingest's own write path, read through a read-only
connection of the page's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.citybrain.store import Batch, DeadLetter, Incoming, Store, StoreError, open_store
from cloud_bridge.citybrain.store.operator_common import OperatorReads, Versions, open_reads
from protocols import envelope as env
from protocols.ids import Uuid7Generator
from protocols.session import GatewayState, LinkState, OutboxClassStats, OutboxStats

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
CST = timedelta(hours=8)  # a gateway that writes its times in China Standard Time


@dataclass
class Db:
    store: Store
    reads: OperatorReads
    ids: Uuid7Generator


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    url = (
        str(tmp_path / "ingest.db")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    store = await open_store(url)
    reads = await open_reads(url)
    yield Db(store, reads, Uuid7Generator())
    await reads.close()
    await store.close()


def outbox(depth: int, dropped: int) -> OutboxStats:
    return OutboxStats(
        depth=depth,
        bytes=depth * 100,
        budget_bytes=10_000_000,
        dropped=dropped,
        last_pos=depth + dropped,
        classes={
            "telemetry": OutboxClassStats(depth=depth, bytes=depth * 100, dropped=dropped),
            "event": OutboxClassStats(depth=0, bytes=0, dropped=0),
        },
    )


def birth(gw: str, session: int, box: OutboxStats | None, t: datetime = T0) -> GatewayState:
    return GatewayState(
        state=LinkState.ONLINE, site="s", gateway=gw, session=session, time=t, outbox=box
    )


def death(gw: str, session: int, reason: str, t: datetime) -> GatewayState:
    return GatewayState(
        state=LinkState.OFFLINE, site="s", gateway=gw, session=session, time=t, reason=reason
    )


def linked(e: Any, session: int, seq: int) -> Incoming:
    e = e.model_copy(update={"link": env.LinkInfo(session=session, seq=seq, pos=seq)})
    return Incoming(e, e.model_dump_json().encode())


def telemetry(d: Db, gw: str, device: str, t: datetime, **values: float | bool) -> Any:
    return env.TelemetryEnvelope(
        id=d.ids.new(int(t.timestamp() * 1000)),
        site="s",
        gateway=gw,
        device=device,
        time=t,
        payload=env.TelemetryPayload(
            readings=[
                env.PointValue(point=k, value=v, unit="pH" if k == "ph" else None)
                for k, v in values.items()
            ]
        ),
    )


def alarm(
    d: Db, gw: str, device: str, rule: str, state: str, t: datetime, severity: str = "major"
) -> Any:
    return env.AlarmEnvelope(
        id=d.ids.new(int(t.timestamp() * 1000)),
        site="s",
        gateway=gw,
        device=device,
        time=t,
        payload=env.AlarmPayload(
            rule=rule,
            point="ph",
            state=env.AlarmState(state),
            severity=env.Severity(severity),
            value=9.5 if state == "raised" else 8.0,
            limit=9.0,
            direction="above",
            unit="pH",
            since=t,
        ),
    )


async def scene(d: Db) -> None:
    """gw-a: online in session 3 (birth: 12 waiting, 4 dropped), telemetry and alarms;
    gw-b: session 1 ended by a lost connection, seq 3 of 4 went to dead letters (a gap);
    gw-c: a birth without outbox figures."""
    b = Batch()
    b.states += [birth("gw-a", 3, outbox(12, 4)), birth("gw-b", 1, outbox(0, 0))]
    b.states.append(birth("gw-c", 7, None))
    # gw-a's sonde: ph every 10 minutes, one reading written in CST (same instants)
    for i, v in enumerate([7.0, 7.5, 8.0, 8.5]):
        t = T0 + timedelta(minutes=10 * i)
        written = t.astimezone(timezone(CST)) if i == 2 else t
        e = telemetry(d, "gw-a", "sonde", written, ph=v, pump=i % 2 == 1)
        b.events.append(linked(e, 3, i + 1))
    b.events.append(linked(telemetry(d, "gw-a", "meter", T0, kwh=1.0), 3, 5))
    # alarms of gw-a's sonde: ph-high raised, cleared, raised again (open); do-low raised and
    # cleared (closed); gw-b's pump: critical, raised (open, older)
    b.events += [
        linked(alarm(d, "gw-a", "sonde", "ph-high", "raised", T0 + timedelta(minutes=1)), 3, 6),
        linked(alarm(d, "gw-a", "sonde", "ph-high", "cleared", T0 + timedelta(minutes=2)), 3, 7),
        linked(alarm(d, "gw-a", "sonde", "do-low", "raised", T0 + timedelta(minutes=3)), 3, 8),
        linked(alarm(d, "gw-a", "sonde", "do-low", "cleared", T0 + timedelta(minutes=4)), 3, 9),
        linked(alarm(d, "gw-a", "sonde", "ph-high", "raised", T0 + timedelta(minutes=5)), 3, 10),
    ]
    crit = alarm(d, "gw-b", "pump", "dry-run", "raised", T0 - timedelta(hours=1), "critical")
    b.events += [linked(crit, 1, 1)]
    b.events += [linked(telemetry(d, "gw-b", "pump", T0, rpm=1), 1, 2)]
    b.events += [linked(telemetry(d, "gw-b", "pump", T0, rpm=3), 1, 4)]
    # seq 3 of gw-b came on the wrong topic: a dead letter carrying its link
    stray = linked(telemetry(d, "gw-b", "pump", T0, rpm=2), 1, 3)
    b.dead.append(
        DeadLetter("cityedge/v1/s/gw-b/alarm/pump", stray.raw, "envelope is s/gw-b/telemetry/pump")
    )
    b.dead.append(DeadLetter("cityedge/v1/s/gw-bb/telemetry/x", b"\xff\xfe not json", "invalid"))
    await d.store.write(b, "w1")
    await d.store.write(
        Batch(states=[death("gw-b", 1, "connection lost", T0 + timedelta(hours=1))]), "w1"
    )
    found, _ = await d.store.check_gaps({("s", "gw-b", 1), ("s", "gw-a", 3)})
    assert [(g.gateway, g.missing) for g in found] == [("gw-b", 1)]


async def test_gateways_with_state_session_last_seen_and_birth_outbox(db: Db) -> None:
    await scene(db)
    page = await db.reads.gateways()
    assert page.total == 3
    rows = {r.gateway: r for r in page.rows}
    assert [r.gateway for r in page.rows] == ["gw-b", "gw-a", "gw-c"]  # offline first
    a, b, c = rows["gw-a"], rows["gw-b"], rows["gw-c"]
    assert (a.state, a.session, b.state, b.session, b.reason) == (
        "online",
        3,
        "offline",
        1,
        "connection lost",
    )
    assert a.outbox is not None and (a.outbox["depth"], a.outbox["dropped"]) == (12, 4)
    assert a.outbox["classes"]["telemetry"]["dropped"] == 4
    assert b.outbox is not None and b.outbox["depth"] == 0  # the birth of the session that ended
    assert c.outbox is None and c.last_seen is not None
    assert a.last_seen is not None and a.born_at == T0.isoformat()
    assert datetime.fromisoformat(a.last_seen) > T0  # the ingest's clock: received just now
    offline = await db.reads.gateways(state="offline")
    assert [r.gateway for r in offline.rows] == ["gw-b"] and offline.total == 1
    found = await db.reads.gateways(search="GW-C")
    assert [r.gateway for r in found.rows] == ["gw-c"]
    second = await db.reads.gateways(offset=1, limit=1)
    assert (second.total, second.offset, [r.gateway for r in second.rows]) == (3, 1, ["gw-a"])
    assert (await db.reads.gateways(search="%")).total == 0  # no pattern characters


async def test_open_alarms_are_the_latest_raise_of_each_rule_most_urgent_first(db: Db) -> None:
    await scene(db)
    open_ = await db.reads.open_alarms()
    assert [(a.gateway, a.device, a.rule, a.severity) for a in open_] == [
        ("gw-b", "pump", "dry-run", "critical"),
        ("gw-a", "sonde", "ph-high", "major"),
    ]
    ph = open_[1]
    assert (ph.value, ph.limit, ph.unit, ph.direction, ph.state) == (
        9.5,
        9.0,
        "pH",
        "above",
        "raised",
    )
    assert ph.since == (T0 + timedelta(minutes=5)).isoformat()
    overview = await db.reads.overview()
    assert overview.open_alarms == {"critical": 1, "major": 1, "minor": 0, "warning": 0, "info": 0}
    assert overview.gateways == {"online": 2, "offline": 1}
    assert (overview.dead_letters, overview.gaps, overview.missing) == (2, 1, 1)


async def test_alarm_history_newest_first_and_per_gateway(db: Db) -> None:
    await scene(db)
    history = await db.reads.alarm_history()
    assert [(a.rule, a.state) for a in history] == [
        ("ph-high", "raised"),
        ("do-low", "cleared"),
        ("do-low", "raised"),
        ("ph-high", "cleared"),
        ("ph-high", "raised"),
        ("dry-run", "raised"),
    ]
    assert [a.rule for a in await db.reads.alarm_history(site="s", gateway="gw-b")] == ["dry-run"]
    assert len(await db.reads.alarm_history(limit=2)) == 2


async def test_dead_letters_newest_first_with_reason_and_a_safe_preview(db: Db) -> None:
    await scene(db)
    total, rows = await db.reads.dead_letters()
    assert total == 2
    assert [(r.topic, r.reason) for r in rows] == [
        ("cityedge/v1/s/gw-bb/telemetry/x", "invalid"),
        ("cityedge/v1/s/gw-b/alarm/pump", "envelope is s/gw-b/telemetry/pump"),
    ]
    assert rows[0].size == 11 and rows[0].preview == "\ufffd\ufffd not json"
    assert rows[1].preview.startswith('{"id":') and rows[1].size > len(rows[1].preview) > 200
    assert rows[0].worker == "w1" and rows[0].received_at is not None


async def test_gaps_name_the_gateway_and_what_is_known_of_why(db: Db) -> None:
    await scene(db)
    (gap,) = await db.reads.gaps()
    assert (gap.site, gap.gateway, gap.session, gap.missing, gap.highest) == ("s", "gw-b", 1, 1, 4)
    assert gap.end_reason == "connection lost"
    assert gap.ended_at == (T0 + timedelta(hours=1)).isoformat()
    # the dead letter of gw-b's session 1 (not gw-bb's, whose topic merely starts alike)
    assert gap.dead_letters == [{"reason": "envelope is s/gw-b/telemetry/pump", "count": 1}]


async def test_a_points_series_in_buckets_whatever_offset_the_gateway_wrote(db: Db) -> None:
    await scene(db)
    points = await db.reads.points("s", "gw-a")
    assert [(p.device, p.point, p.unit) for p in points] == [
        ("meter", "kwh", None),
        ("sonde", "ph", "pH"),
        ("sonde", "pump", None),
    ]
    series = await db.reads.series(
        "s", "gw-a", "sonde", "ph", T0 - timedelta(minutes=5), T0 + timedelta(minutes=35), 40
    )
    assert series.bucket_s == 60.0 and series.unit == "pH"
    assert [(p.t, p.avg, p.count) for p in series.points] == [
        ((T0 + timedelta(minutes=10 * i)).isoformat(), v, 1)
        for i, v in enumerate([7.0, 7.5, 8.0, 8.5])
    ]
    # one bucket for the whole window: min, max and mean of the four
    whole = await db.reads.series("s", "gw-a", "sonde", "ph", T0, T0 + timedelta(hours=1), 1)
    (p,) = whole.points
    assert (p.min, p.max, p.avg, p.count) == (7.0, 8.5, 7.75, 4)
    pump = await db.reads.series("s", "gw-a", "sonde", "pump", T0, T0 + timedelta(hours=1), 1)
    assert [(q.min, q.max, q.avg) for q in pump.points] == [(0.0, 1.0, 0.5)]
    # the window's start is included, its end is not
    edge = await db.reads.series("s", "gw-a", "sonde", "ph", T0, T0 + timedelta(minutes=10), 10)
    assert [q.avg for q in edge.points] == [7.0]
    assert (await db.reads.series("s", "gw-a", "sonde", "nope", T0, T0 + CST, 10)).points == []


async def test_versions_change_with_what_the_page_shows_only(db: Db) -> None:
    empty = await db.reads.versions()
    assert empty.changed(None) == ["gateways", "alarms", "dead_letters", "gaps"]
    await scene(db)
    after = await db.reads.versions()
    assert after.changed(empty) == ["gateways", "alarms", "dead_letters", "gaps"]
    b = Batch(events=[linked(telemetry(db, "gw-a", "sonde", T0, ph=7.1), 3, 11)])
    await db.store.write(b, "w1")
    assert (await db.reads.versions()).changed(after) == []  # telemetry alone changes nothing
    b = Batch(events=[linked(alarm(db, "gw-a", "sonde", "x", "raised", T0), 3, 12)])
    await db.store.write(b, "w1")
    assert (await db.reads.versions()).changed(after) == ["alarms"]
    assert isinstance(after, Versions)


async def test_the_pages_connection_cannot_write(db: Db, tmp_path: Path) -> None:
    reads: Any = db.reads

    async def pg_write(conn: Any) -> None:
        await conn.execute("DELETE FROM gateways")

    def sqlite_write(conn: Any) -> None:
        conn.execute("DELETE FROM gateways")

    write = pg_write if hasattr(reads, "_lock") else sqlite_write
    with pytest.raises(StoreError, match=r"(?i)read.?only"):
        await reads._query(write)


async def test_no_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no SQLite database"):
        await open_reads(str(tmp_path / "none.db"))
