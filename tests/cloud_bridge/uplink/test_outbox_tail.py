"""The outbox's in-memory tail: a caught-up reader is served without SQLite, and every read gives
exactly what the file holds (random commits, acknowledgements, reads, releases, evictions, full
disks, failed transactions and reopenings, checked against a query of the same database)."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from cloud_bridge.uplink.outbox import (
    _UNKNOWN,
    ROW_OVERHEAD,
    Outbox,
    OutboxClass,
    OutboxError,
    OutboxFull,
    OutboxSettings,
    Record,
    Row,
)
from tests.cloud_bridge.uplink.test_outbox_faults import FakeDisk

T, E = OutboxClass.TELEMETRY, OutboxClass.EVENT
TOPIC = "cityedge/v1/s/g/telemetry/d"
NOW = 1_795_000_000.0


def rec(cls: OutboxClass = T, size: int = 100, n: int = 0) -> Record:
    body = f"{n:08d}".encode()
    return Record(TOPIC, (body * size)[: size - len(TOPIC) - ROW_OVERHEAD], cls)


def open_outbox(path: Path, disk: FakeDisk | None = None, **kw: Any) -> Outbox:
    kw.setdefault("budget_bytes", 10_000_000)
    settings = OutboxSettings(reserve_bytes=4096, disk_probe_s=0, fsync=False, **kw)
    return Outbox(path, settings, lambda: NOW, disk or FakeDisk())


class FileReads:
    """Counts the reads of rows that went to SQLite."""

    def __init__(self, ob: Outbox) -> None:
        self.statements: list[str] = []
        ob._db.set_trace_callback(self.statements.append)

    def take(self) -> int:
        n = sum(s.startswith("SELECT pos, topic, payload") for s in self.statements)
        self.statements.clear()
        return n


def positions(rows: list[Row]) -> list[int]:
    return [r.pos for r in rows]


@pytest.fixture
def ob(tmp_path: Path) -> Iterator[Outbox]:
    outbox = open_outbox(tmp_path / "o.db", tail_max_rows=100)
    yield outbox
    outbox.close()


def test_a_caught_up_reader_is_served_from_memory(ob: Outbox) -> None:
    reads = FileReads(ob)
    assert ob.read(E, 0, 64) == []  # nothing stored, all of it known: no query
    ob.commit([rec(n=i) for i in range(10)] + [rec(E)])  # 1..10 telemetry, 11 an event
    rows = ob.read(T, 0, 4)
    assert positions(rows) == [1, 2, 3, 4] and reads.take() == 0
    assert positions(ob.read(T, 4, 100)) == list(range(5, 11))
    assert positions(ob.read(E, 0, 64)) == [11]
    assert reads.take() == 0
    assert rows == ob._read_file(T, 0, 4)  # the same rows as the file gives
    reads.take()
    ob.commit([rec(n=11)], acked=[(T, p) for p in range(1, 11)])
    assert positions(ob.read(T, 10, 100)) == [12] and reads.take() == 0
    assert ob.read(T, 12, 100) == [] and reads.take() == 0


def test_a_reader_behind_the_bound_reads_the_file_until_it_caught_up(ob: Outbox) -> None:
    reads = FileReads(ob)
    ob.commit([rec(n=i) for i in range(300)])  # the tail keeps 201..300
    after, served = 0, []
    while rows := ob.read(T, after, 50):
        served.append(reads.take())
        assert rows == ob._read_file(T, after, 50)
        reads.take()
        after = rows[-1].pos
    assert after == 300
    assert served == [1, 1, 1, 1, 0, 0]  # 1..200 from the file, 201..300 from memory
    ob.commit([rec(n=300)])
    assert positions(ob.read(T, 300, 50)) == [301] and reads.take() == 0


def test_the_bound_in_bytes_keeps_the_newest(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db", tail_max_bytes=1000)
    reads = FileReads(ob)
    ob.commit([rec(size=300, n=i) for i in range(10)])  # the tail keeps 8..10
    assert positions(ob.read(T, 6, 2)) == [7, 8] and reads.take() == 1
    assert positions(ob.read(T, 7, 5)) == [8, 9, 10] and reads.take() == 0


def test_evicted_rows_never_come_out_of_the_tail(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db", budget_bytes=10_000)
    reads = FileReads(ob)
    ob.commit([rec(size=1000, n=i) for i in range(10)])  # 1..10: the budget is full
    assert positions(ob.read(T, 0, 2)) == [1, 2] and reads.take() == 0  # reserved
    result = ob.commit([rec(size=1000, n=i) for i in (10, 11)])  # 3 and 4 go for 11 and 12
    assert result.dropped[T] == 2
    rows = ob.read(T, 2, 100)
    assert positions(rows) == [5, 6, 7, 8, 9, 10, 11, 12] and reads.take() == 1
    assert positions(ob.read(T, 12, 100)) == [] and reads.take() == 0
    ob.commit([rec(size=1000, n=12)], acked=[(T, 1), (T, 2)])
    assert positions(ob.read(T, 12, 100)) == [13] and reads.take() == 0


def test_stored_rows_dropped_newest_first_leave_the_tail(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db", budget_bytes=3_000, telemetry_overflow="drop_newest")
    ob.commit([rec(T, 1000, n=i) for i in range(3)])  # 1..3: telemetry fills the budget
    ob.commit([rec(E, 1000)])  # 4: telemetry gives way, its newest first: 3 is dropped
    assert positions(ob.read(T, 0, 10)) == [1, 2] == positions(ob._read_file(T, 0, 10))


def test_acknowledged_rows_do_not_come_out_after_a_release(ob: Outbox) -> None:
    reads = FileReads(ob)
    ob.commit([rec(n=i) for i in range(10)])
    assert positions(ob.read(T, 0, 10)) == list(range(1, 11))
    ob.commit([], acked=[(T, p) for p in range(1, 6)])  # acknowledged: deleted
    ob.release()  # the link was lost: the next session starts from the oldest row again
    assert positions(ob.read(T, 0, 10)) == list(range(6, 11)) and reads.take() == 0


def test_acknowledgements_out_of_order_drop_the_tail_up_to_the_highest(ob: Outbox) -> None:
    reads = FileReads(ob)
    ob.commit([rec(n=i) for i in range(10)])
    ob.read(T, 0, 10)
    ob.commit([rec(n=10)], acked=[(T, 4), (T, 1)])
    assert positions(ob.read(T, 10, 100)) == [11] and reads.take() == 0  # the reader goes on
    ob.release()
    rows = ob.read(T, 0, 100)  # 2 and 3 are still stored, below what the tail holds
    assert positions(rows) == [2, 3, *range(5, 12)] and reads.take() == 1
    assert rows == ob._read_file(T, 0, 100)


def test_a_failed_transaction_empties_the_tails(
    ob: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    ob.commit([rec(n=i) for i in range(5)] + [rec(E)])  # 1..5, 6
    assert positions(ob.read(T, 0, 2)) == [1, 2]

    def broken(key: str, value: int) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ob, "_set_meta", broken)
    with pytest.raises(OutboxError, match="disk I/O error"):
        ob.commit([rec(n=9)], acked=[(T, 1), (T, 2)])
    monkeypatch.undo()
    assert all(not t.rows and t.start == 6 for t in ob._tails.values())
    reads = FileReads(ob)
    rows = ob.read(T, 0, 100)  # nothing of the failed commit: 1 and 2 are still there
    assert positions(rows) == [1, 2, 3, 4, 5] and reads.take() == 1
    ob.commit([rec(n=7)])
    assert positions(ob.read(T, 5, 100)) == [7] and reads.take() == 1  # 6 may be stored: ask
    ob.commit([rec(n=8)])
    assert positions(ob.read(T, 7, 100)) == [8] and reads.take() == 0


def test_reopening_starts_with_empty_tails(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db")
    ob.commit([rec(n=i) for i in range(5)])
    ob.close()
    ob = open_outbox(tmp_path / "o.db")
    assert all(not t.rows and t.start == 5 for t in ob._tails.values())
    reads = FileReads(ob)
    assert positions(ob.read(T, 0, 100)) == [1, 2, 3, 4, 5] and reads.take() == 1
    assert ob.read(E, 0, 100) == [] and reads.take() == 0  # no events stored: none to look for
    ob.commit([rec(n=6)])
    assert positions(ob.read(T, 5, 100)) == [6] and reads.take() == 0


def test_tail_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="tail bounds"):
        OutboxSettings(tail_max_rows=-1)


# -- every read as the file says ----------------------------------------------------------------

classes = st.sampled_from([T, E])


class TailAgainstFile(RuleBasedStateMachine):
    """A reader like the bridge's (one ``after`` per class, from 0 again after a release) and
    strange ones (any ``after``), against a writer that commits, acknowledges (in order or not),
    overflows its budget, fills its disk, fails and reopens. Every read must equal the query."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "o.db"
        self.disk = FakeDisk()
        self.kw: dict[str, Any] = {}
        self.after = dict.fromkeys(OutboxClass, 0)
        self.sent: list[tuple[OutboxClass, int]] = []  # read, not yet acknowledged
        self.last_read: list[tuple[OutboxClass, int]] = []
        self.n = 0
        self.full = False

    def teardown(self) -> None:
        self.ob.close()
        self.dir.cleanup()

    @initialize(
        budget=st.sampled_from([4_000, 50_000, 10_000_000]),
        tail_rows=st.sampled_from([0, 3, 16, 8192]),
        tail_bytes=st.sampled_from([3_000, 8 * 2**20]),
        overflow=st.sampled_from(["drop_oldest", "drop_newest"]),
    )
    def open(self, budget: int, tail_rows: int, tail_bytes: int, overflow: str) -> None:
        self.kw = dict(
            budget_bytes=budget,
            tail_max_rows=tail_rows,
            tail_max_bytes=tail_bytes,
            telemetry_overflow=overflow,
            event_overflow="drop_oldest",
        )
        self.ob = open_outbox(self.path, self.disk, **self.kw)

    @rule(
        batch=st.lists(st.tuples(classes, st.integers(60, 1500)), max_size=30),
        acks=st.integers(1, 40),
        shuffled=st.booleans(),
        data=st.data(),
    )
    def commit(
        self, batch: list[tuple[OutboxClass, int]], acks: int, shuffled: bool, data: st.DataObject
    ) -> None:
        if shuffled and self.last_read:  # some of the last rows read, in any order
            pick = st.sampled_from(self.last_read)
            acked = data.draw(st.lists(pick, unique=True, min_size=1, max_size=acks))
        else:  # the oldest first, as the broker acknowledges
            acked = self.sent[:acks]
        records = []
        for cls, size in batch:
            self.n += 1
            records.append(rec(cls, size, self.n))
        try:
            self.ob.commit(records, acked)
        except OutboxFull as err:
            if not err.acked_done:
                return
        self.sent = [s for s in self.sent if s not in set(acked)]

    @rule(
        cls=classes,
        limit=st.integers(1, 40),
        where=st.sampled_from(["reader", "reader", "reader", "oldest", "any", "beyond"]),
        data=st.data(),
    )
    def read(self, cls: OutboxClass, limit: int, where: str, data: st.DataObject) -> None:
        if where == "reader":
            after = self.after[cls]
        elif where == "oldest":
            after = 0
        elif where == "any":
            after = data.draw(st.integers(0, self.ob.last_pos))
        else:  # past every position given yet
            after = self.ob.last_pos + data.draw(st.integers(1, 3))
        expected = self.ob._read_file(cls, after, limit)
        got = self.ob.read(cls, after, limit)
        assert got == expected
        assert all(type(r) is Row and type(r.payload) is bytes for r in got)
        if where == "reader" and got:
            self.after[cls] = got[-1].pos
            self.last_read = [(cls, r.pos) for r in got]
            self.sent += self.last_read

    @rule()
    def release(self) -> None:
        self.ob.release()
        self.after = dict.fromkeys(OutboxClass, 0)

    @rule()
    def reopen(self) -> None:
        self.ob.close()
        self.ob = open_outbox(self.path, self.disk, **self.kw)
        self.after = dict.fromkeys(OutboxClass, 0)
        self.full = False

    @rule(batch=st.integers(1, 5))
    def failed_commit(self, batch: int) -> None:
        def broken(key: str, value: int) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        self.ob._set_meta = broken  # type: ignore[method-assign]
        try:
            with pytest.raises(OutboxError):
                self.ob.commit([rec(T, 100, -1) for _ in range(batch)], self.sent[:3])
        finally:
            del self.ob._set_meta

    @precondition(lambda self: not self.full)
    @rule()
    def fill_disk(self) -> None:
        (pages,) = self.ob._db.execute("PRAGMA page_count").fetchone()
        self.ob._db.execute(f"PRAGMA max_page_count={pages}")
        self.disk.free = 0
        self.full = True

    @precondition(lambda self: self.full)
    @rule()
    def free_disk(self) -> None:
        self.ob._db.execute("PRAGMA max_page_count=4294967294")
        self.disk.free = 10 * 2**30
        self.full = False

    @invariant()
    def tails_hold_what_is_stored(self) -> None:
        if not hasattr(self, "ob"):
            return
        for c, tail in self.ob._tails.items():
            assert tail.start != _UNKNOWN
            stored = positions(self.ob._read_file(c, tail.start, 10**9))
            assert [r[0] for r in tail.rows] == stored
            assert tail.bytes == sum(r[2] for r in tail.rows)
            assert len(tail.rows) <= tail.max_rows and tail.bytes <= tail.max_bytes
            (depth,) = self.ob._db.execute(f"SELECT count(*) FROM {c.value}").fetchone()
            assert self.ob._cls[c].depth == depth


TailAgainstFile.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
test_every_read_is_what_the_file_holds = TailAgainstFile.TestCase
