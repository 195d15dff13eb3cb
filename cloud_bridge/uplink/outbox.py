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
  is an envelope dropped under the budget or for a full disk (counted here), one of a damaged
  outbox that was set aside (named in the birth message), or lost.
- **A disk budget.** ``budget_bytes`` bounds what the rows take (topic + payload +
  :data:`ROW_OVERHEAD` bytes each). Over it, the classes give way in order: ``telemetry`` first,
  ``event`` (alarms, availability, everything else) last, each by its own policy
  (``drop_oldest`` or ``drop_newest``). Every drop is counted on disk and reported.
  The database file itself stays within about 1.5 x budget plus the WAL, which is checkpointed
  and truncated to ``wal_limit_bytes`` (both measured by the tests).

A full disk
    When SQLite cannot write for lack of disk (``SQLITE_FULL``), whatever filled it, the outbox
    keeps to what it holds at that moment (:class:`DiskFull`): each commit first drops the
    oldest stored telemetry to make room for what it adds, counted per class as budget drops
    are. Events are never dropped for a full disk, nor envelopes not yet stored: when no
    telemetry is left to drop the commit raises :class:`OutboxFull` and stores nothing, and the
    caller keeps the records and tries again (back pressure). SQLite needs some room to make
    room (a delete is written to the WAL, a checkpoint may grow the file): ``reserve_bytes``
    (the WAL limit by default) are kept allocated in ``<outbox>.reserve`` and freed when the
    disk fills, and the WAL is folded into the file. While full, the outbox looks every
    ``disk_probe_s`` whether the disk has room again (twice the reserve free); then it makes the
    reserve again and takes envelopes as before, without a restart.

Damage
    At start the file is checked (``PRAGMA quick_check``, stopped after ``check_timeout_s``: a
    check that runs out of time opens the file unchecked). An empty file, one SQLite does not
    recognise, or one the check finds damaged is *set aside*: renamed
    ``<outbox>.damaged-<UTC time>`` (with its WAL), kept for recovery, logged and recorded in
    the new file (:meth:`Outbox.set_aside_files`, reported in births and ``outbox.stats``); a new
    outbox starts in its place. Damage SQLite finds later, while running, raises
    :class:`OutboxDamaged`: the sink fails, and opening the outbox again sets the file aside.

Numbers
    Session numbers and positions are never given twice, even when the outbox file is lost:
    they are also kept in ``<outbox>.counters`` (:mod:`cloud_bridge.uplink.counters`), written in place
    before a session is used and whenever positions cross a reserved block. A new outbox (after
    a set-aside, or when the file is missing) continues after the session and above the
    position ceiling kept there, so positions skip at most one block. When the counters file is
    unreadable too and the damaged file's own counters cannot be read, the wall clock is the
    floor: sessions continue after the Unix time in seconds and positions after it in
    milliseconds (a gateway would have to average a session a second, or a thousand envelopes
    a second, since 1970 to have used more); this needs the clock to be set.

Rows handed out by :meth:`read` and not yet released are *reserved* (read ahead or in flight):
neither the budget nor a full disk evicts them, so an envelope counted as dropped was never sent.

Reading
    :meth:`Outbox.read` gives the stored rows of a class after a position, oldest first. A
    reader that keeps up asks mostly for rows committed a moment ago, so each class keeps a
    *tail* in memory: exactly the stored rows above a position ``start``, in order, appended
    once their transaction committed, at most ``tail_max_rows`` rows and ``tail_max_bytes``
    (the oldest leave first, raising ``start``). A read after ``start`` (or of a class whose
    rows are all in the tail) is answered from it, without SQLite; any other read (a reader that
    fell behind, one that starts again from the oldest row after :meth:`release`) reads the
    file, and is back on the tail once past ``start``. Rows a read has passed leave the tail
    (they stay stored until acknowledged); a commit that deletes rows (acknowledged, or evicted by
    the budget or a full disk) drops the tail up to the highest of them. A failed transaction
    empties every tail. Both ways give the same rows (tested against the file).

Not thread-safe: the bridge calls it from one worker thread only (SQLite work stays off the
event loop). The same database keeps a copy of the bridge's session counter, its command audit
log and the nonces of accepted commands (:class:`SqliteNonces`), so everything the link must
remember across a crash is in one file, besides the counters file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from cloud_bridge.errors import TransientBridgeError
from cloud_bridge.uplink.counters import POS_BLOCK, CounterFile, Counters
from protocols import envelope as env
from protocols import topics
from protocols.session import OutboxClassStats, OutboxStats, SetAsideOutbox
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
        t = self.topic  # topics are ASCII but for a device named otherwise: no copy then
        return (len(t) if t.isascii() else len(t.encode())) + len(self.payload) + ROW_OVERHEAD


def record_of(item: env.Outgoing, topic: str | None = None) -> Record:
    """An envelope as the outbox stores it: its data topic (``topic`` when the caller knows
    it already), its JSON bytes (those of an :class:`~protocols.envelope.Encoded` as they
    are), and its class (telemetry may be dropped under the budget, events never before
    telemetry)."""
    return Record(
        topic or topics.data_topic(item.site, item.gateway, item.kind, item.device),
        env.wire_bytes(item),
        OutboxClass.TELEMETRY if item.kind in env.TELEMETRY_KINDS else OutboxClass.EVENT,
    )


class Row(NamedTuple):
    """A stored envelope as read back for publishing. A named tuple, not a frozen dataclass:
    one is made for every envelope sent, at less than half the cost."""

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
    check_timeout_s: float = 10.0  # the check at start gives up (and opens unchecked) after this
    reserve_bytes: int | None = None  # kept free for a full disk; None: wal_limit_bytes
    disk_probe_s: float = 1.0  # while the disk is full, look this often whether room came back
    tail_max_rows: int = 8192  # newest rows of a class kept in memory for reading (see "Reading")
    tail_max_bytes: int = 8 * 2**20  # and their bytes at most, per class
    classes: dict[OutboxClass, Overflow] = field(init=False)

    def __post_init__(self) -> None:
        if self.budget_bytes < 1024:
            raise ValueError("outbox budget must be at least 1024 bytes")
        if self.tail_max_rows < 0 or self.tail_max_bytes < 0:
            raise ValueError("the outbox's tail bounds must be 0 (no tail) or more")
        self.classes = {
            OutboxClass.TELEMETRY: self.telemetry_overflow,
            OutboxClass.EVENT: self.event_overflow,
        }


_INSERT_ROWS: Final = 199  # rows per INSERT: 995 parameters, below SQLite's oldest limit (999)


def _values(rows: int) -> str:
    return ",".join(["(?,?,?,?,?)"] * rows)


_VALUES: Final = _values(_INSERT_ROWS)
_UNKNOWN: Final = sys.maxsize  # a tail's start while what is stored is not known: read the file


class _Tail:
    """The newest stored rows of one class (see "Reading" in the module docstring), as they
    were inserted: :class:`Row` objects are made only for the rows a read returns.

    Invariant: ``rows`` holds, in position order, exactly every stored row of the class with a
    position above ``start`` (rows at or below ``start`` may be stored or not: it says nothing
    about them). Changed only after a transaction committed, on the outbox's one thread.
    """

    __slots__ = ("bytes", "cls", "max_bytes", "max_rows", "rows", "start")

    def __init__(self, cls: OutboxClass, max_rows: int, max_bytes: int) -> None:
        self.cls = cls
        self.rows: deque[_NewRow] = deque()
        self.start = _UNKNOWN
        self.bytes = 0
        self.max_rows = max_rows
        self.max_bytes = max_bytes

    def reset(self, start: int) -> None:
        """Nothing is stored above ``start`` (or :data:`_UNKNOWN`: not known)."""
        self.rows.clear()
        self.bytes = 0
        self.start = start

    def drop_through(self, pos: int) -> None:
        """Rows up to ``pos`` leave; the tail says nothing any more about positions up to it.
        Always safe: what stays is every stored row above ``pos``."""
        rows = self.rows
        freed = 0
        while rows and rows[0][0] <= pos:
            freed += rows.popleft()[2]
        self.bytes -= freed
        self.start = max(self.start, pos)

    def extend(self, rows: list[_NewRow], size: int) -> None:
        """Rows just committed (``size`` bytes), in order, above all stored before them (below
        ``start`` only after a read past the last position: those are left out)."""
        if rows[0][0] <= self.start:
            rows = [r for r in rows if r[0] > self.start]
            size = sum(r[2] for r in rows)
        self.rows.extend(rows)
        self.bytes += size
        while self.rows and (len(self.rows) > self.max_rows or self.bytes > self.max_bytes):
            self.drop_through(self.rows[0][0])

    def read(self, after: int, limit: int, depth: int) -> list[Row] | None:
        """The first ``limit`` rows after ``after``, or None when the tail cannot tell (read the
        file). ``depth``: how many rows of the class are stored (all of them in the tail: any
        ``after`` will do). Rows up to ``after`` leave the tail: the reader has passed them."""
        if limit <= 0 or self.start == _UNKNOWN:
            return None
        if after < self.start and len(self.rows) != depth:
            return None
        self.drop_through(after)
        c = self.cls
        return [Row(c, p, t, b) for p, _, _, t, b in islice(self.rows, limit)]


class OutboxError(TransientBridgeError):
    """The outbox file cannot be opened or written (permissions, I/O error): the sink fails and
    the supervisor starts it again."""


class OutboxFull(OutboxError):
    """The disk is full and no telemetry was left to drop: the records were not stored. The
    caller keeps them and tries again later. ``acked_done``: the acknowledged rows of the same
    call were deleted all the same (a delete frees room)."""

    def __init__(self, message: str, acked_done: bool) -> None:
        super().__init__(message)
        self.acked_done = acked_done


class OutboxDamaged(OutboxError):
    """SQLite found the file damaged while it was in use; opening it again sets it aside."""


@dataclass
class DiskFull:
    """The outbox's disk filled up at ``since``: the outbox keeps to ``limit`` bytes of rows
    (what it held then), dropping its oldest telemetry to make room, until the disk has room
    again."""

    since: float
    limit: int
    free_bytes: int
    dropped: int = 0  # telemetry dropped to make room since the disk filled


@dataclass(frozen=True)
class SetAside:
    """A damaged outbox file moved out of the way at start (see :meth:`Outbox.__init__`)."""

    file: str
    reason: str
    time: float
    last_pos: int  # positions up to here belong to the old file (or were skipped)


def _code(err: sqlite3.Error) -> int:
    return int(getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF  # the primary result code


def _is_full(err: sqlite3.Error) -> bool:
    return _code(err) == sqlite3.SQLITE_FULL


def _is_damage(err: sqlite3.Error) -> bool:
    return _code(err) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def disk_free(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Outbox:
    """Opening it (see the module docstring, "Damage" and "Numbers"): checks the file, sets a
    damaged one aside, and takes the session and position floors from the counters file."""

    def __init__(
        self,
        path: Path,
        settings: OutboxSettings,
        now: Callable[[], float],
        free_bytes: Callable[[Path], int] = disk_free,
    ) -> None:
        self.path = path
        self.settings = settings
        self._now = now
        self._free_bytes = free_bytes
        self.disk_full: DiskFull | None = None
        self.set_aside: SetAside | None = None  # by this opening
        self._reserve = Path(f"{path}.reserve")
        self._reserve_ok = False
        self._probed = 0.0
        self._disk_drops = 0  # by the transaction under way, for a full disk
        self._cls = {c: _ClassState(policy=settings.classes[c]) for c in OutboxClass}
        self._tails = {
            c: _Tail(c, settings.tail_max_rows, settings.tail_max_bytes) for c in OutboxClass
        }
        self._deleted: dict[OutboxClass, int] = {}  # the highest deleted, by the transaction
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._counters, known, problem = CounterFile.open(
                Path(f"{path}.counters"), settings.fsync
            )
        except OSError as err:
            raise OutboxError(f"cannot open the outbox {path}: {err}") from err
        if problem:
            log.warning("outbox %s: %s; the numbers come from the outbox file", path, problem)
        full_at_start = self._reserve.exists() and self._free() < self.reserve_bytes
        if full_at_start:  # SQLite needs room even to open the file (its -shm)
            self._reserve.unlink()
        try:
            self._open(known)
        except BaseException:
            self._counters.close()
            raise
        if not full_at_start:
            self._reserve_ok = self._make_reserve()
            if not self._reserve_ok:
                log.warning(
                    "outbox %s: no room for its disk reserve (%d bytes); a full disk may stop "
                    "it until room comes back",
                    path,
                    self.reserve_bytes,
                )
        else:  # keep what the reserve gave for SQLite to make room with
            self.disk_full = DiskFull(self._now(), self.bytes - self.bytes // 50, self._free())
            log.error(
                "outbox %s: its disk is full at start; the reserve was used to open it; "
                "dropping the oldest telemetry to make room, holding new envelopes in memory "
                "when none is left",
                path,
            )
        if self.depth:
            log.info(
                "outbox %s: %d envelopes (%d bytes) waiting from before the restart",
                self.path,
                self.depth,
                self.bytes,
            )

    # -- opening ------------------------------------------------------------------------------

    def _open(self, known: Counters | None) -> None:
        existed = self.path.exists()
        salvaged: tuple[int, int] | None = None
        damage = self._check() if existed else None
        for attempt in (1, 2):
            if damage is not None:
                salvaged = salvaged or self._salvage()
                self._move_aside(damage)
            try:
                self._db = sqlite3.connect(self.path, isolation_level=None)
            except sqlite3.Error as err:
                raise OutboxError(f"cannot open the outbox {self.path}: {err}") from err
            try:
                self._setup()
                self._load()
                break
            except sqlite3.Error as err:
                self._db.close()
                if not _is_damage(err) or attempt == 2:
                    raise OutboxError(f"cannot open the outbox {self.path}: {err}") from err
                damage = str(err)  # found past the check (or the check ran out of time)
        self._floors(known, existed, damage is not None, salvaged)

    def _check(self) -> str | None:
        """What is wrong with the file (None: nothing found), within ``check_timeout_s``."""
        if self.path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
        try:
            rows = self._bounded_query("PRAGMA quick_check(5)")
        except TimeoutError:
            log.warning(
                "outbox %s: its check did not finish within %.0f s; opening it unchecked",
                self.path,
                self.settings.check_timeout_s,
            )
            return None
        except sqlite3.Error as err:
            if _is_damage(err):
                return str(err)
            raise OutboxError(f"cannot open the outbox {self.path}: {err}") from err
        found = [
            line for r in rows for line in str(r[0]).splitlines() if not line.startswith("***")
        ]
        return None if found == ["ok"] else "; ".join(found)

    def _salvage(self) -> tuple[int, int] | None:
        """The session and position counters of a damaged file, when its meta table reads."""
        try:
            meta = dict(self._bounded_query("SELECT key, value FROM meta"))
            return int(meta.get("session", 0)), int(meta.get("last_pos", 0))
        except (sqlite3.Error, TimeoutError, TypeError, ValueError):
            return None

    def _bounded_query(self, sql: str) -> list[Any]:
        """Run ``sql`` on the file in a connection of its own, stopped after the check's
        deadline (TimeoutError)."""
        deadline = time.monotonic() + self.settings.check_timeout_s
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.set_progress_handler(lambda: int(time.monotonic() > deadline), 100)
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError as err:
            if _code(err) == sqlite3.SQLITE_INTERRUPT:
                raise TimeoutError(sql) from err
            raise
        finally:
            db.close()

    def _move_aside(self, reason: str) -> None:
        stamp = datetime.fromtimestamp(self._now(), UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        try:
            os.replace(self.path, target)
            wal = Path(f"{self.path}-wal")
            if wal.exists():
                os.replace(wal, Path(f"{target}-wal"))
            Path(f"{self.path}-shm").unlink(missing_ok=True)
        except OSError as err:
            raise OutboxError(
                f"the outbox {self.path} is damaged ({reason}) and cannot be set aside: {err}"
            ) from err
        self.set_aside = SetAside(str(target), reason, self._now(), 0)

    def _floors(
        self,
        known: Counters | None,
        existed: bool,
        replaced: bool,
        salvaged: tuple[int, int] | None,
    ) -> None:
        """Session and position floors: never below anything given before, even when the
        outbox file was lost (see the module docstring, "Numbers")."""
        k = known or Counters()
        old_session, old_pos = salvaged or (0, 0)
        self._session = max(k.session, self._meta("session"), old_session)
        last = self._meta("last_pos")
        kept = self._db.execute("SELECT 1 FROM meta WHERE key='last_pos'").fetchone()
        if not existed or replaced or kept is None:  # a new file (or one that never counted)
            last = max(last, k.pos_ceiling, old_pos)
            if existed and known is None and salvaged is None:
                # the file was there, its numbers are lost and so is the counters file: the wall
                # clock is the only floor left (see "Numbers")
                wall = self._now()
                self._session = max(self._session, int(wall))
                last = max(last, int(wall * 1000))
                log.error(
                    "outbox %s: the numbers given before are lost with it; sessions continue "
                    "after %d and positions after %d (from the wall clock)",
                    self.path,
                    self._session,
                    last,
                )
            elif not existed and known is not None:
                log.warning(
                    "outbox %s was missing; sessions continue after %d and positions after %d "
                    "(kept in %s)",
                    self.path,
                    self._session,
                    last,
                    self._counters.path,
                )
        self.last_pos = last
        self._ceiling = max(k.pos_ceiling, last + POS_BLOCK)
        self._write_counters()
        if self.set_aside is not None:
            self.set_aside = dataclasses.replace(self.set_aside, last_pos=last)
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            self._set_meta("last_pos", last)
            self._set_meta("session", self._session)
            if (a := self.set_aside) is not None:
                db.execute(
                    "INSERT INTO set_aside(at, file, reason, last_pos) VALUES(?, ?, ?, ?)",
                    (a.time, a.file, a.reason, a.last_pos),
                )
            db.execute("COMMIT")
        except sqlite3.Error as err:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if not _is_full(err):
                raise OutboxError(f"cannot open the outbox {self.path}: {err}") from err
            # started on a full disk: the counters file holds the numbers meanwhile
            log.warning("outbox %s: no room to note its counters in the file", self.path)
        if self.set_aside is not None:
            log.error(
                "outbox %s was damaged (%s): set aside as %s and kept for recovery (what it held "
                "is not sent); a new outbox continues after session %d and position %d",
                self.path,
                self.set_aside.reason,
                self.set_aside.file,
                self._session,
                last,
            )

    def _write_counters(self) -> None:
        try:
            self._counters.write(Counters(self._session, self._ceiling))
        except OSError as err:
            raise OutboxError(f"cannot write {self._counters.path}: {err}") from err

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
        # Debian builds SQLite with secure_delete on: every deleted row's page would be zeroed
        # and written again, which needs room in the WAL exactly when a full disk has none.
        db.execute("PRAGMA secure_delete=OFF")
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
        db.execute(
            "CREATE TABLE IF NOT EXISTS set_aside (n INTEGER PRIMARY KEY, at REAL NOT NULL, "
            "file TEXT NOT NULL, reason TEXT NOT NULL, last_pos INTEGER NOT NULL)"
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
        """Read the figures kept in memory from the file (after opening, or a failed write)."""
        highest = {}
        for c, st in self._cls.items():
            depth, size, top = self._db.execute(
                f"SELECT count(*), coalesce(sum(size), 0), coalesce(max(pos), 0) "  # noqa: S608
                f"FROM {_TABLE[c]}"
            ).fetchone()
            st.depth, st.bytes, highest[c] = int(depth), int(size), int(top)
            st.dropped = self._meta(f"dropped.{c.value}")
        self.last_pos = self._meta("last_pos")
        for c, tail in self._tails.items():  # empty: nothing is stored above the last position
            tail.reset(max(self.last_pos, highest[c]))

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

    @property
    def reserve_bytes(self) -> int:
        r = self.settings.reserve_bytes
        return self.settings.wal_limit_bytes if r is None else r

    def oldest_created(self, cls: OutboxClass) -> float | None:
        row = self._db.execute(
            f"SELECT created FROM {_TABLE[cls]} ORDER BY pos LIMIT 1"  # noqa: S608
        ).fetchone()
        return float(row[0]) if row else None

    def set_aside_files(self, limit: int = 3) -> list[SetAside]:
        """The damaged files this outbox replaced (the newest ``limit``)."""
        rows = self._db.execute(
            "SELECT file, reason, at, last_pos FROM set_aside ORDER BY n DESC LIMIT ?", (limit,)
        ).fetchall()
        return [SetAside(str(f), str(r), float(t), int(p)) for f, r, t, p in reversed(rows)]

    def stats(self) -> OutboxStats:
        now = self._now()
        with self._guard("read"):
            classes = {}
            for c, st in self._cls.items():
                oldest = self.oldest_created(c)
                classes[c.value] = OutboxClassStats(
                    depth=st.depth,
                    bytes=st.bytes,
                    dropped=st.dropped,
                    oldest_age_s=None if oldest is None else round(max(0.0, now - oldest), 3),
                )
            aside = [
                SetAsideOutbox(
                    file=a.file,
                    reason=a.reason,
                    time=datetime.fromtimestamp(a.time, UTC),
                    last_pos=a.last_pos,
                )
                for a in self.set_aside_files()
            ]
        return OutboxStats(
            depth=self.depth,
            bytes=self.bytes,
            budget_bytes=self.settings.budget_bytes,
            dropped=sum(st.dropped for st in self._cls.values()),
            last_pos=self.last_pos,
            classes=classes,
            set_aside=aside or None,
        )

    def file_sizes(self) -> tuple[int, int]:
        """Bytes on disk now: (the database file, its WAL)."""
        sizes = []
        for suffix in ("", "-wal"):
            p = Path(f"{self.path}{suffix}")
            sizes.append(p.stat().st_size if p.exists() else 0)
        return sizes[0], sizes[1]

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """SQLite errors as :class:`OutboxError` (:class:`OutboxDamaged` for a damaged file)."""
        try:
            yield
        except sqlite3.Error as err:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise self._error(what, err) from err

    # -- the spool ----------------------------------------------------------------------------

    def commit(
        self, records: Sequence[Record], acked: Iterable[tuple[OutboxClass, int]] = ()
    ) -> CommitResult:
        """Store ``records`` and delete ``acked`` rows in one durable transaction.

        Applies the budget after inserting; returns the positions given to ``records`` and the
        drops this commit caused. On a full disk it drops the oldest telemetry to make room (see
        "A full disk") and raises :class:`OutboxFull` when that is not enough: nothing of
        ``records`` was stored then. Raises :class:`OutboxError` when SQLite cannot write,
        :class:`OutboxDamaged` when it finds the file damaged.
        """
        acked = list(acked)
        self._probe_room()
        need = sum(r.size for r in records)
        acked_done = False
        for attempt in range(3):
            try:
                return self._transaction(records, acked)
            except sqlite3.Error as err:
                if not _is_full(err):
                    raise self._error("write", err) from err
                # rows are counted, pages are what fills: keep some slack below what was held
                self._disk_filled(err, (need + self.bytes // 50) << attempt)
            if acked:  # deletes alone may still fit, and they free room
                try:
                    self._transaction([], acked)
                except sqlite3.Error as err:
                    if not _is_full(err):
                        raise self._error("write", err) from err
                else:
                    acked, acked_done = [], True
            if not self._evictable():
                break
        free = self.disk_full.free_bytes if self.disk_full else 0
        raise OutboxFull(
            f"the disk of the outbox {self.path} is full ({free} bytes free) and no telemetry "
            "is left to drop",
            acked_done,
        )

    def _error(self, what: str, err: sqlite3.Error) -> OutboxError:
        kind = OutboxDamaged if _is_damage(err) else OutboxError
        return kind(f"cannot {what} the outbox {self.path}: {err}")

    def _transaction(
        self, records: Sequence[Record], acked: Sequence[tuple[OutboxClass, int]]
    ) -> CommitResult:
        """One write transaction; on any error rolled back, the figures read again, re-raised."""
        db = self._db
        now = self._now()
        positions: list[int] = []
        before = self.dropped
        pos = self.last_pos
        self._disk_drops = 0
        self._deleted = {}
        try:
            db.execute("BEGIN IMMEDIATE")
            gone: dict[OutboxClass, list[int]] = {}
            for c, p in acked:
                gone.setdefault(c, []).append(p)
            for c, done in gone.items():
                self._delete(c, done)
            by_cls: dict[OutboxClass, list[_NewRow]] = {}
            for r in records:
                pos += 1
                positions.append(pos)
                by_cls.setdefault(r.cls, []).append((pos, now, r.size, r.topic, r.payload))
            # Make room before inserting, so the file never holds more than the budget plus
            # what SQLite keeps free (pages freed here are reused by the inserts below).
            self._enforce_budget(by_cls)
            added: dict[OutboxClass, int] = {}
            for c, rows in by_cls.items():
                self._insert(c, rows)
                added[c] = sum(row[2] for row in rows)
                self._cls[c].depth += len(rows)
                self._cls[c].bytes += added[c]
            if records:
                self._set_meta("last_pos", pos)
                if pos > self._ceiling:  # reserve the next block before any of it is used
                    self._ceiling = pos + POS_BLOCK
                    self._write_counters()
            db.execute("COMMIT")
        except BaseException:
            for tail in self._tails.values():  # until _load has read what is stored
                tail.reset(_UNKNOWN)
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._load()
            raise
        self._grow_tails(by_cls, added)
        self.last_pos = pos
        if self.disk_full is not None:
            self.disk_full.dropped += self._disk_drops
        after = self.dropped
        return CommitResult(positions, {c: after[c] - before[c] for c in OutboxClass})

    def _grow_tails(
        self, inserted: dict[OutboxClass, list[_NewRow]], added: dict[OutboxClass, int]
    ) -> None:
        """After a commit: what it deleted leaves the tails, what it inserted (``added`` bytes
        per class) joins them."""
        for c, tail in self._tails.items():
            if (deleted := self._deleted.get(c)) is not None:
                # acknowledged (the head, normally) or evicted (maybe further in): the rows above
                # the highest one deleted are all still stored
                tail.drop_through(deleted)
            if rows := inserted.get(c):
                tail.extend(rows, added[c])

    # -- a full disk --------------------------------------------------------------------------

    def _disk_filled(self, err: sqlite3.Error, slack: int) -> None:
        """SQLite could not write for lack of disk: keep ``slack`` bytes below what is stored
        now, and give SQLite room to make room (the reserve goes, the WAL is folded into the
        database file)."""
        free = self._free()
        limit = max(0, self.bytes - slack)
        if self.disk_full is None:
            self.disk_full = DiskFull(self._now(), limit, free)
            log.error(
                "outbox %s: disk full (%s; %d bytes free): dropping the oldest telemetry to make "
                "room, holding new envelopes in memory when none is left",
                self.path,
                err,
                free,
            )
        else:
            self.disk_full.limit = min(self.disk_full.limit, limit)
            self.disk_full.free_bytes = free
        self._reserve.unlink(missing_ok=True)
        self._reserve_ok = False
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as ckpt:
            log.debug("outbox %s: checkpoint on a full disk failed: %s", self.path, ckpt)

    def _evictable(self) -> bool:
        """Is there stored telemetry a full disk may drop (not read out for sending)?"""
        st = self._cls[OutboxClass.TELEMETRY]
        row = self._db.execute(
            "SELECT 1 FROM telemetry WHERE pos > ? LIMIT 1", (st.reserved,)
        ).fetchone()
        return row is not None

    def _free(self) -> int:
        try:
            return self._free_bytes(self.path.parent)
        except OSError:
            return 0

    def _probe_room(self) -> None:
        """While the disk is full (or the reserve is missing), look at most every
        ``disk_probe_s`` whether room came back: twice the reserve free."""
        if self._reserve_ok and self.disk_full is None:
            return
        now = time.monotonic()
        if now - self._probed < self.settings.disk_probe_s:
            return
        self._probed = now
        free = self._free()
        if self.disk_full is not None:
            self.disk_full.free_bytes = free
        if free < 2 * self.reserve_bytes or not self._make_reserve():
            return
        self._reserve_ok = True
        if self.disk_full is not None:
            log.warning(
                "outbox %s: the disk has room again (%d bytes free); %d telemetry envelopes "
                "were dropped to make room while it was full",
                self.path,
                free,
                self.disk_full.dropped,
            )
            self.disk_full = None

    def _make_reserve(self) -> bool:
        """Keep ``reserve_bytes`` allocated beside the outbox, freed when the disk fills."""
        size = self.reserve_bytes
        if size == 0:
            return True
        try:
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < size:
                    os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError:
            self._reserve.unlink(missing_ok=True)
            return False
        return True

    # Statements that take or give many rows do it in few steps: Python's sqlite3 lets go of
    # the GIL around every step (a row of executemany, a row fetched), and each time the event
    # loop's thread takes it, the outbox's thread waits to get it back. Measured with a busy
    # thread beside it: 45-50 us of CPU per row inserted by executemany, 8-10 us by rows of
    # VALUES (5 us either way alone).

    def _insert(self, cls: OutboxClass, rows: list[_NewRow]) -> None:
        head = f"INSERT INTO {_TABLE[cls]}(pos, created, size, topic, payload) VALUES "  # noqa: S608
        for k in range(0, len(rows), _INSERT_ROWS):
            chunk = rows[k : k + _INSERT_ROWS]
            values = _VALUES if len(chunk) == _INSERT_ROWS else _values(len(chunk))
            self._db.execute(head + values, [v for row in chunk for v in row])

    def _delete(self, cls: OutboxClass, positions: list[int]) -> None:
        table = _TABLE[cls]
        st = self._cls[cls]
        lo, hi = min(positions), max(positions)
        if hi - lo + 1 == len(positions) and len(set(positions)) == len(positions):
            # a run without gaps (acknowledgements, normally): one range, counted in one step
            # and deleted in one, rather than a list to probe and a row back per row
            n, size, top = self._db.execute(
                f"SELECT count(*), coalesce(sum(size), 0), max(pos) FROM {table} "  # noqa: S608
                "WHERE pos BETWEEN ? AND ?",
                (lo, hi),
            ).fetchone()
            self._db.execute(f"DELETE FROM {table} WHERE pos BETWEEN ? AND ?", (lo, hi))  # noqa: S608
        else:
            rows = self._db.execute(
                f"DELETE FROM {table} WHERE pos IN ({','.join('?' * len(positions))}) "  # noqa: S608
                "RETURNING pos, size",
                positions,
            ).fetchall()
            n, size = len(rows), sum(int(r[1]) for r in rows)
            top = max((int(r[0]) for r in rows), default=None)
        st.depth -= int(n)
        st.bytes -= int(size)
        if top is not None:
            self._deleted[cls] = max(self._deleted.get(cls, 0), int(top))

    def _enforce_budget(self, incoming: dict[OutboxClass, list[_NewRow]]) -> None:
        """Drop until what is stored plus ``incoming`` fits the budget: class by class
        (telemetry first), each by its policy over its stored rows and its incoming ones in order
        (incoming rows are newer). Dropped incoming rows are removed from ``incoming``. On a full
        disk, then drop the oldest stored telemetry until it fits what the disk held."""
        budget = self.settings.budget_bytes
        excess = self.bytes + sum(r[2] for rows in incoming.values() for r in rows) - budget
        for c in OutboxClass:  # telemetry first, events last
            if excess <= 0:
                break
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
        full = self.disk_full
        if full is None:
            return
        excess = self.bytes + sum(r[2] for rows in incoming.values() for r in rows) - full.limit
        st = self._cls[OutboxClass.TELEMETRY]
        before = st.dropped
        self._evict_stored(OutboxClass.TELEMETRY, excess, "ASC")
        if st.dropped != before:
            self._disk_drops = st.dropped - before  # counted in DiskFull once committed
            self._set_meta(f"dropped.{OutboxClass.TELEMETRY.value}", st.dropped)

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
        """Up to ``limit`` rows of ``cls`` after position ``after``, oldest first; reserves them.
        From memory when the tail holds them (see "Reading"), else from the file."""
        st = self._cls[cls]
        out = self._tails[cls].read(after, limit, st.depth)
        if out is None:
            out = self._read_file(cls, after, limit)
        if out:
            st.reserved = max(st.reserved, out[-1].pos)
        return out

    def _read_file(self, cls: OutboxClass, after: int, limit: int) -> list[Row]:
        """What :meth:`read` gives, read from SQLite (reserves nothing)."""
        with self._guard("read"):
            rows = self._db.execute(
                f"SELECT pos, topic, payload FROM {_TABLE[cls]} WHERE pos > ? "  # noqa: S608
                "ORDER BY pos LIMIT ?",
                (after, limit),
            ).fetchall()
        return [Row(cls, int(p), str(t), bytes(b)) for p, t, b in rows]

    def release(self) -> None:
        """Nothing is read ahead or in flight any more (the link was lost)."""
        for st in self._cls.values():
            st.reserved = 0

    # -- session numbers, audit, nonces -------------------------------------------------------

    def next_session(self) -> int:
        """A new session number, one more than the last, written to the counters file before it
        is used (also on a full disk: the counters file is written in place)."""
        self._session += 1
        self._write_counters()
        db = self._db
        try:  # a copy in the database, for a counters file lost later; not needed on a full disk
            db.execute("BEGIN IMMEDIATE")
            self._set_meta("session", self._session)
            db.execute("COMMIT")
        except sqlite3.Error as err:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if not _is_full(err):
                raise self._error("write", err) from err
        return self._session

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
        self._counters.close()


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
