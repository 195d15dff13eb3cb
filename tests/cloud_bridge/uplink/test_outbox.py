"""The durable outbox: positions, acknowledgements, the disk budget, crashes, sessions, nonces."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloud_bridge.uplink.outbox import (
    ROW_OVERHEAD,
    Outbox,
    OutboxClass,
    OutboxSettings,
    Record,
    SqliteNonces,
)
from protocols.signed import SignatureRefused

T, E = OutboxClass.TELEMETRY, OutboxClass.EVENT
TOPIC = "cityedge/v1/s/g/telemetry/d"


def rec(cls: OutboxClass = T, size: int = 100) -> Record:
    return Record(TOPIC, b"x" * (size - len(TOPIC) - ROW_OVERHEAD), cls)


def open_outbox(path: Path, budget: int = 1_000_000, **kw: str) -> Outbox:
    return Outbox(path, OutboxSettings(budget_bytes=budget, **kw), lambda: 1000.0)  # type: ignore[arg-type]


def stored(ob: Outbox, cls: OutboxClass) -> list[int]:
    rows = ob.read(cls, 0, 10_000)
    ob.release()  # only looking: nothing is on its way to the broker
    return [r.pos for r in rows]


def test_positions_are_contiguous_and_survive_reopening(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db")
    assert ob.commit([rec(), rec(E), rec()]).positions == [1, 2, 3]
    ob.commit([], acked=[(T, 1)])
    ob.close()
    ob = open_outbox(tmp_path / "o.db")
    assert (ob.depth, ob.last_pos, ob.bytes) == (2, 3, 200)
    assert ob.commit([rec()]).positions == [4]
    assert stored(ob, T) == [3, 4] and stored(ob, E) == [2]
    row = ob.read(E, 0, 1)[0]
    assert (row.topic, len(row.payload)) == (TOPIC, 100 - len(TOPIC) - ROW_OVERHEAD)


def test_budget_drops_telemetry_oldest_first_then_events(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db", budget=10_000)
    ob.commit([rec(E, 1000) for _ in range(3)])  # 1..3
    ob.commit([rec(T, 1000) for _ in range(7)])  # 4..10: exactly full
    result = ob.commit([rec(T, 1000) for _ in range(2)])  # 11, 12: two oldest telemetry go
    assert result.dropped == {T: 2, E: 0}
    assert stored(ob, T) == [6, 7, 8, 9, 10, 11, 12] and stored(ob, E) == [1, 2, 3]
    result = ob.commit([rec(E, 1000) for _ in range(9)])  # 13..21: all telemetry, then old events
    assert stored(ob, T) == []
    assert stored(ob, E) == [3, *range(13, 22)]
    assert ob.bytes <= 10_000
    assert ob.dropped == {T: 9, E: 2}
    ob.close()
    assert open_outbox(tmp_path / "o.db", budget=10_000).dropped == {T: 9, E: 2}  # kept on disk


def test_a_batch_larger_than_the_budget_keeps_its_newest_telemetry(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db", budget=5_000)
    result = ob.commit([rec(T, 1000) for _ in range(8)] + [rec(E, 1000)])
    assert result.positions == list(range(1, 10))  # dropped ones still took their position
    assert stored(ob, T) == [5, 6, 7, 8] and stored(ob, E) == [9]
    assert result.dropped == {T: 4, E: 0}


def test_drop_newest_policy_refuses_new_telemetry(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db", budget=3_000, telemetry_overflow="drop_newest")
    ob.commit([rec(T, 1000) for _ in range(3)])
    ob.commit([rec(T, 1000) for _ in range(2)])
    assert stored(ob, T) == [1, 2, 3]


def test_rows_read_ahead_or_in_flight_are_never_dropped(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db", budget=3_000)
    ob.commit([rec(T, 1000) for _ in range(3)])
    assert [r.pos for r in ob.read(T, 0, 2)] == [1, 2]  # handed to the link
    ob.commit([rec(T, 1000)])
    assert stored(ob, T) == [1, 2, 4]  # 3 went instead of the reserved 1 and 2
    ob.release()
    ob.commit([rec(T, 1000)])
    assert stored(ob, T) == [2, 4, 5]


def test_a_crash_in_the_middle_of_a_commit_loses_only_that_commit(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    script = textwrap.dedent(
        f"""
        import os, sqlite3
        from pathlib import Path
        from cloud_bridge.uplink.outbox import Outbox, OutboxSettings, Record, OutboxClass
        ob = Outbox(Path({str(path)!r}), OutboxSettings(), lambda: 1.0)
        ob.commit([Record("t", b"x", OutboxClass.TELEMETRY) for _ in range(100)])
        ob._db.execute("BEGIN IMMEDIATE")
        ob._db.execute("INSERT INTO telemetry VALUES (101, 1, 1, 't', x'00')")
        ob._db.execute("UPDATE meta SET value=101 WHERE key='last_pos'")
        os._exit(9)  # as a kill -9 or a power cut between writing and committing
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False)
    assert done.returncode == 9
    ob = open_outbox(path)
    assert (ob.last_pos, ob.depth) == (100, 100)
    assert ob.commit([rec()]).positions == [101]


def test_session_numbers_grow_across_restarts(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db")
    assert [ob.next_session(), ob.next_session()] == [1, 2]
    ob.close()
    assert open_outbox(tmp_path / "o.db").next_session() == 3


def test_nonces_are_refused_again_after_a_restart_and_stay_bounded(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db")
    nonces = ob.nonces(capacity=3)
    nonces.check_and_add("a", 2000, now=1000)
    with pytest.raises(SignatureRefused, match="replayed"):
        nonces.check_and_add("a", 2000, now=1000)
    ob.close()
    ob = open_outbox(tmp_path / "o.db")
    nonces = ob.nonces(capacity=3)
    with pytest.raises(SignatureRefused, match="replayed"):
        nonces.check_and_add("a", 2000, now=1000)
    for n, exp in (("b", 2100), ("c", 2200), ("d", 2300)):
        nonces.check_and_add(n, exp, now=1000)
    assert nonces.floor == 2000  # "a" was forgotten, and anything expiring by then is refused
    with pytest.raises(SignatureRefused, match="replayed"):
        nonces.check_and_add("fresh", 1500, now=1000)
    assert isinstance(nonces, SqliteNonces)


def test_audit_keeps_what_happened(tmp_path: Path) -> None:
    ob = open_outbox(tmp_path / "o.db")
    ob.audit(request="r1", kid="ops", command="ping", ok=True, reason=None, message="done")
    ob.audit(request=None, kid=None, command=None, ok=False, reason="unsigned", message="no sig")
    log = ob.audit_log()
    assert [(a["request"], a["ok"], a["reason"]) for a in log] == [
        ("r1", 1, None),
        (None, 0, "unsigned"),
    ]


def test_settings_and_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1024"):
        OutboxSettings(budget_bytes=100)
    from cloud_bridge.uplink.outbox import OutboxError

    (tmp_path / "dir.db").mkdir()
    with pytest.raises(OutboxError, match="cannot open the outbox"):
        open_outbox(tmp_path / "dir.db")
