"""PostgreSQL's ``events``: one partition per day, made ahead, and dropped whole past retention.

**The partition key is the envelope id.** An envelope id is a UUIDv7 (:mod:`protocols.ids`):
its first 48 bits are the Unix milliseconds it was made at, and PostgreSQL compares UUIDs byte
by byte, so the ids of one UTC day are exactly the range ``[day 00:00, next day 00:00)`` of
UUIDs whose other 80 bits are zero. ``events`` is ``PARTITION BY RANGE (id)`` with these bounds:
partitioned by time (the time the gateway made the envelope), and still ``PRIMARY KEY (id)``.

Why not ``PARTITION BY RANGE (time)``: PostgreSQL needs the partition column in every unique
key, so the key would be ``(id, time)``, and ``ON CONFLICT`` would see a duplicate only when it
carries the same ``time``; one id sent again with another time (a gateway that rebuilt an
envelope, a forged one) would be stored twice, and a dedupe table beside it would cost a second
index on every write plus deletes at every retention pass. Keyed by id, every copy of an id lands
in the same partition, so ``INSERT … ON CONFLICT (id) DO NOTHING`` drops it whichever worker
wrote it first, whatever its ``time`` (the operator's time queries use the indexes of each
partition; they are not pruned by partition).

An id outside every day partition (made before the oldest day kept, after the days made ahead, or
not a UUIDv7 at all) lands in the ``DEFAULT`` partition ``events_other``; when the day it belongs
to is made later, its rows move there in the same transaction. Retention drops the partitions
whose whole day is older than ``retention_days`` and deletes the same range from
``events_other``.

Maintenance runs under a transaction-level advisory lock, tried without waiting: of several
workers one does it, the others go on storing. Its DDL waits at most ``lock_timeout_s`` for
readers of ``events``; when it cannot, it is tried again at the next pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

PARTITIONED = "PARTITION BY RANGE (id)"
OTHER = "events_other"
_MAINTAIN_LOCK = 424243  # beside the schema's 424242
_NAME = "events_p"  # events_pYYYYMMDD


@dataclass(frozen=True)
class PartitionOptions:
    days_ahead: int = 7  # partitions made for today and this many days after it
    retention_days: int = 0  # days kept (today counts); 0: keep every day
    every_s: float = 3600.0  # a worker holding the lock repeats the pass this often
    lock_timeout_s: float = 5.0  # how long its DDL waits for readers of events

    def check(self) -> None:
        if self.days_ahead < 1:
            raise ValueError(f"days ahead must be at least 1, not {self.days_ahead}")
        if self.retention_days < 0:
            raise ValueError(
                f"retention days must be 0 (keep all) or more, not {self.retention_days}"
            )


@dataclass(frozen=True)
class Maintenance:
    made: list[str]
    dropped: list[str]
    moved: int  # rows moved from events_other into a day made now
    skipped: bool = False  # another worker held the lock


def day_bound(day: date) -> str:
    """The smallest UUID of ``day`` (00:00 UTC): its Unix milliseconds, then 80 zero bits."""
    ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    h = f"{ms:012x}" + "0" * 20
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def partition_name(day: date) -> str:
    return f"{_NAME}{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    if not name.startswith(_NAME):
        return None
    try:
        return datetime.strptime(name[len(_NAME) :], "%Y%m%d").replace(tzinfo=UTC).date()
    except ValueError:
        return None


async def events_kind(conn: Any) -> str | None:
    """``'p'`` partitioned, ``'r'`` a plain table (an older cityedge), None: no table yet."""
    cur = await conn.execute("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('events')")
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def maintain(conn: Any, now: datetime, opts: PartitionOptions) -> Maintenance:
    """Make today's partition and ``days_ahead`` more, drop those past retention; one transaction,
    skipped when another worker is doing it."""
    async with conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", [_MAINTAIN_LOCK])
        (got,) = await cur.fetchone()
        if not got:
            return Maintenance([], [], 0, skipped=True)
        await conn.execute(f"SET LOCAL lock_timeout = '{int(opts.lock_timeout_s * 1000)}ms'")
        today = now.astimezone(UTC).date()
        existing = await _partitions(conn)
        made: list[str] = []
        moved = 0
        for k in range(opts.days_ahead + 1):
            day = today + timedelta(days=k)
            if day in existing:
                continue
            moved += await _make(conn, day)
            made.append(partition_name(day))
        dropped: list[str] = []
        if opts.retention_days:
            first_kept = today - timedelta(days=opts.retention_days - 1)
            for day in sorted(d for d in existing if d < first_kept):
                await conn.execute(f"DROP TABLE {partition_name(day)}")
                dropped.append(partition_name(day))
            await conn.execute(
                f"DELETE FROM {OTHER} WHERE id < %s::uuid",  # noqa: S608 - fixed name
                [day_bound(first_kept)],
            )
    if made or dropped:
        log.info("events partitions: made %s, dropped %s", made or "none", dropped or "none")
    return Maintenance(made, dropped, moved)


async def _partitions(conn: Any) -> set[date]:
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('events')"
    )
    return {d for (name,) in await cur.fetchall() if (d := day_of(name)) is not None}


async def _make(conn: Any, day: date) -> int:
    """Make ``day``'s partition; rows of that day in ``events_other`` move into it (PostgreSQL
    refuses a new partition while the default one holds rows of its range)."""
    lo, hi = day_bound(day), day_bound(day + timedelta(days=1))
    name = partition_name(day)
    cur = await conn.execute(
        f"SELECT count(*) FROM {OTHER} WHERE id >= %s::uuid AND id < %s::uuid",  # noqa: S608
        [lo, hi],
    )
    (n,) = await cur.fetchone()
    if not n:
        await conn.execute(
            f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ('{lo}') TO ('{hi}')"
        )
        return 0
    await conn.execute(f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS)")
    await conn.execute(
        f"WITH m AS (DELETE FROM {OTHER} WHERE id >= %s::uuid AND id < %s::uuid RETURNING *) "  # noqa: S608
        f"INSERT INTO {name} SELECT * FROM m",
        [lo, hi],
    )
    await conn.execute(
        f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')"
    )
    return int(n)


# what :func:`migrate` moves: ``events`` as cityedge made it before partitions (tests and
# ``bench/pg_store.py`` make it to show the move and to compare with)
PLAIN_EVENTS = """
CREATE TABLE events (
  n BIGSERIAL PRIMARY KEY, id UUID NOT NULL UNIQUE,
  site TEXT NOT NULL, gateway TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
  time TIMESTAMPTZ NOT NULL, session BIGINT, seq BIGINT, pos BIGINT,
  received_at TIMESTAMPTZ NOT NULL DEFAULT now(), worker TEXT NOT NULL, envelope JSONB NOT NULL);
CREATE INDEX events_session ON events (site, gateway, session, seq);
CREATE INDEX events_device_time ON events (site, gateway, device, kind, time);
"""

_ID_DAY = (
    "SELECT DISTINCT (to_timestamp(('x' || lpad(substr(replace(id::text, '-', ''), 1, 12), 16, "
    "'0'))::bit(64)::bigint / 1000.0) AT TIME ZONE 'UTC')::date FROM events_unpartitioned "
    "WHERE substr(id::text, 15, 1) = '7'"
)


async def migrate(conn: Any, make_schema: str) -> int:
    """Turn an older cityedge's plain ``events`` into the partitioned one (inside the caller's
    transaction, under its schema lock): the old table is renamed ``events_unpartitioned`` (its
    indexes get an ``old_`` prefix), ``make_schema`` makes the new one, a partition is made for
    every day the old ids hold, and every row is copied with its ``n``. The old table is left for
    the operator to check and drop. Returns the rows copied."""
    await conn.execute("ALTER TABLE events RENAME TO events_unpartitioned")
    cur = await conn.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'events_unpartitioned'"
    )
    for (ix,) in await cur.fetchall():
        await conn.execute(f'ALTER INDEX "{ix}" RENAME TO "old_{ix[:50]}"')
    await conn.execute(make_schema)
    days = [d for (d,) in await (await conn.execute(_ID_DAY)).fetchall()]
    for day in sorted(set(days) - await _partitions(conn)):
        await _make(conn, day)
    cols = (
        "n, id, site, gateway, device, kind, time, session, seq, pos, received_at, worker, envelope"
    )
    cur = await conn.execute(
        f"INSERT INTO events ({cols}) SELECT {cols} FROM events_unpartitioned ORDER BY n "  # noqa: S608
        "ON CONFLICT (id) DO NOTHING"
    )
    copied = int(cur.rowcount)
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('events', 'n'), "
        "greatest((SELECT max(n) FROM events), 1))"
    )
    log.warning(
        "events: %d rows of the unpartitioned table copied into the partitioned one; "
        "the old table is events_unpartitioned (drop it once checked)",
        copied,
    )
    return copied
