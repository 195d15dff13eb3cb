"""The audit log: intact chains verify; any edit, removal, insertion, reordering or cut is found."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.face_access.audit import AuditLog

KEY = b"k" * 32


def filled(tmp_path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(tmp_path / "audit.log", KEY)
    for i in range(n):
        log.append(
            "decision" if i % 2 else "enroll", f"p-{i}", {"i": i, "score": 0.1 * i}, 1000.0 + i
        )
    return log


def lines(log: AuditLog) -> list[str]:
    return log.path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_an_intact_log_verifies(tmp_path: Path) -> None:
    log = filled(tmp_path)
    v = log.verify()
    assert (v.ok, v.entries, v.problem) == (True, 5, None)
    entry = json.loads(lines(log)[2])
    assert entry["seq"] == 3 and entry["subject"] == "p-2" and len(entry["mac"]) == 64
    assert AuditLog(tmp_path / "none.log", KEY).verify().ok  # no log yet is fine


def _edit(ls: list[str]) -> list[str]:
    e = json.loads(ls[2])
    e["detail"]["score"] = 0.0  # someone improves a score
    ls[2] = json.dumps(e) + "\n"
    return ls


def _relabel(ls: list[str]) -> list[str]:
    return [ls[0], ls[1], ls[2].replace('"p-2"', '"p-9"'), *ls[3:]]


@pytest.mark.parametrize(
    ("tamper", "line", "problem"),
    [
        (_edit, 3, "mac does not match"),
        (_relabel, 3, "mac does not match"),
        (lambda ls: ls[:2] + ls[3:], 3, "chain broken"),  # a line removed
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], 2, "chain broken"),  # reordered
        (lambda ls: [*ls[:2], ls[1], *ls[2:]], 3, "chain broken"),  # a line duplicated
        (lambda ls: [*ls[:2], "garbage\n", *ls[2:]], 3, "not a log entry"),
        (lambda ls: [*ls[:2], '{"seq": 3}\n', *ls[2:]], 3, "not a log entry"),
    ],
)
def test_tampering_is_found_at_its_line(
    tmp_path: Path, tamper: Callable[[list[str]], list[str]], line: int, problem: str
) -> None:
    log = filled(tmp_path)
    log.path.write_text("".join(tamper(lines(log))), encoding="utf-8")
    v = log.verify()
    assert not v.ok
    assert v.line == line and problem in (v.problem or ""), v


def test_cutting_entries_off_the_end_is_found_by_the_head(tmp_path: Path) -> None:
    log = filled(tmp_path)
    log.path.write_text("".join(lines(log)[:3]), encoding="utf-8")
    v = log.verify()
    assert not v.ok and "cut off" in (v.problem or "")
    log.head_path.unlink()
    assert "head file" in (log.verify().problem or "")


def test_a_forged_head_is_found(tmp_path: Path) -> None:
    log = filled(tmp_path)
    head = json.loads(log.head_path.read_text(encoding="utf-8"))
    head["seq"] = 3
    log.head_path.write_text(json.dumps(head), encoding="utf-8")
    assert "head file was changed" in (log.verify().problem or "")


def test_rewriting_the_chain_needs_the_key(tmp_path: Path) -> None:
    log = filled(tmp_path)
    forger = AuditLog(tmp_path / "forged.log", b"x" * 32)
    for raw in lines(log):
        e = json.loads(raw)
        forger.append(e["action"], e["subject"], e["detail"], e["time"])
    forger.path.replace(log.path)
    forger.head_path.replace(log.head_path)
    v = log.verify()
    assert not v.ok and v.line == 1 and "mac" in (v.problem or "")


def test_appends_continue_the_chain_across_instances(tmp_path: Path) -> None:
    filled(tmp_path, 2)
    AuditLog(tmp_path / "audit.log", KEY).append("delete", "p-0", {}, 2000.0)
    v = AuditLog(tmp_path / "audit.log", KEY).verify()
    assert v.ok and v.entries == 3
