"""The numbers a gateway's link must never give twice — session numbers and outbox positions —
kept in a small file beside the outbox (``<outbox>.counters``), so that losing the outbox (found
damaged and set aside, emptied, deleted) does not make the gateway count from 1 again.

Layout: two slots of :data:`SLOT` bytes, each ``magic | generation | session | pos_ceiling |
crc32``. A write goes, in place, to the slot holding the older generation and is then fsynced; a
torn write spoils only that slot, and the other still holds the state before it (a
double-buffered superblock). Writing in place never needs a new disk block, so the counters can
still move on a full disk.

- ``session``: the last session number given; written before the session is used.
- ``pos_ceiling``: no position given so far is above it. The outbox reserves positions in blocks
  (:data:`POS_BLOCK`) and writes a new ceiling only when a commit would cross the current one,
  so this file is written once per connection and once per block, not per commit.

Not thread-safe; the outbox calls it from its one worker thread.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MAGIC: Final = b"CEOUTBX1"
SLOT: Final = 64
POS_BLOCK: Final = 1 << 16
_BODY: Final = struct.Struct("<8sQqq")  # magic, generation, session, pos_ceiling
_CRC: Final = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Counters:
    session: int = 0
    pos_ceiling: int = 0


def _pack(generation: int, c: Counters) -> bytes:
    body = _BODY.pack(MAGIC, generation, c.session, c.pos_ceiling)
    return (body + _CRC.pack(zlib.crc32(body))).ljust(SLOT, b"\0")


def _unpack(raw: bytes) -> tuple[int, Counters] | None:
    if len(raw) < _BODY.size + _CRC.size:
        return None
    body = raw[: _BODY.size]
    (crc,) = _CRC.unpack_from(raw, _BODY.size)
    magic, generation, session, ceiling = _BODY.unpack(body)
    if magic != MAGIC or crc != zlib.crc32(body) or session < 0 or ceiling < 0:
        return None
    return generation, Counters(session, ceiling)


class CounterFile:
    """Open with :meth:`open`; ``known`` is what the file held (None: new or unreadable)."""

    def __init__(self, path: Path, fd: int, generation: int, fsync: bool) -> None:
        self.path = path
        self._fd = fd
        self._generation = generation
        self._fsync = fsync

    @classmethod
    def open(cls, path: Path, fsync: bool = True) -> tuple[CounterFile, Counters | None, str]:
        """Open or create the file. Returns it, what it held (None when it did not exist or
        neither slot is readable) and, when it existed but could not be read, why. Raises
        :class:`OSError` when the file cannot be opened or created."""
        existed = path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            raw = os.pread(fd, 2 * SLOT, 0) if existed else b""
            slots = [s for s in (_unpack(raw[:SLOT]), _unpack(raw[SLOT:])) if s is not None]
            best = max(slots, key=lambda s: s[0]) if slots else None
            problem = ""
            if existed and best is None:
                problem = f"neither copy in {path} is readable ({len(raw)} bytes)"
            counter = cls(path, fd, best[0] if best else 0, fsync)
            if best is None:
                # both slots written once now: later writes overwrite them in place
                counter._write_slot(0, Counters())
                counter._write_slot(1, Counters())
                counter._generation = 1
                if not existed:
                    counter._sync_dir()
        except BaseException:
            os.close(fd)
            raise
        return counter, best[1] if best else None, problem

    def write(self, counters: Counters) -> None:
        """Store ``counters`` durably (the older slot, then fsync). Raises :class:`OSError`."""
        self._generation += 1
        self._write_slot(self._generation, counters)

    def _write_slot(self, generation: int, counters: Counters) -> None:
        os.pwrite(self._fd, _pack(generation, counters), (generation % 2) * SLOT)
        if self._fsync:
            os.fsync(self._fd)

    def _sync_dir(self) -> None:
        if not self._fsync:
            return
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
