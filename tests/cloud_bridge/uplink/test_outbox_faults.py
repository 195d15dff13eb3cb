"""The outbox on a bad day: a damaged, emptied or missing file at start, a lost counters file,
and a full disk (SQLite's own SQLITE_FULL, made by a page limit on the connection)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cloud_bridge.uplink.counters import POS_BLOCK, SLOT, CounterFile, Counters
from cloud_bridge.uplink.outbox import (
    ROW_OVERHEAD,
    Outbox,
    OutboxClass,
    OutboxFull,
    OutboxSettings,
    Record,
)

T, E = OutboxClass.TELEMETRY, OutboxClass.EVENT
TOPIC = "cityedge/v1/s/g/telemetry/d"
NOW = 1_795_000_000.0


def rec(cls: OutboxClass = T, size: int = 400) -> Record:
    return Record(TOPIC, b"x" * (size - len(TOPIC) - ROW_OVERHEAD), cls)


class FakeDisk:
    """What the outbox's free-space probe sees."""

    def __init__(self) -> None:
        self.free = 10 * 2**30

    def __call__(self, _path: Path) -> int:
        return self.free


def open_outbox(path: Path, disk: FakeDisk | None = None, **kw: float) -> Outbox:
    settings = OutboxSettings(reserve_bytes=4096, disk_probe_s=0, **kw)  # type: ignore[arg-type]
    return Outbox(path, settings, lambda: NOW, disk or FakeDisk())


def stored(ob: Outbox, cls: OutboxClass) -> list[int]:
    rows = ob.read(cls, 0, 100_000)
    ob.release()
    return [r.pos for r in rows]


def used_outbox(path: Path) -> tuple[int, int]:
    """An outbox that gave 3 sessions and 600 positions, closed; (last session, last pos)."""
    ob = open_outbox(path)
    for _ in range(3):
        ob.next_session()
    for _ in range(6):
        ob.commit([rec() for _ in range(100)])
    ob.close()  # the last connection folds the WAL into the file
    assert not Path(f"{path}-wal").exists()
    return 3, 600


def empty(path: Path) -> None:
    path.write_bytes(b"")


def truncated(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 3)


def pages_overwritten(path: Path) -> None:
    with path.open("r+b") as f:
        for page in (1, 2, 3, 5, 8):
            f.seek(page * 4096)
            f.write(bytes(range(256)) * 16)


def not_a_database(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite file" * 400)


@pytest.mark.parametrize("damage", [empty, truncated, pages_overwritten, not_a_database])
def test_a_damaged_outbox_is_set_aside_and_numbers_go_on(
    tmp_path: Path, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    session, last = used_outbox(path)
    damage(path)
    caplog.set_level(logging.ERROR)
    ob = open_outbox(path)
    aside = ob.set_aside
    assert aside is not None and Path(aside.file).exists()
    assert Path(aside.file).name.startswith("o.db.damaged-")
    assert aside.file in caplog.text  # named in the log
    assert ob.depth == 0 and ob.last_pos >= last
    assert ob.next_session() > session  # never a session number given before
    positions = ob.commit([rec(), rec(E)]).positions
    assert min(positions) > last  # never a position given before
    stats = ob.stats()
    assert stats.set_aside is not None and [a.file for a in stats.set_aside] == [aside.file]
    ob.close()
    ob = open_outbox(path)  # the new file is sound: nothing more is set aside
    assert ob.set_aside is None and stored(ob, T) == [positions[0]]
    assert [a.file for a in ob.set_aside_files()] == [aside.file]


def test_a_missing_outbox_file_does_not_count_from_one_again(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    session, last = used_outbox(path)
    path.unlink()
    ob = open_outbox(path)
    assert ob.set_aside is None
    assert ob.next_session() == session + 1
    assert ob.commit([rec()]).positions[0] > last


def test_with_the_counters_file_lost_too_the_wall_clock_is_the_floor(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    used_outbox(path)
    empty(path)
    Path(f"{path}.counters").unlink()
    ob = open_outbox(path)
    assert ob.next_session() > NOW
    assert ob.commit([rec()]).positions[0] > NOW * 1000


def test_a_damaged_file_whose_counters_still_read_gives_them(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    session, last = used_outbox(path)
    Path(f"{path}.counters").write_bytes(b"\xff" * 2 * SLOT)  # both copies unreadable
    with path.open("r+b") as f:  # damage a data page of the telemetry table, not the meta table
        f.seek(path.stat().st_size - 4096)
        f.write(b"\x0d" + bytes(4095))
    ob = open_outbox(path)
    assert ob.set_aside is not None
    assert ob.next_session() == session + 1 and ob.last_pos == last


def test_counters_survive_a_torn_write_of_one_copy(tmp_path: Path) -> None:
    path = tmp_path / "c"
    counters, known, problem = CounterFile.open(path)
    assert known is None and not problem
    counters.write(Counters(7, 70_000))
    counters.write(Counters(8, 70_000))  # the newest copy: torn below
    counters.close()
    with path.open("r+b") as f:
        f.seek(SLOT)  # a new file holds generations 0 and 1; 8 was the fourth write, slot 1
        f.write(b"\0" * 20)
    counters, known, problem = CounterFile.open(path)
    assert known == Counters(7, 70_000) and not problem
    counters.close()


def test_the_check_at_start_has_a_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    used_outbox(path)
    caplog.set_level(logging.WARNING)
    ob = open_outbox(path, check_timeout_s=0.0)  # no time at all: opened unchecked
    assert "did not finish" in caplog.text
    assert ob.set_aside is None and ob.depth == 600


class Unchecked(Outbox):
    """An outbox whose check at start ran out of time (it then opens the file unchecked)."""

    def _check(self) -> str | None:
        return None


def test_damage_the_check_did_not_see_is_found_on_opening_and_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    session, last = used_outbox(path)
    pages_overwritten(path)
    ob = Unchecked(path, OutboxSettings(reserve_bytes=4096), lambda: NOW, FakeDisk())
    assert ob.set_aside is not None and "malformed" in ob.set_aside.reason
    assert ob.next_session() > session and ob.last_pos >= last


def test_positions_are_reserved_in_blocks_ahead_of_use(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = open_outbox(path)
    ob.commit([rec()])
    counters, known, _ = CounterFile.open(Path(f"{path}.counters"))
    counters.close()
    assert known is not None and known.pos_ceiling >= POS_BLOCK  # written before use
    ob.close()


# -- a full disk --------------------------------------------------------------------------------


def fill_disk(ob: Outbox) -> None:
    """From now on the database file cannot grow (SQLite answers SQLITE_FULL)."""
    (pages,) = ob._db.execute("PRAGMA page_count").fetchone()
    ob._db.execute(f"PRAGMA max_page_count={pages}")


def free_disk(ob: Outbox, disk: FakeDisk) -> None:
    ob._db.execute("PRAGMA max_page_count=4294967294")
    disk.free = 10 * 2**30


def test_a_full_disk_drops_the_oldest_telemetry_counted_and_keeps_events(tmp_path: Path) -> None:
    disk = FakeDisk()
    ob = open_outbox(tmp_path / "o.db", disk)
    ob.commit([rec(E) for _ in range(20)])  # 1..20
    ob.commit([rec() for _ in range(300)])  # 21..320
    fill_disk(ob)
    disk.free = 0

    result = ob.commit([rec() for _ in range(50)])  # 321..370: room made from the oldest
    assert result.positions == list(range(321, 371))
    assert ob.disk_full is not None and result.dropped[T] >= 50 and result.dropped[E] == 0
    tele = stored(ob, T)
    assert tele[-50:] == list(range(321, 371)) and tele[0] == 21 + result.dropped[T]
    assert stored(ob, E) == list(range(1, 21))  # events are never dropped for a full disk

    result = ob.commit([rec(E) for _ in range(20)])  # events take telemetry's room
    assert result.dropped == {T: result.dropped[T], E: 0} and stored(ob, E)[-1] == 390
    assert ob.dropped[T] == ob.disk_full.dropped  # every drop counted, on disk too
    assert ob.stats().classes["telemetry"].dropped == ob.dropped[T]

    # telemetry in flight is never dropped: with all of it read out, nothing is left to drop
    ob.read(T, 0, 100_000)
    depth, last = ob.depth, ob.last_pos
    with pytest.raises(OutboxFull, match="no telemetry is left to drop"):
        ob.commit([rec(E) for _ in range(200)])
    assert (ob.depth, ob.last_pos) == (depth, last)  # nothing of it stored, no position taken

    free_disk(ob, disk)  # room again: taken as before, without reopening
    before = ob.dropped[T]
    result = ob.commit([rec(E) for _ in range(200)])
    assert result.positions == list(range(last + 1, last + 201))
    assert ob.disk_full is None and ob.dropped[T] == before
    assert Path(f"{ob.path}.reserve").stat().st_size == 4096  # the reserve is back


def test_on_a_full_disk_acknowledged_rows_are_deleted_even_when_nothing_fits(
    tmp_path: Path,
) -> None:
    disk = FakeDisk()
    ob = open_outbox(tmp_path / "o.db", disk)
    ob.commit([rec(E) for _ in range(100)])
    fill_disk(ob)
    disk.free = 0
    with pytest.raises(OutboxFull) as err:
        ob.commit([rec(E, 4000) for _ in range(100)], acked=[(E, p) for p in range(1, 11)])
    assert err.value.acked_done and stored(ob, E) == list(range(11, 101))


def test_opened_on_a_full_disk_it_uses_its_reserve_and_keeps_to_what_it_holds(
    tmp_path: Path,
) -> None:
    disk = FakeDisk()
    path = tmp_path / "o.db"
    ob = open_outbox(path, disk)
    ob.commit([rec() for _ in range(100)])
    ob.close()
    reserve = Path(f"{path}.reserve")
    assert reserve.stat().st_size == 4096
    disk.free = 0  # another program filled the disk while the gateway was down
    ob = open_outbox(path, disk)
    assert ob.disk_full is not None and not reserve.exists()  # spent on opening
    result = ob.commit([rec() for _ in range(10)])
    assert result.dropped[T] >= 10 and ob.depth <= 100  # room made from the oldest: no growth
    disk.free = 10 * 2**30
    ob.commit([rec()])
    assert ob.disk_full is None and reserve.exists()
