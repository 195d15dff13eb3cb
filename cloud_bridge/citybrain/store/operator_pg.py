"""The operator page's queries on the PostgreSQL store (see :mod:`.operator_common`), through a
connection of their own: autocommit, ``default_transaction_read_only`` and a
``statement_timeout``, so the page can neither write nor hold the database with a slow query.
A connection that broke is made again at the next question."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from cloud_bridge.citybrain.store.common import StoreError
from cloud_bridge.citybrain.store.operator_common import (
    GAP_EVIDENCE_ROWS,
    PREVIEW_BYTES,
    RECENT_FOR_POINTS,
    AlarmRow,
    DeadLetterRow,
    GapRow,
    GatewayPage,
    Overview,
    PointRef,
    Series,
    StateFilter,
    Versions,
    alarm_row,
    bounded,
    bucket_width,
    dead_letter_row,
    gap_evidence,
    gap_prefix,
    gap_row,
    gateway_row,
    make_series,
    overview_of,
    point_refs,
    session_rows,
    sort_open,
)
from protocols.session import GatewayState

T = TypeVar("T")

# made by the ingest with its schema (PgStore.connect, under its advisory lock); on the
# partitioned ``events`` each index is made on every partition, now and made later. Which query
# each serves: the alarm ones the versions poll, the history (all, and one gateway's) and the
# open alarms (the latest per device and rule); events_device_time the series; the ingest's
# events_session the last seen of a gateway, its points and the gap check.
SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_sessions (
  site TEXT NOT NULL, gateway TEXT NOT NULL, session BIGINT NOT NULL,
  born_at TIMESTAMPTZ, outbox JSONB, died_at TIMESTAMPTZ, death_reason TEXT,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (site, gateway, session));
CREATE INDEX IF NOT EXISTS events_alarm_time ON events (time) WHERE kind = 'alarm';
CREATE INDEX IF NOT EXISTS events_alarm_received ON events (received_at) WHERE kind = 'alarm';
CREATE INDEX IF NOT EXISTS events_device_time ON events (site, gateway, device, kind, time);
CREATE INDEX IF NOT EXISTS events_alarm_gateway ON events (site, gateway, time)
  WHERE kind = 'alarm';
CREATE INDEX IF NOT EXISTS events_alarm_rule ON events
  (site, gateway, device, (envelope->'payload'->>'rule'), time DESC, id DESC) WHERE kind = 'alarm';
CREATE INDEX IF NOT EXISTS dead_letters_topic ON dead_letters (topic text_pattern_ops);
"""


async def record_sessions(cursor: Any, states: list[GatewayState]) -> None:
    """Births and deaths of a batch into ``gateway_sessions`` (inside the ingest's write)."""
    births, deaths = session_rows(states)
    if births:
        await cursor.executemany(
            "INSERT INTO gateway_sessions (site, gateway, session, born_at, outbox) "
            "VALUES (%s, %s, %s, %s, %s::jsonb) ON CONFLICT (site, gateway, session) DO UPDATE "
            "SET born_at = excluded.born_at, outbox = excluded.outbox, updated_at = now()",
            births,
        )
    if deaths:
        await cursor.executemany(
            "INSERT INTO gateway_sessions (site, gateway, session, died_at, death_reason) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (site, gateway, session) DO UPDATE "
            "SET died_at = excluded.died_at, death_reason = excluded.death_reason, "
            "updated_at = now()",
            deaths,
        )


_GATEWAYS = """
SELECT g.site, g.gateway, g.state, g.session, g.since, g.reason, g.updated_at, s.born_at, s.outbox,
  (SELECT e.received_at FROM events e WHERE e.site = g.site AND e.gateway = g.gateway
     AND e.session = g.session ORDER BY e.seq DESC LIMIT 1)
FROM gateways g LEFT JOIN gateway_sessions s
  ON s.site = g.site AND s.gateway = g.gateway AND s.session = g.session
WHERE {where} ORDER BY g.state = 'online', g.site, g.gateway LIMIT %s OFFSET %s
"""

_OPEN_ALARMS = """
SELECT id, site, gateway, device, time, received_at, envelope FROM (
  SELECT id, site, gateway, device, time, received_at, envelope,
    row_number() OVER (PARTITION BY site, gateway, device, envelope->'payload'->>'rule'
                       ORDER BY time DESC, id DESC) AS k
  FROM events WHERE kind = 'alarm') a
WHERE k = 1 AND envelope->'payload'->>'state' = 'raised'
"""

_SERIES = """
SELECT floor(extract(epoch FROM e.time) / %(w)s) AS b, min(x.v), max(x.v), avg(x.v), count(*),
       max(x.u)
FROM events e
CROSS JOIN LATERAL jsonb_array_elements(e.envelope->'payload'->'readings') r
CROSS JOIN LATERAL (SELECT
    CASE jsonb_typeof(r->'value')
      WHEN 'number' THEN (r->>'value')::float8
      WHEN 'boolean' THEN CASE WHEN (r->>'value')::boolean THEN 1.0 ELSE 0.0 END
    END AS v,
    r->>'unit' AS u) x
WHERE e.site = %(site)s AND e.gateway = %(gateway)s AND e.device = %(device)s
  AND e.kind = 'telemetry' AND e.time >= %(since)s AND e.time < %(until)s
  AND r->>'point' = %(point)s AND x.v IS NOT NULL
GROUP BY b ORDER BY b
"""


def _gateway_filter(state: StateFilter, search: str) -> tuple[str, list[Any]]:
    where: list[str] = ["TRUE"]
    args: list[Any] = []
    if state is not None:
        where.append("g.state = %s")
        args.append(state)
    if search:
        where.append("strpos(lower(g.site || '/' || g.gateway), lower(%s)) > 0")
        args.append(search)
    return " AND ".join(where), args


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class PgReads:
    """Read-only queries on a PostgreSQL store."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._conn: Any = None
        self._lock = asyncio.Lock()  # one connection: one question at a time

    @classmethod
    async def connect(cls, url: str, *, timeout_s: float = 10.0) -> PgReads:
        reads = cls(url, timeout_s)
        async with reads._lock:
            await reads._connection()
        return reads

    async def _connection(self) -> Any:
        try:
            import psycopg
        except ModuleNotFoundError as err:
            raise StoreError(
                "PostgreSQL needs the Python package 'psycopg': pip install 'cityedge[ingest]'"
            ) from err
        if self._conn is None or self._conn.closed:
            ms = int(self.timeout_s * 1000)
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=max(1, int(self.timeout_s)),
                    options=f"-c default_transaction_read_only=on -c statement_timeout={ms}",
                )
            except psycopg.Error as err:
                raise StoreError(f"PostgreSQL: {err}".strip()) from err
        return self._conn

    async def _query(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        import psycopg

        async with self._lock:
            conn = await self._connection()
            try:
                async with asyncio.timeout(self.timeout_s + 1):
                    return await fn(conn)
            except TimeoutError:
                await self._drop()
                raise StoreError(f"PostgreSQL: no answer within {self.timeout_s:g} s") from None
            except psycopg.Error as err:
                if conn.closed or conn.broken:
                    await self._drop()
                raise StoreError(f"PostgreSQL: {err}".strip()) from err

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def versions(self) -> Versions:
        async def q(conn: Any) -> Versions:
            cur = await conn.execute(
                "SELECT (SELECT count(*) || '/' || coalesce(max(updated_at)::text, '') FROM gateways), "
                "(SELECT count(*) || '/' || coalesce(max(received_at)::text, '') FROM events "
                " WHERE kind = 'alarm'), "
                "(SELECT coalesce(max(n), 0)::text FROM dead_letters), "
                "(SELECT count(*) || '/' || coalesce(sum(missing), 0) FROM gaps)"
            )
            gw, al, dl, gp = await cur.fetchone()
            return Versions(gw, al, dl, gp)

        return await self._query(q)

    async def overview(self) -> Overview:
        async def q(conn: Any) -> Overview:
            states = dict(
                await (
                    await conn.execute("SELECT state, count(*) FROM gateways GROUP BY state")
                ).fetchall()
            )
            alarms = [alarm_row(r) for r in await (await conn.execute(_OPEN_ALARMS)).fetchall()]
            (dead,) = await (await conn.execute("SELECT count(*) FROM dead_letters")).fetchone()
            gaps, missing = await (
                await conn.execute("SELECT count(*), coalesce(sum(missing), 0) FROM gaps")
            ).fetchone()
            return overview_of(states, alarms, dead, gaps, missing)

        return await self._query(q)

    async def gateways(
        self, *, state: StateFilter = None, search: str = "", offset: int = 0, limit: int = 100
    ) -> GatewayPage:
        where, args = _gateway_filter(state, search)
        start = max(0, int(offset))

        async def q(conn: Any) -> GatewayPage:
            (total,) = await (
                await conn.execute(f"SELECT count(*) FROM gateways g WHERE {where}", args)  # noqa: S608
            ).fetchone()
            rows = await (
                await conn.execute(_GATEWAYS.format(where=where), [*args, bounded(limit), start])
            ).fetchall()
            return GatewayPage(int(total), start, [gateway_row(r) for r in rows])

        return await self._query(q)

    async def open_alarms(self, *, limit: int = 500) -> list[AlarmRow]:
        async def q(conn: Any) -> list[AlarmRow]:
            rows = await (await conn.execute(_OPEN_ALARMS)).fetchall()
            return sort_open(alarm_row(r) for r in rows)[: bounded(limit)]

        return await self._query(q)

    async def alarm_history(
        self, *, site: str | None = None, gateway: str | None = None, limit: int = 100
    ) -> list[AlarmRow]:
        where, args = "kind = 'alarm'", []
        if site is not None and gateway is not None:
            where += " AND site = %s AND gateway = %s"
            args = [site, gateway]

        async def q(conn: Any) -> list[AlarmRow]:
            cur = await conn.execute(
                "SELECT id, site, gateway, device, time, received_at, envelope FROM events "  # noqa: S608
                f"WHERE {where} ORDER BY time DESC, id DESC LIMIT %s",
                [*args, bounded(limit)],
            )
            return [alarm_row(r) for r in await cur.fetchall()]

        return await self._query(q)

    async def dead_letters(self, *, limit: int = 100) -> tuple[int, list[DeadLetterRow]]:
        async def q(conn: Any) -> tuple[int, list[DeadLetterRow]]:
            (total,) = await (await conn.execute("SELECT count(*) FROM dead_letters")).fetchone()
            cur = await conn.execute(
                "SELECT n, received_at, worker, topic, reason, octet_length(payload), "
                "substring(payload FROM 1 FOR %s) FROM dead_letters ORDER BY n DESC LIMIT %s",
                [PREVIEW_BYTES, bounded(limit)],
            )
            return int(total), [dead_letter_row(r) for r in await cur.fetchall()]

        return await self._query(q)

    async def gaps(self, *, limit: int = 200) -> list[GapRow]:
        async def q(conn: Any) -> list[GapRow]:
            cur = await conn.execute(
                "SELECT g.site, g.gateway, g.session, g.missing, g.highest, g.noticed_at, "
                "s.born_at, s.died_at, s.death_reason FROM gaps g LEFT JOIN gateway_sessions s "
                "ON s.site = g.site AND s.gateway = g.gateway AND s.session = g.session "
                "ORDER BY g.noticed_at DESC, g.site, g.gateway, g.session DESC LIMIT %s",
                [bounded(limit)],
            )
            out = []
            for r in await cur.fetchall():
                ev = await conn.execute(
                    "SELECT reason, payload FROM dead_letters WHERE topic LIKE %s "
                    "ORDER BY n DESC LIMIT %s",
                    [_like_prefix(gap_prefix(r[0], r[1])), GAP_EVIDENCE_ROWS],
                )
                out.append(gap_row(r, gap_evidence(await ev.fetchall(), int(r[2]))))
            return out

        return await self._query(q)

    async def points(self, site: str, gateway: str) -> list[PointRef]:
        async def q(conn: Any) -> list[PointRef]:
            cur = await conn.execute(
                "SELECT device, envelope->'payload'->'readings' FROM events "
                "WHERE site = %s AND gateway = %s AND session = "
                "(SELECT session FROM gateways WHERE site = %s AND gateway = %s) "
                "AND kind = 'telemetry' ORDER BY seq DESC LIMIT %s",
                [site, gateway, site, gateway, RECENT_FOR_POINTS],
            )
            return point_refs(await cur.fetchall())

        return await self._query(q)

    async def series(
        self,
        site: str,
        gateway: str,
        device: str,
        point: str,
        since: datetime,
        until: datetime,
        buckets: int = 300,
    ) -> Series:
        width = bucket_width(since, until, buckets)

        async def q(conn: Any) -> Series:
            cur = await conn.execute(
                _SERIES,
                {
                    "w": width,
                    "site": site,
                    "gateway": gateway,
                    "device": device,
                    "since": since,
                    "until": until,
                    "point": point,
                },
            )
            rows = await cur.fetchall()
            return make_series((site, gateway, device, point), since, until, width, rows)

        return await self._query(q)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
