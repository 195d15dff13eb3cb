"""The durable outbox: an SQLite (WAL) spool between the gateway and its broker.

Rules it keeps:

- **Stored before sent.** :meth:`Outbox.commit` writes accepted envelopes in one transaction and
  returns only after SQLite committed it (``synchronous=FULL``: the WAL is fsynced, so the
  commit survives a power cut on a disk that honours fsync). The bridge publishes only rows it
  read back from here.
- **Deleted after acknowledged.** Rows are deleted only when the broker's PUBACK is in; a crash
  between the two sends the row again (at least once; the ingest removes duplicates by id).
- **Positions.** Every accepted envelope gets ``pos``, one more than the last, kept in the same
  transaction, so positions of committed envelopes have no holes: a missing position downstream
  is an envelope dropped under the budget (counted here) or lost.
- **A disk budget.** ``budget_bytes`` bounds what the rows take (topic + payload +
  :data:`ROW_OVERHEAD` bytes each). Over it, the classes give way in order: ``telemetry`` first,
  ``event`` (alarms, availability, everything else) last, each by its own policy
  (``drop_oldest`` or ``drop_newest``). Every drop is counted on disk and reported.
  The database file itself stays within about 1.5 x budget plus the WAL, which is checkpointed
  and truncated to ``wal_limit_bytes`` (both measured by the tests).

Rows handed out by :meth:`read` and not yet released are *reserved* (read ahead or in flight):
the budget never evicts them, so an envelope counted as dropped was never sent.

Not thread-safe: the bridge calls it from one worker thread only (SQLite work stays off the
event loop). The same database keeps the bridge's session counter, its command audit log and the
nonces of accepted commands (:class:`SqliteNonces`), so everything the link must remember across
a crash is in one file.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final, Literal

from protocols.session import OutboxClassStats, OutboxStats
from protocols.signed import NonceStore, Refusal, SignatureRefused

log = logging.getLogger(__name__)

ROW_OVERHEAD: Final = 32  # bytes counted per row beyond topic and payload (b-tree cell, pos, ...)
AUDIT_KEEP: Final = 10_000


class OutboxClass(StrEnum):
    """Classes in the order they give way under the budget (first listed, first dropped)."""

    TELEMETRY = "telemetry"
    EVENT = "event"


Overflow = Literal["drop_oldest", "drop_newest"]
_NewRow = tuple[int, float, int, str, bytes]  # pos, created, size, topic, payload
_TABLE: Final = {OutboxClass.TELEMETRY: "telemetry", OutboxClass.EVENT: "event"}


@dataclass(frozen=True, slots=True)
class Record:
    """An envelope to store: where it goes, its bytes, its class."""

    topic: str
    payload: bytes
    cls: OutboxClass

    @property
    def size(self) -> int:
        return len(self.topic.encode()) + len(self.payload) + ROW_OVERHEAD


@dataclass(frozen=True, slots=True)
class Row:
    """A stored envelope as read back for publishing."""

    cls: OutboxClass
    pos: int
    topic: str
    payload: bytes


@dataclass(frozen=True)
class CommitResult:
    positions: list[int]  # of the records committed, in order (dropped ones included)
    dropped: dict[OutboxClass, int]  # dropped by this commit under the budget


@dataclass
class _ClassState:
    depth: int = 0
    bytes: int = 0
    dropped: int = 0
    reserved: int = 0  # highest position handed out by read() and not released
    policy: Overflow = "drop_oldest"


@dataclass
class OutboxSettings:
    budget_bytes: int = 256 * 2**20
    telemetry_overflow: Overflow = "drop_oldest"
    event_overflow: Overflow = "drop_oldest"
    wal_limit_bytes: int = 8 * 2**20
    fsync: bool = True  # False only for tests of throughput without a disk's fsync cost
    classes: dict[OutboxClass, Overflow] = field(init=False)

    def __post_init__(self) -> None:
        if self.budget_bytes < 1024:
            raise ValueError("outbox budget must be at least 1024 bytes")
        self.classes = {
            OutboxClass.TELEMETRY: self.telemetry_overflow,
            OutboxClass.EVENT: self.event_overflow,
        }


class OutboxError(Exception):
    """The outbox file cannot be opened or written (disk full, permissions, corrupt file)."""


class Outbox:
    def __init__(self, path: Path, settings: OutboxSettings, now: Callable[[], float]) -> None:
        self.path = path
        self.settings = settings
        self._now = now
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._setup()
        except sqlite3.Error as err:
            raise OutboxError(f"cannot open the outbox {path}: {err}") from err
        self._cls = {c: _ClassState(policy=settings.classes[c]) for c in OutboxClass}
        self._load()

    # -- set-up -------------------------------------------------------------------------------

    def _setup(self) -> None:
        db = self._db
        page_size = 4096
        db.execute(f"PRAGMA page_size={page_size}")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"the outbox {self.path} cannot use WAL (journal mode {mode})")
        db.execute(f"PRAGMA synchronous={'FULL' if self.settings.fsync else 'OFF'}")
        wal_pages = max(16, self.settings.wal_limit_bytes // page_size // 2)
        db.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
        db.execute(f"PRAGMA journal_size_limit={self.settings.wal_limit_bytes}")
        db.execute("BEGIN IMMEDIATE")
        for table in _TABLE.values():
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (pos INTEGER PRIMARY KEY, "
                "created REAL NOT NULL, size INTEGER NOT NULL, topic TEXT NOT NULL, "
                "payload BLOB NOT NULL)"
            )
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS audit (n INTEGER PRIMARY KEY, at REAL NOT NULL, "
            "request TEXT, kid TEXT, command TEXT, ok INTEGER NOT NULL, reason TEXT, "
            "message TEXT NOT NULL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, exp INTEGER NOT NULL)"
        )
        db.execute("COMMIT")

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def _load(self) -> None:
        for c, st in self._cls.items():
            depth, size = self._db.execute(
                f"SELECT count(*), coalesce(sum(size), 0) FROM {_TABLE[c]}"  # noqa: S608
            ).fetchone()
            st.depth, st.bytes = int(depth), int(size)
            st.dropped = self._meta(f"dropped.{c.value}")
        self.last_pos = self._meta("last_pos")
        if self.depth:
            log.info(
                "outbox %s: %d envelopes (%d bytes) waiting from before the restart",
                self.path,
                self.depth,
                self.bytes,
            )

    # -- figures ------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return sum(st.depth for st in self._cls.values())

    @property
    def bytes(self) -> int:
        return sum(st.bytes for st in self._cls.values())

    @property
    def dropped(self) -> dict[OutboxClass, int]:
        return {c: st.dropped for c, st in self._cls.items()}

    def oldest_created(self, cls: OutboxClass) -> float | None:
        row = self._db.execute(
            f"SELECT created FROM {_TABLE[cls]} ORDER BY pos LIMIT 1"  # noqa: S608
        ).fetchone()
        return float(row[0]) if row else None

    def stats(self) -> OutboxStats:
        now = self._now()
        classes = {}
        for c, st in self._cls.items():
            oldest = self.oldest_created(c)
            classes[c.value] = OutboxClassStats(
                depth=st.depth,
                bytes=st.bytes,
                dropped=st.dropped,
                oldest_age_s=None if oldest is None else round(max(0.0, now - oldest), 3),
            )
        return OutboxStats(
            depth=self.depth,
            bytes=self.bytes,
            budget_bytes=self.settings.budget_bytes,
            dropped=sum(st.dropped for st in self._cls.values()),
            last_pos=self.last_pos,
            classes=classes,
        )

    def file_sizes(self) -> tuple[int, int]:
        """Bytes on disk now: (the database file, its WAL)."""
        sizes = []
        for suffix in ("", "-wal"):
            p = Path(f"{self.path}{suffix}")
            sizes.append(p.stat().st_size if p.exists() else 0)
        return sizes[0], sizes[1]

    # -- the spool ----------------------------------------------------------------------------

    def commit(
        self, records: Sequence[Record], acked: Iterable[tuple[OutboxClass, int]] = ()
    ) -> CommitResult:
        """Store ``records`` and delete ``acked`` rows in one durable transaction.

        Applies the budget after inserting; returns the positions given to ``records`` and the
        drops this commit caused. Raises :class:`OutboxError` when SQLite cannot write.
        """
        db = self._db
        now = self._now()
        positions: list[int] = []
        before = self.dropped
        try:
            db.execute("BEGIN IMMEDIATE")
            gone: dict[OutboxClass, list[int]] = {}
            for c, pos in acked:
                gone.setdefault(c, []).append(pos)
            for c, done in gone.items():
                self._delete(c, done)
            by_cls: dict[OutboxClass, list[_NewRow]] = {}
            pos = self.last_pos
            for r in records:
                pos += 1
                positions.append(pos)
                by_cls.setdefault(r.cls, []).append((pos, now, r.size, r.topic, r.payload))
            # Make room before inserting, so the file never holds more than the budget plus
            # what SQLite keeps free (pages freed here are reused by the inserts below).
            self._enforce_budget(by_cls)
            for c, rows in by_cls.items():
                db.executemany(
                    f"INSERT INTO {_TABLE[c]}(pos, created, size, topic, payload) "
                    "VALUES(?, ?, ?, ?, ?)",
                    rows,
                )
                self._cls[c].depth += len(rows)
                self._cls[c].bytes += sum(row[2] for row in rows)
            if records:
                self._set_meta("last_pos", pos)
            db.execute("COMMIT")
        except sqlite3.Error as err:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._load()
            raise OutboxError(f"cannot write the outbox {self.path}: {err}") from err
        self.last_pos = pos
        after = self.dropped
        return CommitResult(positions, {c: after[c] - before[c] for c in OutboxClass})

    def _delete(self, cls: OutboxClass, positions: list[int]) -> None:
        table = _TABLE[cls]
        st = self._cls[cls]
        rows = self._db.execute(
            f"DELETE FROM {table} WHERE pos IN ({','.join('?' * len(positions))}) "  # noqa: S608
            "RETURNING size",
            positions,
        ).fetchall()
        st.depth -= len(rows)
        st.bytes -= sum(int(r[0]) for r in rows)

    def _enforce_budget(self, incoming: dict[OutboxClass, list[_NewRow]]) -> None:
        """Drop until what is stored plus ``incoming`` fits the budget: class by class
        (telemetry first), each by its policy over its stored rows and its incoming ones in order
        (incoming rows are newer). Dropped incoming rows are removed from ``incoming``."""
        budget = self.settings.budget_bytes
        excess = self.bytes + sum(r[2] for rows in incoming.values() for r in rows) - budget
        if excess <= 0:
            return
        for c in OutboxClass:  # telemetry first, events last
            st = self._cls[c]
            new = incoming.get(c, [])
            before = st.dropped
            if st.policy == "drop_oldest":
                excess = self._evict_stored(c, excess, "ASC")
                while excess > 0 and new:
                    excess -= new.pop(0)[2]
                    st.dropped += 1
            else:
                while excess > 0 and new:
                    excess -= new.pop()[2]
                    st.dropped += 1
                excess = self._evict_stored(c, excess, "DESC")
            if st.dropped != before:
                self._set_meta(f"dropped.{c.value}", st.dropped)
            if excess <= 0:
                return

    def _evict_stored(self, cls: OutboxClass, excess: int, order: str) -> int:
        st = self._cls[cls]
        while excess > 0 and st.depth:
            victims = self._db.execute(
                f"SELECT pos, size FROM {_TABLE[cls]} WHERE pos > ? "  # noqa: S608
                f"ORDER BY pos {order} LIMIT 512",
                (st.reserved,),
            ).fetchall()
            if not victims:
                break
            chosen: list[int] = []
            for pos, size in victims:
                if excess <= 0:
                    break
                chosen.append(int(pos))
                excess -= int(size)
            self._delete(cls, chosen)
            st.dropped += len(chosen)
        return excess

    def read(self, cls: OutboxClass, after: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows of ``cls`` after position ``after``, oldest first; reserves them."""
        rows = self._db.execute(
            f"SELECT pos, topic, payload FROM {_TABLE[cls]} WHERE pos > ? "  # noqa: S608
            "ORDER BY pos LIMIT ?",
            (after, limit),
        ).fetchall()
        out = [Row(cls, int(p), str(t), bytes(b)) for p, t, b in rows]
        if out:
            st = self._cls[cls]
            st.reserved = max(st.reserved, out[-1].pos)
        return out

    def release(self) -> None:
        """Nothing is read ahead or in flight any more (the link was lost)."""
        for st in self._cls.values():
            st.reserved = 0

    # -- session numbers, audit, nonces -------------------------------------------------------

    def next_session(self) -> int:
        """A new session number, one more than the last, committed before it is used."""
        self._db.execute("BEGIN IMMEDIATE")
        n = self._meta("session") + 1
        self._set_meta("session", n)
        self._db.execute("COMMIT")
        return n

    def audit(
        self,
        *,
        request: str | None,
        kid: str | None,
        command: str | None,
        ok: bool,
        reason: str | None,
        message: str,
    ) -> None:
        """Record one command and what became of it; keeps the last :data:`AUDIT_KEEP`."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:  # a value SQLite cannot take (a lone surrogate) must not leave the transaction open
            cur = db.execute(
                "INSERT INTO audit(at, request, kid, command, ok, reason, message) "
                "VALUES(?, ?, ?, ?, ?, ?, ?)",
                (self._now(), request, kid, command, int(ok), reason, message),
            )
            if cur.lastrowid is not None and cur.lastrowid > AUDIT_KEEP:
                db.execute("DELETE FROM audit WHERE n <= ?", (cur.lastrowid - AUDIT_KEEP,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def audit_log(self, limit: int = 100) -> list[dict[str, object]]:
        rows = self._db.execute(
            "SELECT at, request, kid, command, ok, reason, message FROM audit "
            "ORDER BY n DESC LIMIT ?",
            (limit,),
        ).fetchall()
        keys = ("at", "request", "kid", "command", "ok", "reason", "message")
        return [dict(zip(keys, r, strict=True)) for r in reversed(rows)]

    def nonces(self, capacity: int = 100_000) -> SqliteNonces:
        return SqliteNonces(self._db, capacity, self._meta("nonce_floor"))

    def close(self) -> None:
        self._db.close()


class SqliteNonces(NonceStore):
    """The nonces of accepted commands, kept in the outbox's database so that a command cannot be
    replayed after a restart. Same rules as :class:`~protocols.signed.NonceStore`: bounded, and
    when full the nonces expiring first are forgotten and ``floor`` rises to their expiry."""

    def __init__(self, db: sqlite3.Connection, capacity: int, floor: int) -> None:
        super().__init__(capacity=capacity, floor=floor)
        self._db = db

    def check_and_add(self, nonce: str, exp: int, now: float) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            seen = db.execute("SELECT 1 FROM nonces WHERE nonce=?", (nonce,)).fetchone()
            if exp <= self.floor or seen:
                raise SignatureRefused(Refusal.REPLAYED, "this envelope (nonce) was already used")
            db.execute("DELETE FROM nonces WHERE exp < ?", (int(now),))
            (count,) = db.execute("SELECT count(*) FROM nonces").fetchone()
            if count >= self.capacity:
                excess = count - self.capacity + 1
                (top,) = db.execute(
                    "SELECT max(exp) FROM (SELECT exp FROM nonces ORDER BY exp LIMIT ?)", (excess,)
                ).fetchone()
                db.execute("DELETE FROM nonces WHERE exp <= ?", (top,))
                self.floor = max(self.floor, int(top))
                db.execute(
                    "INSERT INTO meta(key, value) VALUES('nonce_floor', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (self.floor,),
                )
                if exp <= self.floor:
                    raise SignatureRefused(
                        Refusal.REPLAYED, "too many recent envelopes to tell; send a fresh one"
                    )
            db.execute("INSERT INTO nonces(nonce, exp) VALUES(?, ?)", (nonce, exp))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
