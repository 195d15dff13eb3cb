"""The PostgreSQL back end of the city brain's store, through psycopg 3 (async); psycopg is
imported only when a store is opened (the ``ingest`` extra). Tables: see
:mod:`cloud_bridge.citybrain.store.common`; ``events`` is partitioned by day, made ahead and
dropped past retention (:mod:`~cloud_bridge.citybrain.store.pg_partitions`).

A batch's envelopes go in by ``COPY`` into a temporary staging table, then one
``INSERT … SELECT … ON CONFLICT (id) DO NOTHING RETURNING id`` into ``events``, in the batch's
transaction: what it returns is what was new, the rest were duplicates (stored by another worker,
or earlier). Several workers racing on one id: the second waits on the first's uncommitted key and
then sees the conflict, so each id is stored once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cloud_bridge.citybrain.store import operator_pg, pg_partitions
from cloud_bridge.citybrain.store.common import (
    GAPS_SELECT,
    STATE_WHERE,
    Batch,
    Gap,
    Incoming,
    SessionKey,
    StoreError,
    Summary,
    WriteResult,
    ended,
    link_columns,
    make_summary,
    resent_rows,
    sessions_of,
    unique,
)
from cloud_bridge.citybrain.store.pg_partitions import Maintenance, PartitionOptions

# ``n``: the storage order (a sequence, no longer the key: a partitioned table's unique keys must
# hold its partition column, ``id``)
_PG_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
  n BIGSERIAL NOT NULL,
  id UUID NOT NULL PRIMARY KEY,
  site TEXT NOT NULL, gateway TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
  time TIMESTAMPTZ NOT NULL,
  session BIGINT, seq BIGINT, pos BIGINT,
  received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  worker TEXT NOT NULL,
  envelope JSONB NOT NULL) {pg_partitions.PARTITIONED};
CREATE TABLE IF NOT EXISTS {pg_partitions.OTHER} PARTITION OF events DEFAULT;
CREATE INDEX IF NOT EXISTS events_session ON events (site, gateway, session, seq);
CREATE TABLE IF NOT EXISTS resent (
  site TEXT NOT NULL, gateway TEXT NOT NULL, session BIGINT NOT NULL, seq BIGINT NOT NULL,
  PRIMARY KEY (site, gateway, session, seq));
CREATE TABLE IF NOT EXISTS dead_letters (
  n BIGSERIAL PRIMARY KEY, received_at TIMESTAMPTZ NOT NULL DEFAULT now(), worker TEXT NOT NULL,
  topic TEXT NOT NULL, payload BYTEA NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gateways (
  site TEXT NOT NULL, gateway TEXT NOT NULL, state TEXT NOT NULL, session BIGINT NOT NULL,
  since TIMESTAMPTZ NOT NULL, reason TEXT NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (site, gateway));
CREATE TABLE IF NOT EXISTS gaps (
  site TEXT NOT NULL, gateway TEXT NOT NULL, session BIGINT NOT NULL, missing BIGINT NOT NULL,
  highest BIGINT NOT NULL, noticed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (site, gateway, session));
CREATE TABLE IF NOT EXISTS replies (
  n BIGSERIAL PRIMARY KEY, received_at TIMESTAMPTZ NOT NULL DEFAULT now(), site TEXT NOT NULL,
  gateway TEXT NOT NULL, request TEXT, ok BOOLEAN NOT NULL, reason TEXT, body JSONB NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
  worker TEXT PRIMARY KEY, stored BIGINT NOT NULL DEFAULT 0, duplicates BIGINT NOT NULL DEFAULT 0,
  dead BIGINT NOT NULL DEFAULT 0, updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""

# one per connection; emptied at every commit (and by a rollback)
_STAGING = """
CREATE TEMPORARY TABLE IF NOT EXISTS events_in (
  id UUID NOT NULL, site TEXT NOT NULL, gateway TEXT NOT NULL,
  device TEXT NOT NULL, kind TEXT NOT NULL, time TIMESTAMPTZ NOT NULL,
  session BIGINT, seq BIGINT, pos BIGINT, envelope TEXT NOT NULL) ON COMMIT DELETE ROWS
"""
_COPY = (
    "COPY events_in (id, site, gateway, device, kind, time, session, seq, pos, envelope) FROM STDIN"
)
# in id order: two workers inserting overlapping batches take the ids' keys in the same order,
# so one waits for the other instead of deadlocking (and ``n`` follows the ids: per stream, the
# order the gateway made them)
_PG_INSERT = """
INSERT INTO events (id, site, gateway, device, kind, time, session, seq, pos, worker, envelope)
SELECT id, site, gateway, device, kind, time, session, seq, pos, %s, envelope::jsonb
FROM events_in ORDER BY id
ON CONFLICT (id) DO NOTHING
RETURNING id
"""


class OldEventsTable(StoreError):
    """``events`` is a plain table made by an older cityedge; not retried."""

    hint = (
        "start the ingest once with --pg-migrate to move it into the partitioned table "
        "(the old one is kept as events_unpartitioned), or point --db at a new database"
    )


class PgStore:
    """PostgreSQL through psycopg 3 (async)."""

    def __init__(
        self,
        conn: Any,
        partitions: PartitionOptions | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.conn = conn
        self.partitions = partitions or PartitionOptions()
        self.now = now or (lambda: datetime.now(UTC))
        self._lock = asyncio.Lock()  # one connection: one transaction at a time
        self._next_pass = 0.0  # when (Unix s of ``now``) the partitions are next looked after

    @classmethod
    async def connect(
        cls,
        url: str,
        timeout_s: float = 10.0,
        *,
        read_only: bool = False,
        partitions: PartitionOptions | None = None,
        migrate: bool = False,
        now: Callable[[], datetime] | None = None,
    ) -> PgStore:
        """Open (and make, or with ``migrate`` move an older unpartitioned ``events`` into) the
        store's tables, then look after the partitions once."""
        try:
            import psycopg
        except ModuleNotFoundError as err:
            raise StoreError(
                "PostgreSQL needs the Python package 'psycopg': pip install 'cityedge[ingest]'"
            ) from err
        try:
            conn = await psycopg.AsyncConnection.connect(url, connect_timeout=int(timeout_s))
            if read_only:  # a status query: no tables made, nothing written
                await conn.set_read_only(True)
                return cls(conn)
            async with conn.transaction():
                # two workers starting together must not race on CREATE TABLE IF NOT EXISTS
                await conn.execute("SELECT pg_advisory_xact_lock(424242)")
                schema = _PG_SCHEMA + operator_pg.SCHEMA  # the operator's page: table, indexes
                old = await pg_partitions.events_kind(conn) == "r"
                if old and migrate:
                    await pg_partitions.migrate(conn, schema)
                elif not old:
                    await conn.execute(schema)
            if old and not migrate:
                await conn.close()
                raise OldEventsTable(
                    "PostgreSQL: the table 'events' was made by an older cityedge and is not "
                    "partitioned by day"
                )
            await conn.execute(_STAGING)
            await conn.commit()
            store = cls(conn, partitions, now)
            await store._maintain()
        except psycopg.Error as err:
            raise StoreError(f"PostgreSQL: {err}".strip()) from err
        return store

    async def maintain(self) -> Maintenance:
        """Make the partitions ahead and drop those past retention now (see
        :func:`~cloud_bridge.citybrain.store.pg_partitions.maintain`)."""
        import psycopg

        async with self._lock:
            try:
                return await self._maintain()
            except psycopg.Error as err:
                raise StoreError(f"PostgreSQL: {err}".strip()) from err

    async def _maintain(self) -> Maintenance:
        import psycopg

        now = self.now()
        self._next_pass = now.timestamp() + self.partitions.every_s
        try:
            return await pg_partitions.maintain(self.conn, now, self.partitions)
        except psycopg.errors.LockNotAvailable:  # readers held events: next pass
            self._next_pass = now.timestamp() + min(60.0, self.partitions.every_s)
            return Maintenance([], [], 0, skipped=True)

    async def write(self, batch: Batch, worker: str) -> WriteResult:
        import psycopg

        async with self._lock:
            if self.now().timestamp() >= self._next_pass:
                try:
                    await self._maintain()
                except psycopg.Error as err:
                    raise StoreError(f"PostgreSQL: {err}".strip()) from err
            return await self._write(batch, worker)

    async def _write(self, batch: Batch, worker: str) -> WriteResult:
        import psycopg

        first, again = unique(batch.events)
        try:
            async with self.conn.transaction():
                inserted: set[str] = set()
                if first:
                    inserted = await self._insert_events(first, worker)
                dups = [i for i in first if str(i.envelope.id) not in inserted] + again
                if dups:
                    cur = await self.conn.execute(
                        "SELECT id, session, seq FROM events WHERE id = ANY(%s::uuid[])",
                        [[i.envelope.id for i in dups]],
                    )
                    stored = {str(r[0]): (r[1], r[2]) for r in await cur.fetchall()}
                    rows = resent_rows(dups, stored)
                    if rows:
                        async with self.conn.cursor() as c:
                            await c.executemany(
                                "INSERT INTO resent VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                                rows,
                            )
                async with self.conn.cursor() as c:
                    if batch.dead:
                        await c.executemany(
                            "INSERT INTO dead_letters (worker, topic, payload, reason) "
                            "VALUES (%s, %s, %s, %s)",
                            [(worker, d.topic, d.payload, d.reason) for d in batch.dead],
                        )
                    if batch.states:
                        await c.executemany(
                            "INSERT INTO gateways (site, gateway, state, session, since, reason) "
                            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (site, gateway) DO UPDATE "
                            "SET state = excluded.state, session = excluded.session, "
                            "since = excluded.since, reason = excluded.reason, updated_at = now() "
                            + STATE_WHERE,
                            [
                                (s.site, s.gateway, s.state.value, s.session, s.time, s.reason)
                                for s in batch.states
                            ],
                        )
                        await operator_pg.record_sessions(c, batch.states)  # the operator's page
                    if batch.replies:
                        await c.executemany(
                            "INSERT INTO replies (site, gateway, request, ok, reason, body) "
                            "VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
                            [
                                (r.site, r.gateway, r.request, r.ok, r.reason, r.model_dump_json())
                                for r in batch.replies
                            ],
                        )
                await self.conn.execute(
                    "INSERT INTO workers (worker, stored, duplicates, dead) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (worker) DO UPDATE SET stored = workers.stored + excluded.stored, "
                    "duplicates = workers.duplicates + excluded.duplicates, "
                    "dead = workers.dead + excluded.dead, updated_at = now()",
                    [worker, len(inserted), len(dups), len(batch.dead)],
                )
        except psycopg.Error as err:
            raise StoreError(f"PostgreSQL: {err}".strip()) from err
        return WriteResult(len(inserted), len(dups), sessions_of(batch.events))

    async def _insert_events(self, first: list[Incoming], worker: str) -> set[str]:
        """Store ``first`` (one copy of each id) in the open transaction; the ids that were new."""
        async with self.conn.cursor() as c, c.copy(_COPY) as copy:
            for i in first:
                e = i.envelope
                await copy.write_row(
                    (
                        e.id,
                        e.site,
                        e.gateway,
                        e.device,
                        e.kind,
                        e.time,
                        *link_columns(e),
                        i.raw.decode(),
                    )
                )
        cur = await self.conn.execute(_PG_INSERT, [worker])
        return {str(r[0]) for r in await cur.fetchall()}

    async def check_gaps(self, sessions: set[SessionKey]) -> tuple[list[Gap], set[SessionKey]]:
        async with self._lock:
            return await self._check_gaps(sessions)

    async def _check_gaps(self, sessions: set[SessionKey]) -> tuple[list[Gap], set[SessionKey]]:
        import psycopg

        found: list[Gap] = []
        still_open: set[SessionKey] = set()
        try:
            for site, gateway, session in sorted(sessions):
                cur = await self.conn.execute(
                    "SELECT state, session FROM gateways WHERE site = %s AND gateway = %s",
                    [site, gateway],
                )
                row = await cur.fetchone()
                if not ended(None if row is None else (row[0], int(row[1])), session):
                    still_open.add((site, gateway, session))
                    continue
                cur = await self.conn.execute(
                    GAPS_SELECT.format(p="%s"), [site, gateway, session] * 2
                )
                for s, g, n, top, seen in await cur.fetchall():
                    if top - seen > 0:
                        found.append(Gap(s, g, int(n), int(top - seen), int(top)))
                        await self.conn.execute(
                            "INSERT INTO gaps (site, gateway, session, missing, highest) "
                            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (site, gateway, session) "
                            "DO UPDATE SET missing = excluded.missing, highest = excluded.highest",
                            [s, g, n, top - seen, top],
                        )
            await self.conn.commit()
        except psycopg.Error as err:
            raise StoreError(f"PostgreSQL: {err}".strip()) from err
        return found, still_open

    async def summary(self) -> Summary:
        import psycopg

        async with self._lock:
            try:
                return await self._summary()
            except psycopg.Error as err:  # not an ingest database (no such table)
                raise StoreError(f"PostgreSQL: {err}".strip()) from err

    async def _summary(self) -> Summary:
        q = self.conn.execute
        events = {
            k: int(n)
            for k, n in await (
                await q("SELECT kind, count(*) FROM events GROUP BY kind")
            ).fetchall()
        }
        (dead,) = await (await q("SELECT count(*) FROM dead_letters")).fetchone()
        gws = await (
            await q(
                "SELECT site, gateway, state, session, since, reason FROM gateways ORDER BY 1, 2"
            )
        ).fetchall()
        gaps = await (
            await q("SELECT site, gateway, session, missing, highest FROM gaps ORDER BY 1, 2, 3")
        ).fetchall()
        workers = await (
            await q("SELECT worker, stored, duplicates, dead FROM workers ORDER BY 1")
        ).fetchall()
        await self.conn.commit()
        return make_summary(events, int(dead), gws, gaps, workers)

    async def close(self) -> None:
        await self.conn.close()
