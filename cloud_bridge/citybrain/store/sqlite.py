"""The SQLite back end of the city brain's store (the embedded default): WAL, one worker thread,
several ingest processes may share the file. Tables: see
:mod:`cloud_bridge.citybrain.store.common`."""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud_bridge.citybrain.store import operator_sqlite
from cloud_bridge.citybrain.store.common import (
    GAPS_SELECT,
    STATE_WHERE,
    Batch,
    Gap,
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
            for stmt in operator_sqlite.SCHEMA:  # the operator's page: its table and indexes
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
        first, again = unique(batch.events)
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
                        *link_columns(e),
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
                stored[str(e.id)] = link_columns(e)[:2]
            dups = [i for i in first if str(i.envelope.id) in existing] + again
            db.executemany(
                "INSERT INTO resent VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                resent_rows(dups, stored),
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
                "reason = excluded.reason, updated_at = excluded.updated_at " + STATE_WHERE,
                [
                    (s.site, s.gateway, s.state.value, s.session, s.time.isoformat(), s.reason, now)
                    for s in batch.states
                ],
            )
            operator_sqlite.record_sessions(db, batch.states, now)  # the operator's page
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
        return WriteResult(len(new), len(dups), sessions_of(batch.events))

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
            if not ended(None if row is None else (str(row[0]), int(row[1])), session):
                still_open.add((site, gateway, session))
                continue
            for s, g, n, top, seen in db.execute(
                GAPS_SELECT.format(p="?"), (site, gateway, session) * 2
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
        return make_summary(events, int(dead), gws, gaps, workers)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self.db.close)
            self._db = None
        self._executor.shutdown(wait=True)
