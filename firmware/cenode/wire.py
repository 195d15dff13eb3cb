"""Frames a node sends to its gateway (the node's half of ``protocols/nodewire.py``).

Same bytes as the gateway's codec; both are checked against ``protocols/vectors/nodewire.json``.
Header: magic 0xCE, version 1, type u8, seq u16, time u32 (0: clock not set), big-endian.
"""

import struct

from cenode.compat import const

MAGIC = const(0xCE)
VERSION = const(1)
READINGS = const(1)
STATUS = const(2)
REPLY = const(3)
QUEUED = const(4)  # readings from the flash queue: boot u32, then as READINGS
ACK = const(5)  # gateway -> node on cmd: boot u32, count u8, count x seq u16
MAX_TEXT = const(64)
MAX_READINGS = const(32)

# node states (status frames)
BOOT = const(0)
HEALTHY = const(1)
OFFLINE = const(2)
OTA_REFUSED = const(3)
OTA_APPLIED = const(4)
ROLLED_BACK = const(5)

# reply results
DONE = const(0)
REFUSED = const(1)
FAILED = const(2)

# point name -> wire id (append only; the gateway has the same table)
POINT_IDS = {
    "fill_pct": 1,
    "distance_mm": 2,
    "temperature_c": 3,
    "ph": 4,
    "turbidity_ntu": 5,
    "door_open": 6,
    "relay_on": 7,
    "battery_v": 8,
    "rssi_dbm": 9,
    "uptime_s": 10,
}


def _header(ftype: int, seq: int, time: int) -> bytes:
    if not 0 <= seq <= 0xFFFF or not 0 <= time <= 0xFFFFFFFF:
        raise ValueError("seq must fit u16 and time u32")
    return struct.pack(">BBBHI", MAGIC, VERSION, ftype, seq, time)


def _text(text: str) -> bytes:
    """UTF-8, cut to 64 bytes on a character boundary."""
    data = text.encode()
    if len(data) <= MAX_TEXT:
        return data
    i = MAX_TEXT
    while i > 0 and data[i] & 0xC0 == 0x80:
        i -= 1
    return data[:i]


def encode_readings(seq: int, time: int, readings: list, boot=None) -> bytes:
    """``readings``: (point name, value) pairs; value bool, int or float. With ``boot``: a
    queued report (type 4), acknowledged by the gateway end to end."""
    if not 1 <= len(readings) <= MAX_READINGS:
        raise ValueError("a frame carries 1-32 readings")
    if boot is None:
        out = bytearray(_header(READINGS, seq, time))
    else:
        out = bytearray(_header(QUEUED, seq, time))
        out += struct.pack(">I", boot)
    out.append(len(readings))
    for name, value in readings:
        pid = POINT_IDS.get(name)
        if pid is None:
            raise ValueError("point has no wire id: " + name)
        out.append(pid)
        if isinstance(value, bool):
            out.append(1 if value else 0)
        elif isinstance(value, int):
            if -0x8000 <= value <= 0x7FFF:
                out += struct.pack(">Bh", 2, value)
            elif -0x80000000 <= value <= 0x7FFFFFFF:
                out += struct.pack(">Bi", 3, value)
            else:
                raise ValueError("integer does not fit int32")
        else:
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("value is not finite")
            out += struct.pack(">Bf", 4, value)
    return bytes(out)


def parse_ack(data: bytes):
    """``(boot, [seq, ...])`` of an acknowledgement frame, or None if it is not one."""
    if len(data) < 14 or data[0] != MAGIC or data[1] != VERSION or data[2] != ACK:
        return None
    boot, count = struct.unpack_from(">IB", data, 9)
    if not count or len(data) != 14 + 2 * count:
        return None
    return boot, struct.unpack_from(">" + str(count) + "H", data, 14)


def queued_key(frame: bytes) -> tuple:
    """``(boot, seq)`` of a queued report's bytes."""
    return struct.unpack_from(">I", frame, 9)[0], frame[3] << 8 | frame[4]


def pack_version(version: tuple) -> int:
    return version[0] << 16 | version[1] << 8 | version[2]


def encode_status(seq: int, time: int, state: int, version: tuple, reason: str = "") -> bytes:
    return _header(STATUS, seq, time) + struct.pack(">BI", state, pack_version(version)) + _text(reason)


def encode_reply(seq: int, time: int, nonce: str, result: int, message: str = "") -> bytes:
    n = nonce.encode()[:MAX_TEXT]
    return _header(REPLY, seq, time) + bytes((len(n),)) + n + bytes((result,)) + _text(message)


def parse_version(text: str) -> tuple:
    parts = text.split(".")
    if len(parts) != 3:
        raise ValueError("version must be MAJOR.MINOR.PATCH")
    major, minor, patch = int(parts[0]), int(parts[1]), int(parts[2])
    if not (0 <= major <= 0xFFFF and 0 <= minor <= 0xFF and 0 <= patch <= 0xFF):
        raise ValueError("version out of range")
    return (major, minor, patch)


def topic(site: str, node: str, channel: str) -> str:
    return "cityedge/node/v1/" + site + "/" + node + "/" + channel
