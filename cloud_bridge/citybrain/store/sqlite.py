"""Where the city-brain ingest keeps what it received: PostgreSQL, or SQLite as the embedded
default. Both hold the same tables and give the same answers.

Tables::

    events        one row per envelope id (the id is unique: duplicates are never stored);
                  ``n`` is the storage order; session, seq and pos come from the envelope's link
    resent        (site, gateway, session, seq) of duplicates that came in a later session than
                  their stored copy, so a gap check counts every sequence number the link used
    dead_letters  what could not be stored, with the reason
    gateways      each gateway's last state (online/offline) and session, from births/deaths
    gaps          sequence numbers missing from ended sessions
    replies       command replies from the gateways
    workers       per ingest worker: stored, duplicates, dead letters

Every :meth:`Store.write` is one transaction; the ingest acknowledges a batch to the broker only
after it returned.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from protocols import envelope as env
from protocols.commands import CommandReply
from protocols.session import GatewayState

SessionKey = tuple[str, str, int]  # site, gateway, session


class StoreError(Exception):
    """The database cannot be reached or written; the batch is kept and retried."""


@dataclass(frozen=True)
class Incoming:
    envelope: env.EnvelopeModel
    raw: bytes


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str


@dataclass
class Batch:
    events: list[Incoming] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    states: list[GatewayState] = field(default_factory=list)
    replies: list[CommandReply] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.dead) + len(self.states) + len(self.replies)


@dataclass(frozen=True)
class WriteResult:
    stored: int
    duplicates: int
    sessions: set[SessionKey]


@dataclass(frozen=True)
class Gap:
    site: str
    gateway: str
    session: int
    missing: int
    highest: int


@dataclass
class Summary:
    events: dict[str, int]
    duplicates: int
    dead_letters: int
    gateways: list[dict[str, Any]]
    gaps: list[Gap]
    workers: dict[str, dict[str, int]]

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "gateways": self.gateways,
            "gaps": [g.__dict__ for g in self.gaps],
            "workers": self.workers,
        }


class Store(Protocol):
    async def write(self, batch: Batch, worker: str) -> WriteResult: ...

    async def check_gaps(self, sessions: set[SessionKey]) -> tuple[list[Gap], set[SessionKey]]:
        """Gaps of the given sessions that have ended; returns them and the sessions still open."""
        ...

    async def summary(self) -> Summary: ...

    async def close(self) -> None: ...


def _unique(events: Iterable[Incoming]) -> tuple[list[Incoming], list[Incoming]]:
    """First copy of each id, and the copies after it (duplicates inside one batch)."""
    seen: set[Any] = set()
    first: list[Incoming] = []
    again: list[Incoming] = []
    for e in events:
        (again if e.envelope.id in seen else first).append(e)
        seen.add(e.envelope.id)
    return first, again


def _link(e: env.EnvelopeModel) -> tuple[int | None, int | None, int | None]:
    return (e.link.session, e.link.seq, e.link.pos) if e.link else (None, None, None)


def _resent_rows(
    dups: Iterable[Incoming], stored: dict[str, tuple[int | None, int | None]]
) -> list[tuple[str, str, int, int]]:
    """Duplicates sent in another session than their stored copy: their seq was used too."""
    rows = []
    for d in dups:
        e = d.envelope
        if e.link is None:
            continue
        if stored.get(str(e.id)) != (e.link.session, e.link.seq):
            rows.append((e.site, e.gateway, e.link.session, e.link.seq))
    return rows


def _sessions(events: Iterable[Incoming]) -> set[SessionKey]:
    return {
        (i.envelope.site, i.envelope.gateway, i.envelope.link.session)
        for i in events
        if i.envelope.link
    }


# The state upsert keeps the highest session; a death counts only for the session it ends.
_STATE_WHERE = (
    "WHERE excluded.session > gateways.session OR "
    "(excluded.session = gateways.session AND excluded.state = 'offline')"
)

_GAPS_SELECT = """
SELECT site, gateway, session, max(seq) AS top, count(DISTINCT seq) AS seen FROM (
  SELECT site, gateway, session, seq FROM events
   WHERE site = {p} AND gateway = {p} AND session = {p}
  UNION ALL
  SELECT site, gateway, session, seq FROM resent
   WHERE site = {p} AND gateway = {p} AND session = {p}
) s GROUP BY site, gateway, session
"""


def _ended(state: tuple[str, int] | None, session: int) -> bool:
    if state is None:
        return False
    current_state, current = state
    return current > session or (current == session and current_state == "offline")


# -- PostgreSQL ---------------------------------------------------------------------------------

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  n BIGSERIAL PRIMARY KEY,
  id UUID NOT NULL UNIQUE,
  site TEXT NOT NULL, gateway TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
  time TIMESTAMPTZ NOT NULL,
  session BIGINT, seq BIGINT, pos BIGINT,
  received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  worker TEXT NOT NULL,
  envelope JSONB NOT NULL);
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

_PG_INSERT = """
INSERT INTO events (id, site, gateway, device, kind, time, session, seq, pos, worker, envelope)
SELECT id, site, gateway, device, kind, time, session, seq, pos, %s, envelope::jsonb
FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],
            %s::bigint[], %s::bigint[], %s::bigint[], %s::text[])
     WITH ORDINALITY AS t(id, site, gateway, device, kind, time, session, seq, pos, envelope, o)
ORDER BY o
ON CONFLICT (id) DO NOTHING
RETURNING id
"""


class PgStore:
    """PostgreSQL through psycopg 3 (async)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._lock = asyncio.Lock()  # one connection: one transaction at a time

    @classmethod
    async def connect(
        cls, url: str, timeout_s: float = 10.0, *, read_only: bool = False
    ) -> PgStore:
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
                await conn.execute(_PG_SCHEMA)
        except psycopg.Error as err:
            raise StoreError(f"PostgreSQL: {err}".strip()) from err
        return cls(conn)

    async def write(self, batch: Batch, worker: str) -> WriteResult:
        async with self._lock:
            return await self._write(batch, worker)

    async def _write(self, batch: Batch, worker: str) -> WriteResult:
        import psycopg

        first, again = _unique(batch.events)
        try:
            async with self.conn.transaction():
                inserted: set[str] = set()
                if first:
                    cols: list[list[Any]] = [[] for _ in range(10)]
                    for i in first:
                        e = i.envelope
                        for col, v in zip(
                            cols,
                            (
                                e.id,
                                e.site,
                                e.gateway,
                                e.device,
                                e.kind,
                                e.time,
                                *_link(e),
                                i.raw.decode(),
                            ),
                            strict=True,
                        ):
                            col.append(v)
                    cur = await self.conn.execute(_PG_INSERT, [worker, *cols])
                    inserted = {str(r[0]) for r in await cur.fetchall()}
                dups = [i for i in first if str(i.envelope.id) not in inserted] + again
                if dups:
                    cur = await self.conn.execute(
                        "SELECT id, session, seq FROM events WHERE id = ANY(%s::uuid[])",
                        [[i.envelope.id for i in dups]],
                    )
                    stored = {str(r[0]): (r[1], r[2]) for r in await cur.fetchall()}
                    rows = _resent_rows(dups, stored)
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
                            + _STATE_WHERE,
                            [
                                (s.site, s.gateway, s.state.value, s.session, s.time, s.reason)
                                for s in batch.states
                            ],
                        )
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
        return WriteResult(len(inserted), len(dups), _sessions(batch.events))

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
                if not _ended(None if row is None else (row[0], int(row[1])), session):
                    still_open.add((site, gateway, session))
                    continue
                cur = await self.conn.execute(
                    _GAPS_SELECT.format(p="%s"), [site, gateway, session] * 2
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
        return _make_summary(events, int(dead), gws, gaps, workers)

    async def close(self) -> None:
        await self.conn.close()


def _make_summary(
    events: dict[str, int],
    dead: int,
    gws: Sequence[Sequence[Any]],
    gaps: Sequence[Sequence[Any]],
    workers: Sequence[Sequence[Any]],
) -> Summary:
    def iso(v: Any) -> str:
        return v.isoformat() if isinstance(v, datetime) else str(v)

    return Summary(
        events=events,
        duplicates=sum(int(w[2]) for w in workers),
        dead_letters=dead,
        gateways=[
            {"site": s, "gateway": g, "state": st, "session": int(n), "since": iso(t), "reason": r}
            for s, g, st, n, t, r in gws
        ],
        gaps=[Gap(s, g, int(n), int(m), int(h)) for s, g, n, m, h in gaps],
        workers={
            w: {"stored": int(a), "duplicates": int(b), "dead": int(c)} for w, a, b, c in workers
        },
    )


# -- SQLite -------------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
  site TEXT NOT NULL, gateway TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
  time TEXT NOT NULL, session INTEGER, seq INTEGER, pos INTEGER,
  received_at TEXT NOT NULL, worker TEXT NOT NULL, envelope TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_session ON events (site, gateway, session, seq);
CREATE TABLE IF NOT EXISTS resent (site TEXT NOT NULL, gateway TEXT NOT NULL,
  session INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (site, gateway, session, seq));
CREATE TABLE IF NOT EXISTS dead_letters (n INTEGER PRIMARY KEY AUTOINCREMENT,
  received_at TEXT NOT NULL, worker TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
  reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gateways (site TEXT NOT NULL, gateway TEXT NOT NULL,
  state TEXT NOT NULL, session INTEGER NOT NULL, since TEXT NOT NULL, reason TEXT NOT NULL,
  updated_at TEXT NOT NULL, PRIMARY KEY (site, gateway));
CREATE TABLE IF NOT EXISTS gaps (site TEXT NOT NULL, gateway TEXT NOT NULL,
  session INTEGER NOT NULL, missing INTEGER NOT NULL, highest INTEGER NOT NULL,
  noticed_at TEXT NOT NULL, PRIMARY KEY (site, gateway, session));
CREATE TABLE IF NOT EXISTS replies (n INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL,
  site TEXT NOT NULL, gateway TEXT NOT NULL, request TEXT, ok INTEGER NOT NULL, reason TEXT,
  body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (worker TEXT PRIMARY KEY, stored INTEGER NOT NULL DEFAULT 0,
  duplicates INTEGER NOT NULL DEFAULT 0, dead INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL);
"""


class SqliteStore:
    """SQLite (WAL) in one worker thread; several ingest processes may share the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ingest-db")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def connect(cls, path: Path, *, read_only: bool = False) -> SqliteStore:
        """``read_only``: an existing database, opened without creating any file (no tables
        made, no ``-wal``/``-shm`` beside a database no writer has open)."""
        store = cls(path)
        await store._run(store._open_read_only if read_only else store._open)
        return store

    def _open_read_only(self) -> None:
        if not self.path.is_file():
            raise StoreError(f"no SQLite database {self.path}")
        # no -wal beside it: no writer has it open, so read it as immutable (which makes no
        # -wal/-shm files); a writer's -wal there: read through it, read-only
        wal = self.path.with_name(self.path.name + "-wal")
        uri = f"{self.path.resolve().as_uri()}?{'mode=ro' if wal.exists() else 'immutable=1'}"
        try:
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as err:
            raise StoreError(f"SQLite {self.path}: {err}") from err

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            for stmt in _SQLITE_SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute("COMMIT")
        except sqlite3.Error as err:
            raise StoreError(f"SQLite {self.path}: {err}") from err
        self._db = db

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the SQLite store is closed")
        return self._db

    async def write(self, batch: Batch, worker: str) -> WriteResult:
        result: WriteResult = await self._run(self._write, batch, worker)
        return result

    def _write(self, batch: Batch, worker: str) -> WriteResult:
        db = self.db
        now = datetime.now(UTC).isoformat()
        first, again = _unique(batch.events)
        try:
            db.execute("BEGIN IMMEDIATE")
            ids = [str(i.envelope.id) for i in first]
            stored: dict[str, tuple[int | None, int | None]] = {}
            for k in range(0, len(ids), 500):
                chunk = ids[k : k + 500]
                for rid, session, seq in db.execute(
                    f"SELECT id, session, seq FROM events WHERE id IN ({','.join('?' * len(chunk))})",  # noqa: S608
                    chunk,
                ):
                    stored[rid] = (session, seq)
            existing = set(stored)
            new = [i for i in first if str(i.envelope.id) not in existing]
            db.executemany(
                "INSERT INTO events (id, site, gateway, device, kind, time, session, seq, pos, "
                "received_at, worker, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        str(e.id),
                        e.site,
                        e.gateway,
                        e.device,
                        e.kind,
                        e.time.isoformat(),
                        *_link(e),
                        now,
                        worker,
                        i.raw.decode(),
                    )
                    for i in new
                    for e in (i.envelope,)
                ],
            )
            for i in new:
                e = i.envelope
                stored[str(e.id)] = _link(e)[:2]
            dups = [i for i in first if str(i.envelope.id) in existing] + again
            db.executemany(
                "INSERT INTO resent VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                _resent_rows(dups, stored),
            )
            db.executemany(
                "INSERT INTO dead_letters (received_at, worker, topic, payload, reason) "
                "VALUES (?, ?, ?, ?, ?)",
                [(now, worker, d.topic, d.payload, d.reason) for d in batch.dead],
            )
            db.executemany(
                "INSERT INTO gateways (site, gateway, state, session, since, reason, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, gateway) DO UPDATE "
                "SET state = excluded.state, session = excluded.session, since = excluded.since, "
                "reason = excluded.reason, updated_at = excluded.updated_at " + _STATE_WHERE,
                [
                    (s.site, s.gateway, s.state.value, s.session, s.time.isoformat(), s.reason, now)
                    for s in batch.states
                ],
            )
            db.executemany(
                "INSERT INTO replies (received_at, site, gateway, request, ok, reason, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (now, r.site, r.gateway, r.request, int(r.ok), r.reason, r.model_dump_json())
                    for r in batch.replies
                ],
            )
            db.execute(
                "INSERT INTO workers (worker, stored, duplicates, dead, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (worker) DO UPDATE SET "
                "stored = stored + excluded.stored, duplicates = duplicates + excluded.duplicates, "
                "dead = dead + excluded.dead, updated_at = excluded.updated_at",
                (worker, len(new), len(dups), len(batch.dead), now),
            )
            db.execute("COMMIT")
        except sqlite3.Error as err:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"SQLite {self.path}: {err}") from err
        return WriteResult(len(new), len(dups), _sessions(batch.events))

    async def check_gaps(self, sessions: set[SessionKey]) -> tuple[list[Gap], set[SessionKey]]:
        result: tuple[list[Gap], set[SessionKey]] = await self._run(self._check_gaps, sessions)
        return result

    def _check_gaps(self, sessions: set[SessionKey]) -> tuple[list[Gap], set[SessionKey]]:
        db = self.db
        found: list[Gap] = []
        still_open: set[SessionKey] = set()
        now = datetime.now(UTC).isoformat()
        for site, gateway, session in sorted(sessions):
            row = db.execute(
                "SELECT state, session FROM gateways WHERE site = ? AND gateway = ?",
                (site, gateway),
            ).fetchone()
            if not _ended(None if row is None else (str(row[0]), int(row[1])), session):
                still_open.add((site, gateway, session))
                continue
            for s, g, n, top, seen in db.execute(
                _GAPS_SELECT.format(p="?"), (site, gateway, session) * 2
            ):
                if top - seen > 0:
                    found.append(Gap(s, g, int(n), int(top - seen), int(top)))
                    db.execute(
                        "INSERT INTO gaps VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, gateway, session) "
                        "DO UPDATE SET missing = excluded.missing, highest = excluded.highest",
                        (s, g, n, top - seen, top, now),
                    )
        return found, still_open

    async def summary(self) -> Summary:
        try:
            result: Summary = await self._run(self._summary)
        except sqlite3.Error as err:  # not an ingest database (no such table), or damaged
            raise StoreError(f"SQLite {self.path}: {err}") from err
        return result

    def _summary(self) -> Summary:
        db = self.db
        events = {
            str(k): int(n) for k, n in db.execute("SELECT kind, count(*) FROM events GROUP BY kind")
        }
        (dead,) = db.execute("SELECT count(*) FROM dead_letters").fetchone()
        gws = db.execute(
            "SELECT site, gateway, state, session, since, reason FROM gateways ORDER BY 1, 2"
        ).fetchall()
        gaps = db.execute(
            "SELECT site, gateway, session, missing, highest FROM gaps ORDER BY 1, 2, 3"
        ).fetchall()
        workers = db.execute(
            "SELECT worker, stored, duplicates, dead FROM workers ORDER BY 1"
        ).fetchall()
        return _make_summary(events, int(dead), gws, gaps, workers)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self.db.close)
            self._db = None
        self._executor.shutdown(wait=True)


async def open_store(url: str, *, read_only: bool = False) -> Store:
    """``postgresql://...`` for PostgreSQL; a file path (or ``sqlite:///path``) for SQLite.
    ``read_only`` (``--status``): an existing database only, nothing created or written."""
    if url.startswith(("postgresql://", "postgres://")):
        return await PgStore.connect(url, read_only=read_only)
    return await SqliteStore.connect(sqlite_path(url), read_only=read_only)


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite://") if url.startswith("sqlite://") else url)


def dump(summary: Summary) -> str:
    return json.dumps(summary.as_json(), indent=2, default=str)
