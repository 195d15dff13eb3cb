"""The tamper-evident audit log: every enrolment, erasure and gate decision, hash-chained.

One JSON object per line::

    {"seq": 7, "time": 1700000000.0, "action": "decision", "subject": "p-102",
     "detail": {...}, "prev": "<mac of line 6>", "mac": "<HMAC-SHA256 of this line>"}

``mac`` is HMAC-SHA256, keyed from the gateway secret (:mod:`edge.face_access.keys`), over ``prev``
and the canonical JSON (sorted keys, no spaces) of the line without ``mac``; the first line's
``prev`` is 64 zeros. Changing, removing, inserting or reordering a line breaks the chain at that
line; rewriting the chain needs the key. Cutting lines off the end is caught by the head file
(``<log>.head``: the last ``seq`` and ``mac``, itself MAC'd), which every append rewrites.

Lines name people by id only — never names, images or templates. Appends take an exclusive
``flock`` so the gateway and the CLI can both write.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    problem: str | None = None
    line: int | None = None  # 1-based line of the first bad entry


class AuditLog:
    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self._key = key
        path.parent.mkdir(parents=True, exist_ok=True)

    def _mac(self, prev: str, body: dict[str, Any]) -> str:
        return hmac.new(self._key, prev.encode() + _canonical(body), hashlib.sha256).hexdigest()

    def _head_mac(self, seq: int, mac: str) -> str:
        return hmac.new(self._key, f"head:{seq}:{mac}".encode(), hashlib.sha256).hexdigest()

    def append(self, action: str, subject: str, detail: dict[str, Any], now: float) -> int:
        """Append one entry; returns its ``seq``."""
        with self.path.open("a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                seq, prev = self._last(f)
                body = {
                    "seq": seq + 1,
                    "time": round(now, 3),
                    "action": action,
                    "subject": subject,
                    "detail": detail,
                    "prev": prev,
                }
                mac = self._mac(prev, body)
                f.seek(0, os.SEEK_END)
                f.write(json.dumps({**body, "mac": mac}, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                tmp = self.head_path.with_suffix(".tmp")
                head = {"seq": seq + 1, "mac": mac, "head_mac": self._head_mac(seq + 1, mac)}
                tmp.write_text(json.dumps(head) + "\n", encoding="utf-8")
                os.replace(tmp, self.head_path)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return seq + 1

    @staticmethod
    def _last(f: Any) -> tuple[int, str]:
        f.seek(0)
        last = None
        for line in f:
            if line.strip():
                last = line
        if last is None:
            return 0, GENESIS
        entry = json.loads(last)
        return int(entry["seq"]), str(entry["mac"])

    def verify(self) -> Verdict:
        """Check every line and the head; the first problem found, with its line number."""
        prev, seq = GENESIS, 0
        if not self.path.exists():
            return Verdict(
                not self.head_path.exists(),
                0,
                "the log is missing" if self.head_path.exists() else None,
            )
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                try:
                    entry = json.loads(line)
                    mac = entry.pop("mac")
                    if not isinstance(entry, dict):
                        raise TypeError
                except (ValueError, KeyError, TypeError, AttributeError):
                    return Verdict(False, seq, "not a log entry (unreadable JSON or no mac)", n)
                if entry.get("prev") != prev:
                    return Verdict(
                        False, seq, "chain broken: 'prev' is not the previous entry's mac", n
                    )
                if not hmac.compare_digest(self._mac(prev, entry), str(mac)):
                    return Verdict(
                        False, seq, "mac does not match the entry (changed, or another key)", n
                    )
                if entry.get("seq") != seq + 1:
                    return Verdict(
                        False, seq, f"sequence jumps from {seq} to {entry.get('seq')}", n
                    )
                seq, prev = seq + 1, str(mac)
        try:
            head = json.loads(self.head_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return Verdict(False, seq, "the head file is missing or unreadable", None)
        if not hmac.compare_digest(
            str(head.get("head_mac")),
            self._head_mac(int(head.get("seq", -1)), str(head.get("mac"))),
        ):
            return Verdict(False, seq, "the head file was changed", None)
        if head["seq"] != seq or head["mac"] != prev:
            return Verdict(
                False,
                seq,
                f"the log ends at entry {seq} but the head says {head['seq']}: entries were cut off",
                None,
            )
        return Verdict(True, seq)
