"""The flash queue: append-only CRC'd segments, a torn tail dropped and nothing before it lost,
deletion only on acknowledgement, bounded by bytes (oldest segment first), sent again on rewind."""

import os
import struct

from t import eq, tmpdir

from cenode.fqueue import FlashQueue


def frame(seq: int, boot: int = 7) -> bytes:
    return struct.pack(">BBBHII", 0xCE, 1, 4, seq, 0, boot) + bytes(8)


def key(f: bytes) -> tuple:
    return struct.unpack_from(">I", f, 9)[0], f[3] << 8 | f[4]


def q(folder: str, **kw) -> FlashQueue:
    return FlashQueue(folder, key, **kw)


def drain(queue: FlashQueue, now: int = 0) -> list:
    out = []
    while True:
        f = queue.next(now)
        if f is None:
            return out
        out.append(key(f)[1])


def test_records_survive_a_reopen_in_order_until_acknowledged() -> None:
    d = tmpdir() + "/q"
    a = q(d, seg_records=4, window=100)
    for s in range(10):
        a.append(frame(s))
    eq(sorted(os.listdir(d)), ["1", "2", "3"])
    eq(drain(a), list(range(10)))
    a.ack(7, [0, 1, 2, 3, 5])
    eq(sorted(os.listdir(d)), ["2", "3"])  # segment 1 all acknowledged: deleted
    eq(len(a), 5)
    b = q(d, seg_records=4, window=100)  # a reboot
    eq(drain(b), [4, 5, 6, 7, 8, 9])  # 5 was acknowledged, its segment not yet deleted: again
    b.ack(7, [4, 5, 6, 7, 8, 9])
    eq(len(b), 0)
    eq(sorted(os.listdir(d)), ["3"])  # the tail, all acknowledged, takes more
    for s in range(10, 12):
        b.append(frame(s))
    b.ack(7, drain(b))  # segment 3 full and acknowledged: gone; the queue is empty
    eq(os.listdir(d), [])
    b.append(frame(12))  # into a new segment, numbered on: sent, not skipped
    eq(drain(b), [12])
    eq(os.listdir(d), ["4"])


def test_a_torn_tail_is_dropped_and_nothing_before_it_lost() -> None:
    d = tmpdir() + "/q"
    a = q(d, seg_records=8, window=100)
    for s in range(5):
        a.append(frame(s))
    with open(d + "/1", "ab") as f:  # a power cut in the middle of a record
        f.write(struct.pack(">BHI", 0xA7, 17, 12345) + bytes(6))
    b = q(d, seg_records=8, window=100)
    eq(b.stats["torn"], 1)
    eq(len(b), 5)
    b.append(frame(5))  # goes to a new segment, never after the torn bytes
    eq(sorted(os.listdir(d)), ["1", "2"])
    eq(drain(b), [0, 1, 2, 3, 4, 5])
    with open(d + "/2", "r+b") as f:  # a flipped bit: the CRC sees it
        f.seek(10)
        f.write(b"\xff")
    c = q(d, seg_records=8, window=100)
    eq(c.stats["torn"], 2)
    eq(drain(c), [0, 1, 2, 3, 4])
    eq(sorted(os.listdir(d)), ["1"])  # a segment with no good record is removed


def filled(count: int, seg_records: int, max_records: int) -> tuple:
    """(queue, its folder, bytes per record): a new queue of ``count`` frames, seq 0 on."""
    d = tmpdir() + "/q"
    rec = 7 + len(frame(0))
    a = q(d, seg_records=seg_records, max_bytes=max_records * rec, window=100)
    for s in range(count):
        a.append(frame(s))
    return a, d, rec


def test_bounded_by_bytes_oldest_segment_first_counted() -> None:
    a, _d, rec = filled(14, seg_records=4, max_records=10)
    eq(a.stats["dropped"], 4)
    eq(a.size <= 10 * rec, True)
    eq(drain(a), list(range(4, 14)))


def test_window_and_rewind_after_the_timeout() -> None:
    d = tmpdir() + "/q"
    a = q(d, window=3, ack_timeout_ms=1000)
    for s in range(5):
        a.append(frame(s))
    eq(drain(a, 0), [0, 1, 2])  # the window is full
    a.ack(7, [1])
    eq(drain(a, 10), [3])
    eq(drain(a, 1500), [0, 2, 3])  # no acknowledgement within 1 s: again, 1 not
    a.rewind()
    a.ack(7, [0, 2, 3])  # too late, after the rewind: sent again (the gateway drops repeats)
    eq(drain(a, 1600), [0, 2, 3])


def test_a_middle_segment_acknowledged_first_goes_alone() -> None:
    a, d, rec = filled(9, seg_records=3, max_records=9)
    eq(drain(a), list(range(9)))
    a.ack(7, [3, 4, 5])  # segment 2 of 3: deleted, 1 and 3 kept in order
    eq(sorted(os.listdir(d)), ["1", "3"])
    eq((len(a), a.size), (6, 6 * rec))
    a.rewind()
    eq(drain(a), [0, 1, 2, 6, 7, 8])
    for s in range(9, 13):  # 4 more: the oldest segment (3 unacknowledged) is dropped for them
        a.append(frame(s))
    eq(a.stats["dropped"], 3)
    eq(sorted(os.listdir(d)), ["3", "4", "5"])
    b = q(d, seg_records=3, max_bytes=9 * rec, window=100)  # a reboot reads the same back
    eq(drain(b), [6, 7, 8, 9, 10, 11, 12])
