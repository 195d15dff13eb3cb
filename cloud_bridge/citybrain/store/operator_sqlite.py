"""The operator page's queries on the SQLite store (see :mod:`.operator_common`), through a
connection of their own opened read-only (``mode=ro``, ``query_only``) in one worker thread.

Times in SQLite are ISO 8601 text with whatever UTC offset the gateway wrote, so they are
compared and ordered through ``julianday()`` (indexed as an expression), never as text."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
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

# made by the ingest with its schema (SqliteStore._open)
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gateway_sessions (site TEXT NOT NULL, gateway TEXT NOT NULL,
  session INTEGER NOT NULL, born_at TEXT, outbox TEXT, died_at TEXT, death_reason TEXT,
  updated_at TEXT NOT NULL, PRIMARY KEY (site, gateway, session))""",
    "CREATE INDEX IF NOT EXISTS events_alarm_time ON events (julianday(time)) WHERE kind = 'alarm'",
    "CREATE INDEX IF NOT EXISTS events_alarm_received ON events (received_at) WHERE kind = 'alarm'",
    "CREATE INDEX IF NOT EXISTS events_device_time "
    "ON events (site, gateway, device, kind, julianday(time))",
    "CREATE INDEX IF NOT EXISTS dead_letters_topic ON dead_letters (topic)",
)


def record_sessions(db: sqlite3.Connection, states: list[GatewayState], now: str) -> None:
    """Births and deaths of a batch into ``gateway_sessions`` (inside the ingest's write)."""
    births, deaths = session_rows(states)
    db.executemany(
        "INSERT INTO gateway_sessions (site, gateway, session, born_at, outbox, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, gateway, session) DO UPDATE SET "
        "born_at = excluded.born_at, outbox = excluded.outbox, updated_at = excluded.updated_at",
        [(s, g, n, t.isoformat(), o, now) for s, g, n, t, o in births],
    )
    db.executemany(
        "INSERT INTO gateway_sessions (site, gateway, session, died_at, death_reason, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, gateway, session) DO UPDATE SET "
        "died_at = excluded.died_at, death_reason = excluded.death_reason, "
        "updated_at = excluded.updated_at",
        [(s, g, n, t.isoformat(), r, now) for s, g, n, t, r in deaths],
    )


_GATEWAYS = """
SELECT g.site, g.gateway, g.state, g.session, g.since, g.reason, g.updated_at, s.born_at, s.outbox,
  (SELECT e.received_at FROM events e WHERE e.site = g.site AND e.gateway = g.gateway
     AND e.session = g.session ORDER BY e.seq DESC LIMIT 1)
FROM gateways g LEFT JOIN gateway_sessions s
  ON s.site = g.site AND s.gateway = g.gateway AND s.session = g.session
WHERE {where} ORDER BY g.state = 'online', g.site, g.gateway LIMIT ? OFFSET ?
"""

_OPEN_ALARMS = """
SELECT id, site, gateway, device, time, received_at, envelope FROM (
  SELECT id, site, gateway, device, time, received_at, envelope,
    row_number() OVER (PARTITION BY site, gateway, device, json_extract(envelope, '$.payload.rule')
                       ORDER BY julianday(time) DESC, id DESC) AS k
  FROM events WHERE kind = 'alarm')
WHERE k = 1 AND json_extract(envelope, '$.payload.state') = 'raised'
"""

# seconds since 1970, to the millisecond (julianday is a float)
_SERIES = """
SELECT CAST(round((julianday(e.time) - 2440587.5) * 86400.0, 3) / ? AS INTEGER) AS b,
       min(v), max(v), avg(v), count(*), max(u)
FROM (SELECT e.time AS time,
        CASE json_type(r.value, '$.value') WHEN 'true' THEN 1.0 WHEN 'false' THEN 0.0
          ELSE json_extract(r.value, '$.value') END AS v,
        json_extract(r.value, '$.unit') AS u
      FROM events e, json_each(e.envelope, '$.payload.readings') r
      WHERE e.site = ? AND e.gateway = ? AND e.device = ? AND e.kind = 'telemetry'
        AND julianday(e.time) >= julianday(?) AND julianday(e.time) < julianday(?)
        AND json_extract(r.value, '$.point') = ?
        AND json_type(r.value, '$.value') IN ('integer', 'real', 'true', 'false')) e
GROUP BY b ORDER BY b
"""


def _gateway_filter(state: StateFilter, search: str) -> tuple[str, list[Any]]:
    where: list[str] = ["1"]
    args: list[Any] = []
    if state is not None:
        where.append("g.state = ?")
        args.append(state)
    if search:
        where.append("instr(lower(g.site || '/' || g.gateway), lower(?)) > 0")
        args.append(search)
    return " AND ".join(where), args


class SqliteReads:
    """Read-only queries on an SQLite store file."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="operator-db")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def connect(cls, path: Path, *, timeout_s: float = 10.0) -> SqliteReads:
        reads = cls(path, timeout_s)
        await reads._run(reads._open)
        return reads

    def _open(self) -> None:
        if not self.path.is_file():
            raise StoreError(f"no SQLite database {self.path}")
        try:
            db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                timeout=self.timeout_s,
                check_same_thread=False,
            )
            db.execute("PRAGMA query_only = ON")
        except sqlite3.Error as err:
            raise StoreError(f"SQLite {self.path}: {err}") from err
        self._db = db

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await loop.run_in_executor(self._executor, fn, *args)
        except TimeoutError:
            if self._db is not None:
                self._db.interrupt()  # the thread gives up its query; the next one may run
            raise StoreError(f"SQLite {self.path}: no answer within {self.timeout_s:g} s") from None

    async def _query(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def guarded() -> T:
            if self._db is None:
                raise StoreError("the operator's SQLite connection is closed")
            try:
                return fn(self._db)
            except sqlite3.Error as err:
                raise StoreError(f"SQLite {self.path}: {err}") from err

        result: T = await self._run(guarded)
        return result

    async def versions(self) -> Versions:
        def q(db: sqlite3.Connection) -> Versions:
            gw = db.execute("SELECT count(*), max(updated_at) FROM gateways").fetchone()
            al = db.execute(
                "SELECT count(*), max(received_at) FROM events WHERE kind = 'alarm'"
            ).fetchone()
            (dl,) = db.execute("SELECT max(n) FROM dead_letters").fetchone()
            gp = db.execute("SELECT count(*), sum(missing) FROM gaps").fetchone()
            return Versions(f"{gw[0]}/{gw[1]}", f"{al[0]}/{al[1]}", str(dl), f"{gp[0]}/{gp[1]}")

        return await self._query(q)

    async def overview(self) -> Overview:
        def q(db: sqlite3.Connection) -> Overview:
            states = dict(db.execute("SELECT state, count(*) FROM gateways GROUP BY state"))
            alarms = [alarm_row(r) for r in db.execute(_OPEN_ALARMS)]
            (dead,) = db.execute("SELECT count(*) FROM dead_letters").fetchone()
            gaps, missing = db.execute(
                "SELECT count(*), coalesce(sum(missing), 0) FROM gaps"
            ).fetchone()
            return overview_of(states, alarms, dead, gaps, missing)

        return await self._query(q)

    async def gateways(
        self, *, state: StateFilter = None, search: str = "", offset: int = 0, limit: int = 100
    ) -> GatewayPage:
        where, args = _gateway_filter(state, search)

        def q(db: sqlite3.Connection) -> GatewayPage:
            (total,) = db.execute(
                f"SELECT count(*) FROM gateways g WHERE {where}",  # noqa: S608 - fixed fragments
                args,
            ).fetchone()
            rows = db.execute(
                _GATEWAYS.format(where=where), [*args, bounded(limit), max(0, int(offset))]
            ).fetchall()
            return GatewayPage(int(total), max(0, int(offset)), [gateway_row(r) for r in rows])

        return await self._query(q)

    async def open_alarms(self, *, limit: int = 500) -> list[AlarmRow]:
        def q(db: sqlite3.Connection) -> list[AlarmRow]:
            return sort_open(alarm_row(r) for r in db.execute(_OPEN_ALARMS))[: bounded(limit)]

        return await self._query(q)

    async def alarm_history(
        self, *, site: str | None = None, gateway: str | None = None, limit: int = 100
    ) -> list[AlarmRow]:
        where, args = "kind = 'alarm'", []
        if site is not None and gateway is not None:
            where += " AND site = ? AND gateway = ?"
            args = [site, gateway]

        def q(db: sqlite3.Connection) -> list[AlarmRow]:
            rows = db.execute(
                "SELECT id, site, gateway, device, time, received_at, envelope FROM events "  # noqa: S608
                f"WHERE {where} ORDER BY julianday(time) DESC, id DESC LIMIT ?",
                [*args, bounded(limit)],
            )
            return [alarm_row(r) for r in rows]

        return await self._query(q)

    async def dead_letters(self, *, limit: int = 100) -> tuple[int, list[DeadLetterRow]]:
        def q(db: sqlite3.Connection) -> tuple[int, list[DeadLetterRow]]:
            (total,) = db.execute("SELECT count(*) FROM dead_letters").fetchone()
            rows = db.execute(
                "SELECT n, received_at, worker, topic, reason, length(payload), "
                "substr(payload, 1, ?) FROM dead_letters ORDER BY n DESC LIMIT ?",
                (PREVIEW_BYTES, bounded(limit)),
            )
            return int(total), [dead_letter_row(r) for r in rows]

        return await self._query(q)

    async def gaps(self, *, limit: int = 200) -> list[GapRow]:
        def q(db: sqlite3.Connection) -> list[GapRow]:
            rows = db.execute(
                "SELECT g.site, g.gateway, g.session, g.missing, g.highest, g.noticed_at, "
                "s.born_at, s.died_at, s.death_reason FROM gaps g LEFT JOIN gateway_sessions s "
                "ON s.site = g.site AND s.gateway = g.gateway AND s.session = g.session "
                "ORDER BY g.noticed_at DESC, g.site, g.gateway, g.session DESC LIMIT ?",
                (bounded(limit),),
            ).fetchall()
            out = []
            for r in rows:
                prefix = gap_prefix(r[0], r[1])
                # BINARY collation: a byte range is exactly "starts with", and uses the index
                evidence = db.execute(
                    "SELECT reason, payload FROM dead_letters WHERE topic >= ? AND topic < ? "
                    "ORDER BY n DESC LIMIT ?",
                    (prefix, prefix[:-1] + "0", GAP_EVIDENCE_ROWS),
                ).fetchall()
                out.append(gap_row(r, gap_evidence(evidence, int(r[2]))))
            return out

        return await self._query(q)

    async def points(self, site: str, gateway: str) -> list[PointRef]:
        def q(db: sqlite3.Connection) -> list[PointRef]:
            rows = db.execute(
                "SELECT device, json_extract(envelope, '$.payload.readings') FROM events "
                "WHERE site = ? AND gateway = ? AND session = "
                "(SELECT session FROM gateways WHERE site = ? AND gateway = ?) "
                "AND kind = 'telemetry' ORDER BY seq DESC LIMIT ?",
                (site, gateway, site, gateway, RECENT_FOR_POINTS),
            )
            return point_refs(rows)

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

        def q(db: sqlite3.Connection) -> Series:
            rows = db.execute(
                _SERIES,
                (width, site, gateway, device, since.isoformat(), until.isoformat(), point),
            )
            return make_series((site, gateway, device, point), since, until, width, rows)

        return await self._query(q)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=True)
