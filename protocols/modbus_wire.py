"""Modbus on the wire, sans-IO: request and reply PDUs, MBAP framing for Modbus TCP and RTU
framing for serial lines. Bytes in, typed replies out; nothing here opens a socket.

Sources: Modbus Application Protocol Specification V1.1b3 (AP) for the PDUs and exception
codes; Modbus Messaging on TCP/IP Implementation Guide V1.0b (TCP) for the MBAP header; Modbus
over Serial Line V1.02 (SL) for RTU frames and their CRC.

- :class:`Request` is one request (read coils / discrete inputs / holding / input registers,
  write single coil / register, write multiple coils / registers: AP 6.1-6.6, 6.11, 6.12); its
  ``pdu`` is computed once. Building an impossible request (count out of AP's ranges, a value
  that is not 16-bit) raises :class:`~protocols.errors.EncodeError`: the caller broke the
  protocol.
- :func:`decode_reply` checks a reply PDU against the request it answers and returns a
  :class:`ReadReply`, :class:`WriteReply` or :class:`ExceptionReply` (AP 7: function code + 0x80
  and one exception code). A reply that cannot answer the request (other function, wrong byte
  count, wrong length, a write echo that differs) raises
  :class:`~protocols.errors.DecodeError`: the peer broke the protocol.
- :class:`MbapClient` is a Modbus TCP client's state: :meth:`MbapClient.send` gives a request
  a transaction id and its bytes (TCP 3.1.3: transaction id, protocol id 0, length, unit id);
  :meth:`MbapClient.receive` takes whatever bytes arrived — part of a frame, several frames
  glued together — and returns the :class:`Answer` of each complete one, matched to its request
  by transaction id, so replies may come in any order. A reply whose transaction id is not
  pending (it came after the caller gave up waiting: :meth:`MbapClient.forget`) is counted in
  ``stray`` and dropped (TCP 4.4.2 "the response is discarded"). Bytes that cannot be an MBAP
  header (protocol id not 0, a length outside 3..254) leave no way to find the next frame in
  the stream: :class:`FramingError`, and the connection must be closed.
- RTU: :func:`encode_rtu` adds the address and the CRC (SL 2.5.1.2, low byte first);
  :func:`rtu_reply_size` says how long the reply will be once its first bytes are in;
  :func:`decode_rtu` checks address and CRC and returns the PDU.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from protocols.errors import DecodeError, EncodeError

READ_COILS: Final = 1
READ_DISCRETE_INPUTS: Final = 2
READ_HOLDING_REGISTERS: Final = 3
READ_INPUT_REGISTERS: Final = 4
WRITE_SINGLE_COIL: Final = 5
WRITE_SINGLE_REGISTER: Final = 6
WRITE_MULTIPLE_COILS: Final = 15
WRITE_MULTIPLE_REGISTERS: Final = 16

READS: Final = frozenset({1, 2, 3, 4})
WRITES: Final = frozenset({5, 6, 15, 16})
BIT_FUNCTIONS: Final = frozenset({1, 2, 5, 15})

#: AP 6.x: the largest count each function accepts
MAX_COUNT: Final = {1: 2000, 2: 2000, 3: 125, 4: 125, 15: 0x7B0, 16: 123}

MBAP_HEADER: Final = 7  # transaction id, protocol id, length, unit id (TCP 3.1.3)
MAX_PDU: Final = 253  # AP 4.1
_MBAP: Final = struct.Struct(">HHHB")
_HEAD: Final = struct.Struct(">HH")  # protocol id and length, after the transaction id
_WORD2: Final = struct.Struct(">BHH")  # function, address, count/value


@dataclass(frozen=True, slots=True)
class Request:
    """One request PDU for ``unit``. ``count`` is the registers or bits read or written;
    ``values`` the written ones (one for fc 5 and 6: a coil's 0/1 or a register's word)."""

    unit: int
    function: int
    address: int
    count: int = 1
    values: tuple[int, ...] = ()
    pdu: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        f, a, n, v = self.function, self.address, self.count, self.values
        if not 0 <= self.unit <= 255:
            raise EncodeError(f"unit id {self.unit} is not 0-255")
        if not 0 <= a <= 0xFFFF:
            raise EncodeError(f"address {a} is not 0-65535")
        if f in READS:
            if v:
                raise EncodeError(f"function {f} reads: it takes no values")
            _check_count(f, n, a)
            pdu = _WORD2.pack(f, a, n)
        elif f in (WRITE_SINGLE_COIL, WRITE_SINGLE_REGISTER):
            if n != 1 or len(v) != 1:
                raise EncodeError(f"function {f} writes exactly one value")
            if f == WRITE_SINGLE_COIL:
                if v[0] not in (0, 1):
                    raise EncodeError(f"a coil is 0 or 1, not {v[0]}")
                pdu = _WORD2.pack(f, a, 0xFF00 if v[0] else 0)  # AP 6.5
            else:
                pdu = _WORD2.pack(f, a, _word(v[0]))
        elif f in (WRITE_MULTIPLE_COILS, WRITE_MULTIPLE_REGISTERS):
            if len(v) != n:
                raise EncodeError(f"function {f}: count {n} but {len(v)} values")
            _check_count(f, n, a)
            if f == WRITE_MULTIPLE_COILS:
                if any(b not in (0, 1) for b in v):
                    raise EncodeError("coils are 0 or 1")
                data = pack_bits(v)
            else:
                data = b"".join(_word(w).to_bytes(2, "big") for w in v)
            pdu = _WORD2.pack(f, a, n) + bytes((len(data),)) + data
        else:
            raise EncodeError(f"function code {f} is not one this client sends")
        object.__setattr__(self, "pdu", pdu)

    @property
    def reply_data_size(self) -> int:
        """Bytes of data a normal reply to a read carries (AP 6.1-6.4 byte count)."""
        return (self.count + 7) // 8 if self.function in BIT_FUNCTIONS else 2 * self.count


def _check_count(function: int, count: int, address: int) -> None:
    limit = MAX_COUNT[function]
    if not 1 <= count <= limit:
        raise EncodeError(f"function {function}: count {count} is not 1-{limit} (AP 6)")
    if address + count > 0x10000:
        raise EncodeError(f"address {address} + count {count} goes past 65535")


def _word(value: int) -> int:
    if not 0 <= value <= 0xFFFF:
        raise EncodeError(f"register value {value} is not 16-bit")
    return value


def pack_bits(bits: tuple[int, ...] | list[int] | list[bool]) -> bytes:
    """Bits packed as AP 6.1 sends them: the first in the lowest bit of the first byte."""
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def unpack_bits(data: bytes, count: int) -> list[bool]:
    """The first ``count`` bits of ``data`` (AP 6.1 order)."""
    return [bool(data[i >> 3] >> (i & 7) & 1) for i in range(count)]


@dataclass(frozen=True, slots=True)
class ReadReply:
    """A normal reply to a read: ``data`` holds the registers (two bytes each, high byte first)
    or the bits packed (AP 6.1-6.4)."""

    function: int
    data: bytes

    def registers(self) -> list[int]:
        d = self.data
        return [d[i] << 8 | d[i + 1] for i in range(0, len(d), 2)]

    def bits(self, count: int) -> list[bool]:
        return unpack_bits(self.data, count)


@dataclass(frozen=True, slots=True)
class WriteReply:
    """A normal reply to a write: the echo of address and value (fc 5, 6) or count (15, 16)."""

    function: int
    address: int
    value: int


@dataclass(frozen=True, slots=True)
class ExceptionReply:
    """AP 7: the device understood the request and refused it with ``code``."""

    function: int
    code: int


Reply = ReadReply | WriteReply | ExceptionReply


def decode_reply(request: Request, pdu: bytes) -> Reply:
    """The reply ``pdu`` to ``request``; :class:`DecodeError` when it cannot be one."""
    if not pdu:
        raise DecodeError("empty reply PDU")
    f = pdu[0]
    if f == request.function | 0x80:
        if len(pdu) != 2:
            raise DecodeError(f"exception reply of {len(pdu)} bytes (AP 7: 2)")
        return ExceptionReply(request.function, pdu[1])
    if f != request.function:
        raise DecodeError(f"reply to function {request.function} has function {f}")
    if f in READS:
        want = request.reply_data_size
        if len(pdu) < 2 or pdu[1] != want or len(pdu) != 2 + want:
            got = pdu[1] if len(pdu) > 1 else "no"
            raise DecodeError(
                f"function {f} reply for {request.count} "
                f"{'bits' if f in BIT_FUNCTIONS else 'registers'} has byte count {got} and "
                f"{len(pdu) - 2} data bytes (expected {want})"
            )
        return ReadReply(f, bytes(pdu[2:]))
    if len(pdu) != 5:
        raise DecodeError(f"function {f} reply of {len(pdu)} bytes (AP 6: 5)")
    _, address, value = _WORD2.unpack(pdu)
    if address != request.address:
        raise DecodeError(f"function {f} reply echoes address {address}, not {request.address}")
    if f in (WRITE_SINGLE_COIL, WRITE_SINGLE_REGISTER) and pdu != request.pdu:
        raise DecodeError(f"function {f} reply echoes {pdu.hex()}, not {request.pdu.hex()}")
    if f in (WRITE_MULTIPLE_COILS, WRITE_MULTIPLE_REGISTERS) and value != request.count:
        raise DecodeError(f"function {f} reply confirms {value} values, not {request.count}")
    return WriteReply(f, address, value)


def encode_reply(reply: Reply) -> bytes:
    """The PDU of ``reply`` (what a server sends; simulators and tests use it)."""
    if isinstance(reply, ExceptionReply):
        return bytes((reply.function | 0x80, reply.code))
    if isinstance(reply, ReadReply):
        return bytes((reply.function, len(reply.data))) + reply.data
    return _WORD2.pack(reply.function, reply.address, reply.value)


class FramingError(DecodeError):
    """The byte stream cannot be framed any more (not an MBAP header): close the connection."""


def encode_mbap(transaction: int, unit: int, pdu: bytes) -> bytes:
    """One Modbus TCP frame (TCP 3.1.3)."""
    return _MBAP.pack(transaction, 0, len(pdu) + 1, unit) + pdu


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete reply frame matched to its request: the decoded reply, or why it cannot be
    one (the request is over either way)."""

    transaction: int
    request: Request
    reply: Reply | DecodeError


class MbapClient:
    """The state of one Modbus TCP client connection (see the module docstring).

    Transaction ids count up from 1 and wrap after 65535, skipping ids still pending; at most
    ``max_pending`` requests may wait at once (:class:`EncodeError` beyond)."""

    def __init__(self, max_pending: int = 4096) -> None:
        if not 1 <= max_pending <= 65535:
            raise ValueError("max_pending must be 1-65535")
        self.max_pending = max_pending
        self.pending: dict[int, Request] = {}
        self.stray = 0  # replies to no pending request, dropped
        self._next = 0
        self._buf = bytearray()
        self._broken: FramingError | None = None

    def send(self, request: Request) -> tuple[int, bytes]:
        """A transaction id for ``request`` and the frame to write."""
        if len(self.pending) >= self.max_pending:
            raise EncodeError(f"{len(self.pending)} requests are pending already")
        tid = self._next
        while True:
            tid = tid + 1 if tid < 0xFFFF else 1
            if tid not in self.pending:
                break
        self._next = tid
        self.pending[tid] = request
        pdu = request.pdu
        return tid, _MBAP.pack(tid, 0, len(pdu) + 1, request.unit) + pdu

    def forget(self, transaction: int) -> None:
        """The caller stopped waiting for ``transaction``: a reply that comes later is stray."""
        self.pending.pop(transaction, None)

    def receive(self, data: bytes) -> list[Answer]:
        """Answers to the complete frames now in; keeps a partial frame for the next call.

        Raises :class:`FramingError` (also on every later call) when the stream is broken."""
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        buf += data
        out: list[Answer] = []
        at = 0
        end = len(buf)
        pending = self.pending
        while end - at >= MBAP_HEADER:
            tid = buf[at] << 8 | buf[at + 1]
            protocol, length = _HEAD.unpack_from(buf, at + 2)
            if protocol != 0 or not 3 <= length <= MAX_PDU + 1:
                del buf[:]
                self._broken = FramingError(
                    f"not a Modbus TCP frame: protocol id {protocol}, length {length} "
                    "(TCP 3.1.3: protocol id 0, length 3-254)"
                )
                raise self._broken
            stop = at + 6 + length
            if stop > end:
                break
            request = pending.pop(tid, None)
            if request is None:
                self.stray += 1
            else:
                unit = buf[at + 6]
                pdu = bytes(buf[at + 7 : stop])
                reply: Reply | DecodeError
                if unit != request.unit:
                    reply = DecodeError(f"reply from unit {unit} to a request to {request.unit}")
                else:
                    try:
                        reply = decode_reply(request, pdu)
                    except DecodeError as err:
                        reply = err
                out.append(Answer(tid, request, reply))
            at = stop
        if at:
            del buf[:at]
        return out


# -- RTU --------------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16(data: bytes) -> int:
    """The CRC of an RTU frame (SL 6.2.2: polynomial 0xA001 reflected, start 0xFFFF)."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def encode_rtu(unit: int, pdu: bytes) -> bytes:
    """One RTU frame: address, PDU, CRC low byte first (SL 2.5.1.2)."""
    body = bytes((unit,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


def rtu_reply_size(request: Request, head: bytes) -> int | None:
    """Bytes of the whole RTU reply to ``request``, from its first bytes ``head`` (address,
    function, and for reads the byte count); ``None`` while too few are in to tell."""
    if len(head) < 2:
        return None
    f = head[1]
    if f & 0x80:
        return 5  # address, function, exception code, CRC
    if f in READS:
        return 5 + head[2] if len(head) >= 3 else None
    return 8  # writes echo address, function, 4 bytes, CRC


def decode_rtu(request: Request, frame: bytes) -> Reply:
    """The reply in one whole RTU ``frame`` to ``request``; :class:`DecodeError` for a wrong
    CRC, another unit's address, or a PDU that cannot answer the request."""
    if len(frame) < 4:
        raise DecodeError(f"an RTU frame of {len(frame)} bytes (at least 4)")
    if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
        raise DecodeError("RTU frame with a wrong CRC (noise on the line?)")
    if frame[0] != request.unit:
        raise DecodeError(f"reply from unit {frame[0]} to a request to {request.unit}")
    return decode_reply(request, frame[1:-2])
