"""The node's reports, queued in flash until the gateway has them in its durable outbox.

A folder of numbered segment files (``queue/1``, ``queue/2``, ...), each at most
``seg_records`` records, only ever appended to and then deleted whole: no rewrite in place
(LittleFS wears least that way). A record is ``0xA7 | length u16 | crc32 u32 | frame``; one
``write`` and a close per record. At boot every segment is read back: a record whose header,
length or CRC is wrong is a torn tail (power cut in the middle of a write): it and anything
after it in that segment are ignored (``stats["torn"]``), nothing before it is lost, and new
records go to a new segment.

Sending: :meth:`next` hands out records oldest first, at most ``window`` waiting for the
gateway; :meth:`ack` marks them (by the frame's ``(boot, seq)``); a segment whose records are
all acknowledged is deleted. :meth:`rewind` (after a reconnect, or when no acknowledgement came
within ``ack_timeout_ms``) sends the unacknowledged ones again: the gateway drops what it
already has by (node, boot, seq). What was acknowledged before a reboot but still sits in an
undeleted segment is sent once more for the same reason.

Bounded by bytes (``max_bytes``): when a record would not fit, the oldest segment goes
(overflow policy drop-oldest, its unacknowledged records counted in ``stats["dropped"]``).

Heap: what the queue knows of its segments is one ``array`` of four 32-bit ints per segment
(number, bytes, records, acknowledged mask), 16 bytes each: a full 64 KB queue after an outage
(~60 segments) costs ~1 KB of heap, where a list per segment cost ~4 KB on the 64-bit unix port.
The array is used in place: a deleted segment's entry is closed up by moving the later ones
down, and a new segment reuses the room at the end, so acknowledging, dropping and appending
allocate nothing for it (in a fragmented heap a 1 KB copy may find no room). The records sent
and waiting for the gateway are another array, made whole for ``window`` records at the start.
At boot the folder is read entry by entry (``os.ilistdir``), not as a list of names, once to
count the segments (the array is made whole for them) and once to read them.
"""

import os
import struct
from array import array
from binascii import crc32

from cenode.compat import const, ticks_diff

_MAGIC = const(0xA7)
_HEAD = const(7)
# a segment in FlashQueue.segs: its number, bytes, records and acknowledged mask
_NUM = const(0)
_BYTES = const(1)
_RECS = const(2)
_MASK = const(3)
_SEG = const(4)
# a record in FlashQueue.out: its segment number and index there, its key (boot, seq), sent at
_SENT = const(4)
_OUT = const(5)


def _segments(folder: str):
    """The numbers of the segment files in ``folder``, in no order, one at a time."""
    ilistdir = getattr(os, "ilistdir", None)
    for entry in ilistdir(folder) if ilistdir else os.listdir(folder):
        name = entry if isinstance(entry, str) else entry[0]
        if name.isdigit():
            yield int(name)


def _record(frame: bytes) -> bytes:
    return struct.pack(">BHI", _MAGIC, len(frame), crc32(frame) & 0xFFFFFFFF) + frame


class FlashQueue:
    def __init__(
        self,
        folder: str,
        key,
        max_bytes: int = 65536,
        seg_records: int = 32,
        window: int = 8,
        ack_timeout_ms: int = 10000,
    ) -> None:
        self.folder = folder
        self.key = key  # frame bytes -> (boot, seq)
        self.max_bytes = max_bytes
        self.seg_records = min(seg_records, 30)  # the acknowledged marks fit a small int
        self.window = window
        self.ack_timeout_ms = ack_timeout_ms
        self.segs = array("i")  # _SEG ints per segment (_NUM, _BYTES, _RECS, _MASK), oldest first
        self.used = 0  # ints of segs in use (beyond: room for more segments)
        # _OUT ints per record sent and waiting for the gateway, oldest first; made whole here
        self.out = array("I", bytes(4 * _OUT * window))
        self.nout = 0  # ints of out in use
        self.cur = [0, 0, 0]  # next to send: segment number, byte offset, index
        self.size = 0  # bytes of all segments
        self.unacked = 0
        self.appendable = False  # the last segment takes more records
        self.last = 0  # the highest segment number used: numbers are never reused
        self.stats = {"queued": 0, "acked": 0, "dropped": 0, "torn": 0}
        try:
            os.mkdir(folder)
        except OSError:
            pass  # already there
        # room for the segments there are, made at once: grown entry by entry, the array's
        # last growth after an outage needed a ~1 KB block late in a fragmented heap
        found = 0
        for _n in _segments(folder):
            found += 1
        self.segs = array("i", bytes(4 * _SEG * found))
        newest = 0  # the highest numbered segment with good records: appended to unless torn or full
        for n in _segments(folder):
            count, torn = self._scan(n)
            self.last = max(self.last, n)
            if count and n > newest:
                newest = n
                self.appendable = not torn and count < self.seg_records
        self._sort()
        for i in range(self.used - _SEG, -_SEG, -_SEG):  # no good record: removed (after the
            if not self.segs[i + _RECS]:  # listing, which a removal could upset)
                self._remove(i)
        self.rewind()

    def _path(self, n: int) -> str:
        return self.folder + "/" + str(n)

    def _scan(self, n: int) -> tuple:
        """Count the good records of segment ``n`` (a torn tail ends it) and add it to ``segs``;
        (good records, torn)."""
        good = count = 0
        torn = False
        with open(self._path(n), "rb") as f:
            while True:
                head = f.read(_HEAD)
                if not head:
                    break
                if len(head) < _HEAD or head[0] != _MAGIC:
                    torn = True
                    break
                _m, length, crc = struct.unpack(">BHI", head)
                frame = f.read(length)
                if len(frame) != length or crc32(frame) & 0xFFFFFFFF != crc:
                    torn = True
                    break
                good += _HEAD + length
                count += 1
        if torn:
            self.stats["torn"] += 1
        self._add(n, good, count)
        self.size += good
        self.unacked += count
        return count, torn

    def _add(self, n: int, size: int, count: int) -> None:
        """A segment after the others, in the room at the end of ``segs`` or in more."""
        if self.used < len(self.segs):
            i = self.used
            self.segs[i + _NUM], self.segs[i + _BYTES] = n, size
            self.segs[i + _RECS], self.segs[i + _MASK] = count, 0
        else:
            self.segs.extend((n, size, count, 0))
        self.used += _SEG

    def _sort(self) -> None:
        """By number (insertion sort in place: the folder lists in any order)."""
        segs = self.segs
        for i in range(_SEG, self.used, _SEG):
            j = i
            while j and segs[j - _SEG + _NUM] > segs[j + _NUM]:
                for k in range(_SEG):
                    segs[j - _SEG + k], segs[j + k] = segs[j + k], segs[j - _SEG + k]
                j -= _SEG

    def __len__(self) -> int:
        """Records not yet acknowledged by the gateway."""
        return self.unacked

    def append(self, frame: bytes) -> None:
        rec = _record(frame)
        while self.used and self.size + len(rec) > self.max_bytes:
            self._drop_oldest()
        full = self.used and self.segs[self.used - _SEG + _RECS] >= self.seg_records
        if not (self.appendable and self.used and not full):
            self.last += 1
            self._add(self.last, 0, 0)
            self.appendable = True
        segs = self.segs
        i = self.used - _SEG
        with open(self._path(segs[i + _NUM]), "ab") as f:
            f.write(rec)
        segs[i + _BYTES] += len(rec)
        segs[i + _RECS] += 1
        self.size += len(rec)
        self.unacked += 1
        self.stats["queued"] += 1

    def _remove(self, i: int) -> None:
        """Forget the segment at ``i`` (an index into ``segs``) and delete its file."""
        segs = self.segs
        n = segs[i + _NUM]
        self.size -= segs[i + _BYTES]
        self.unacked -= segs[i + _RECS] - bin(segs[i + _MASK]).count("1")
        self.used -= _SEG
        for k in range(i, self.used):
            segs[k] = segs[k + _SEG]
        os.remove(self._path(n))

    def _drop_oldest(self) -> None:
        segs = self.segs
        self.stats["dropped"] += segs[_RECS] - bin(segs[_MASK]).count("1")
        for i in range(self.nout - _OUT, -_OUT, -_OUT):
            if self.out[i] == segs[_NUM]:
                self._unsend(i)
        self._remove(0)
        if not self.used:
            self.appendable = False

    def rewind(self) -> None:
        """Send every unacknowledged record again, oldest first."""
        self.nout = 0
        self.cur = [self.segs[_NUM] if self.used else 0, 0, 0]

    def next(self, now: int):
        """The next record to send (its frame bytes), or None (nothing, or the window is full;
        rewinds first when the oldest one sent waited ``ack_timeout_ms`` in vain)."""
        if self.nout and ticks_diff(now, self.out[_SENT]) > self.ack_timeout_ms:
            self.rewind()
        if self.nout >= len(self.out):
            return None
        segs = self.segs
        cur = self.cur
        for i in range(0, self.used, _SEG):
            n = segs[i + _NUM]
            if n < cur[0]:
                continue
            if n > cur[0]:
                cur[0], cur[1], cur[2] = n, 0, 0
            if cur[2] >= segs[i + _RECS]:
                continue
            with open(self._path(n), "rb") as f:
                f.seek(cur[1])
                while cur[2] < segs[i + _RECS]:
                    length = struct.unpack(">BHI", f.read(_HEAD))[1]
                    frame = f.read(length)
                    index = cur[2]
                    cur[1] += _HEAD + length
                    cur[2] += 1
                    if not segs[i + _MASK] & 1 << index:
                        key = self.key(frame)
                        out, at = self.out, self.nout
                        out[at], out[at + 1], out[at + 2] = n, index, key[0]
                        out[at + 3], out[at + _SENT] = key[1], now
                        self.nout += _OUT
                        return frame
        return None

    def ack(self, boot: int, seqs) -> None:
        """The gateway has these reports of ``boot``: forget them; delete full segments."""
        out = self.out
        for seq in seqs:
            for i in range(0, self.nout, _OUT):
                if out[i + 2] == boot and out[i + 3] == seq:
                    n, index = out[i], out[i + 1]
                    self._unsend(i)
                    self._mark(n, index)
                    break

    def _unsend(self, i: int) -> None:
        """Forget the sent record at ``i`` (an index into ``out``), in place."""
        self.nout -= _OUT
        for k in range(i, self.nout):
            self.out[k] = self.out[k + _OUT]

    def _mark(self, n: int, index: int) -> None:
        segs = self.segs
        for i in range(0, self.used, _SEG):
            if segs[i + _NUM] != n:
                continue
            if segs[i + _MASK] & 1 << index:
                return
            segs[i + _MASK] |= 1 << index
            self.unacked -= 1
            self.stats["acked"] += 1
            records = segs[i + _RECS]
            done = segs[i + _MASK] == (1 << records) - 1
            last = i == self.used - _SEG
            if done and not (last and self.appendable and records < self.seg_records):
                self._remove(i)
                if last:
                    self.appendable = False
            return
