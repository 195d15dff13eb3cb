"""Modbus points as data: where a value lives, how its registers decode, and how to read many
points in few requests.

A :class:`PointSpec` says which table a value is in (coil, discrete input, holding or input
register), its address, its data type and the order of its bytes and words, and how the raw
number becomes an engineering value (``raw * scale + offset``, with a unit).

Byte and word order, in the usual "ABCD" notation where A is the most significant byte:

=============  ============  ========  =============================================
``word_order``  ``byte_order``  notation  float32 123.456 (0x42F6E979) as registers
=============  ============  ========  =============================================
big            big           ABCD      0x42F6, 0xE979   (the Modbus default, big-endian)
little         big           CDAB      0xE979, 0x42F6   ("word swapped", common in meters)
big            little        BADC      0xF642, 0x79E9   ("byte swapped")
little         little        DCBA      0x79E9, 0xF642   (little-endian)
=============  ============  ========  =============================================

The protocol limits come from the Modbus Application Protocol Specification V1.1b3:
read coils / discrete inputs, 1 to 2000 bits (6.1, 6.2); read holding / input registers,
1 to 125 registers (6.3, 6.4); addresses 0 to 65535.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from protocols.errors import DecodeError, EncodeError

MAX_REGISTERS_PER_READ: Final = 125
MAX_BITS_PER_READ: Final = 2000
MAX_ADDRESS: Final = 0xFFFF

Value = bool | int | float


class RegisterType(StrEnum):
    """The four Modbus data tables, named as in YAML."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def read_function(self) -> int:
        """The function code that reads this table (1, 2, 3 or 4)."""
        return _READ_FUNCTION[self]

    @property
    def is_bit(self) -> bool:
        return self in (RegisterType.COIL, RegisterType.DISCRETE_INPUT)

    @property
    def writable(self) -> bool:
        return self in (RegisterType.COIL, RegisterType.HOLDING)


_READ_FUNCTION: Final = {
    RegisterType.COIL: 1,
    RegisterType.DISCRETE_INPUT: 2,
    RegisterType.HOLDING: 3,
    RegisterType.INPUT: 4,
}


class DataType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT64 = "float64"

    @property
    def registers(self) -> int:
        """How many 16-bit registers a value of this type takes."""
        return _FORMAT[self][1]

    @property
    def is_float(self) -> bool:
        return self in (DataType.FLOAT32, DataType.FLOAT64)


# struct format (big-endian) and register count per type; BOOL in a register is one uint16.
_FORMAT: Final[dict[DataType, tuple[str, int]]] = {
    DataType.BOOL: (">H", 1),
    DataType.INT16: (">h", 1),
    DataType.UINT16: (">H", 1),
    DataType.INT32: (">i", 2),
    DataType.UINT32: (">I", 2),
    DataType.FLOAT32: (">f", 2),
    DataType.INT64: (">q", 4),
    DataType.UINT64: (">Q", 4),
    DataType.FLOAT64: (">d", 4),
}

_INT_RANGE: Final[dict[DataType, tuple[int, int]]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


class Order(StrEnum):
    BIG = "big"
    LITTLE = "little"


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One value of one device.

    ``bit`` (0-15) picks one bit of a holding/input register for ``dtype: bool`` (status words).
    Raises :class:`ValueError` when the combination cannot exist on a Modbus device.
    """

    name: str
    address: int
    register_type: RegisterType
    dtype: DataType
    byte_order: Order = Order.BIG
    word_order: Order = Order.BIG
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    bit: int | None = None

    def __post_init__(self) -> None:
        if self.register_type.is_bit and self.dtype is not DataType.BOOL:
            raise ValueError(
                f"point {self.name!r}: a {self.register_type.value} holds one bit; use dtype bool"
            )
        if self.bit is not None:
            if self.dtype is not DataType.BOOL or self.register_type.is_bit:
                raise ValueError(f"point {self.name!r}: 'bit' needs dtype bool in a register")
            if not 0 <= self.bit <= 15:
                raise ValueError(f"point {self.name!r}: bit must be 0-15 (got {self.bit})")
        if not 0 <= self.address <= MAX_ADDRESS or self.address + self.count - 1 > MAX_ADDRESS:
            raise ValueError(
                f"point {self.name!r}: address {self.address} + {self.count} leaves 0-65535"
            )
        if self.scale == 0 or not math.isfinite(self.scale) or not math.isfinite(self.offset):
            raise ValueError(f"point {self.name!r}: scale must be finite and non-zero")

    @property
    def count(self) -> int:
        """Registers (or bits, for coils and discrete inputs) this point occupies."""
        return 1 if self.register_type.is_bit else self.dtype.registers

    @property
    def end(self) -> int:
        """One past the last address this point occupies."""
        return self.address + self.count


def _check_registers(registers: Sequence[int], expected: int, what: str) -> None:
    if len(registers) != expected:
        raise DecodeError(f"{what}: expected {expected} registers, got {len(registers)}")
    for r in registers:
        if not 0 <= r <= 0xFFFF:
            raise DecodeError(f"{what}: register value {r} is not 16-bit")


def registers_to_bytes(registers: Sequence[int], byte_order: Order, word_order: Order) -> bytes:
    """The value's bytes, most significant first, from registers in the device's order."""
    words = list(registers) if word_order is Order.BIG else list(reversed(registers))
    if byte_order is Order.LITTLE:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return b"".join(w.to_bytes(2, "big") for w in words)


def bytes_to_registers(data: bytes, byte_order: Order, word_order: Order) -> list[int]:
    """Registers in the device's order from the value's big-endian bytes."""
    if len(data) % 2:
        raise EncodeError("a register value needs an even number of bytes")
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if byte_order is Order.LITTLE:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words if word_order is Order.BIG else list(reversed(words))


def decode_raw(
    dtype: DataType,
    registers: Sequence[int],
    byte_order: Order = Order.BIG,
    word_order: Order = Order.BIG,
) -> int | float:
    """The raw number held in ``registers`` (no scale or offset). NaN/inf are returned as is."""
    fmt, count = _FORMAT[dtype]
    _check_registers(registers, count, dtype.value)
    value: int | float = struct.unpack(fmt, registers_to_bytes(registers, byte_order, word_order))[
        0
    ]
    return value


def encode_raw(
    dtype: DataType,
    value: int | float,
    byte_order: Order = Order.BIG,
    word_order: Order = Order.BIG,
) -> list[int]:
    """Registers holding the raw number ``value``; raises :class:`EncodeError` when out of range."""
    fmt, _ = _FORMAT[dtype]
    if dtype.is_float:
        try:
            packed = struct.pack(fmt, float(value))
        except OverflowError as err:
            raise EncodeError(f"{value} is out of range for {dtype.value}") from err
    else:
        if isinstance(value, float) and not value.is_integer():
            raise EncodeError(f"{value} is not an integer, as {dtype.value} needs")
        lo, hi = _INT_RANGE.get(dtype, (0, 1))
        ivalue = int(value)
        if not lo <= ivalue <= hi:
            raise EncodeError(f"{value} is out of range for {dtype.value} ({lo}..{hi})")
        packed = struct.pack(fmt, ivalue)
    return bytes_to_registers(packed, byte_order, word_order)


def decode_value(spec: PointSpec, data: Sequence[int] | Sequence[bool]) -> Value:
    """The engineering value of ``spec`` from its registers (or its one bit).

    Integers with scale 1 and offset 0 stay integers; anything scaled becomes a float.
    Raises :class:`DecodeError` for a wrong count, for non-finite floats, which devices use
    to say "no measurement", and for a value that scaling takes beyond the float range.
    """
    if spec.register_type.is_bit:
        if len(data) != 1:
            raise DecodeError(f"{spec.name}: expected 1 bit, got {len(data)}")
        return bool(data[0])
    registers = [int(r) for r in data]
    if spec.dtype is DataType.BOOL:
        _check_registers(registers, 1, spec.name)
        return bool(registers[0] >> spec.bit & 1) if spec.bit is not None else registers[0] != 0
    raw = decode_raw(spec.dtype, registers, spec.byte_order, spec.word_order)
    if isinstance(raw, float) and not math.isfinite(raw):
        raise DecodeError(f"{spec.name}: device sent {raw} (no measurement)")
    if spec.scale == 1 and spec.offset == 0:
        return raw
    value = raw * spec.scale + spec.offset
    if not math.isfinite(value):  # float64 1e308 x 10: a reading, not a crash further on
        raise DecodeError(f"{spec.name}: {raw!r} x {spec.scale} + {spec.offset} is not finite")
    return value


def encode_value(spec: PointSpec, value: Value) -> list[int]:
    """Registers that decode to ``value`` under ``spec`` (writes and simulators).

    Integer types round ``(value - offset) / scale`` to the nearest integer. Coils return
    ``[1]`` or ``[0]``. A ``bit`` point cannot be encoded alone (it shares its register).
    """
    if spec.register_type.is_bit or spec.dtype is DataType.BOOL:
        if spec.bit is not None:
            raise EncodeError(f"{spec.name}: a single bit of a register cannot be written alone")
        return [1 if value else 0]
    if isinstance(value, bool):
        raise EncodeError(f"{spec.name}: expected a number, got a bool")
    raw: float = (value - spec.offset) / spec.scale
    if not spec.dtype.is_float:
        if not math.isfinite(raw):
            raise EncodeError(f"{spec.name}: {value} is not finite")
        raw = round(raw)
    return encode_raw(spec.dtype, raw, spec.byte_order, spec.word_order)


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request and the points it serves."""

    register_type: RegisterType
    start: int
    count: int
    points: tuple[PointSpec, ...] = field(default=())

    @property
    def function(self) -> int:
        return self.register_type.read_function

    def values_of(
        self, point: PointSpec, data: Sequence[int] | Sequence[bool]
    ) -> Sequence[int] | Sequence[bool]:
        """The slice of this block's response that belongs to ``point``."""
        i = point.address - self.start
        return data[i : i + point.count]


class BlockReader:
    """Decodes every point of one :class:`ReadBlock` straight from the reply's data bytes
    (registers two bytes each, high byte first; bits packed, first bit lowest): the same values
    and errors as :func:`decode_value` on each point's registers, with the per-point work
    (struct format, byte order, scale) decided once here instead of once per poll."""

    __slots__ = ("_plan", "block", "size")

    def __init__(self, block: ReadBlock) -> None:
        self.block = block
        bits = block.register_type.is_bit
        self.size = (block.count + 7) // 8 if bits else 2 * block.count
        plan: list[tuple[PointSpec, int, int, struct.Struct | None, tuple[int, ...] | None]] = []
        for p in block.points:
            i = p.address - block.start
            if bits:
                plan.append((p, _BIT, i, None, None))
            elif p.dtype is DataType.BOOL:
                plan.append((p, _REG_BIT, 2 * i, None, None))
            else:
                fmt, count = _FORMAT[p.dtype]
                n = 2 * count
                if p.byte_order is Order.BIG and p.word_order is Order.BIG:
                    plan.append((p, _PLAIN, 2 * i, struct.Struct(fmt), None))
                elif p.byte_order is Order.LITTLE and p.word_order is Order.LITTLE:
                    plan.append((p, _PLAIN, 2 * i, struct.Struct("<" + fmt[1:]), None))
                else:  # one word order reversed, or bytes swapped within words
                    order = list(range(n))
                    words = [order[k : k + 2] for k in range(0, n, 2)]
                    if p.word_order is Order.LITTLE:
                        words.reverse()
                    if p.byte_order is Order.LITTLE:
                        words = [w[::-1] for w in words]
                    perm = tuple(2 * i + b for w in words for b in w)
                    plan.append((p, _PERMUTED, 2 * i, struct.Struct(fmt), perm))
        self._plan = tuple(plan)

    def values(self, data: bytes) -> list[tuple[PointSpec, Value | DecodeError]]:
        """Each point with its engineering value, or the :class:`DecodeError` of that point
        alone (a float that is not finite: "no measurement"). ``data`` must be the block's
        size (:attr:`size`; the caller checked the reply)."""
        if len(data) != self.size:
            raise DecodeError(f"block of {self.size} bytes got {len(data)}")
        out: list[tuple[PointSpec, Value | DecodeError]] = []
        for p, kind, at, unpack, perm in self._plan:
            raw: int | float
            if kind == _PLAIN:
                raw = unpack.unpack_from(data, at)[0]  # type: ignore[union-attr]
            elif kind == _PERMUTED:
                raw = unpack.unpack(bytes([data[k] for k in perm]))[0]  # type: ignore[union-attr]
            elif kind == _BIT:
                out.append((p, bool(data[at >> 3] >> (at & 7) & 1)))
                continue
            else:  # one register as bool: a bit of it, or non-zero
                word = data[at] << 8 | data[at + 1]
                out.append((p, bool(word >> p.bit & 1) if p.bit is not None else word != 0))
                continue
            if p.scale == 1 and p.offset == 0:
                if isinstance(raw, float) and not math.isfinite(raw):
                    out.append((p, DecodeError(f"{p.name}: device sent {raw} (no measurement)")))
                else:
                    out.append((p, raw))
                continue
            if isinstance(raw, float) and not math.isfinite(raw):
                out.append((p, DecodeError(f"{p.name}: device sent {raw} (no measurement)")))
                continue
            value = raw * p.scale + p.offset
            if math.isfinite(value):
                out.append((p, value))
            else:
                out.append(
                    (p, DecodeError(f"{p.name}: {raw!r} x {p.scale} + {p.offset} is not finite"))
                )
        return out


_PLAIN, _PERMUTED, _BIT, _REG_BIT = range(4)


def plan_reads(
    points: Iterable[PointSpec],
    *,
    max_gap: int = 0,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_bits: int = MAX_BITS_PER_READ,
) -> tuple[ReadBlock, ...]:
    """The fewest read requests that cover ``points``.

    Points are split by table (one function code per request), sorted by address and merged
    while the request stays within ``max_registers`` / ``max_bits`` and the unused span between
    two points is at most ``max_gap`` registers (bits). Reading across a gap costs bytes on the
    wire but saves a round trip; some devices refuse reads of unmapped addresses, so the default
    gap is 0. Overlapping points (bits of one status word) share their registers.
    The result is ordered by function code, then address, and is the same for the same input.
    """
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    if not 1 <= max_registers <= MAX_REGISTERS_PER_READ or not 1 <= max_bits <= MAX_BITS_PER_READ:
        raise ValueError(
            "request size limits must be within the protocol's (125 registers, 2000 bits)"
        )
    by_table: dict[RegisterType, list[PointSpec]] = {}
    for p in points:
        by_table.setdefault(p.register_type, []).append(p)
    blocks: list[ReadBlock] = []
    for table in sorted(by_table, key=lambda t: t.read_function):
        limit = max_bits if table.is_bit else max_registers
        ordered = sorted(by_table[table], key=lambda p: (p.address, -p.count, p.name))
        start = ordered[0].address
        end = ordered[0].end
        members: list[PointSpec] = [ordered[0]]
        for p in ordered[1:]:
            new_end = max(end, p.end)
            if p.address - end <= max_gap and new_end - start <= limit:
                end = new_end
                members.append(p)
                continue
            blocks.append(ReadBlock(table, start, end - start, tuple(members)))
            start, end, members = p.address, p.end, [p]
        blocks.append(ReadBlock(table, start, end - start, tuple(members)))
    return tuple(blocks)


#: Exception codes (Modbus Application Protocol V1.1b3, section 7) with a hint a technician can
#: act on.
EXCEPTION_CODES: Final[dict[int, tuple[str, str]]] = {
    1: ("illegal function", "the device does not support this function; check the points' table"),
    2: (
        "illegal data address",
        "an address is not mapped on the device; check the register map, and keep max_gap 0 "
        "if the device refuses reads across unmapped registers",
    ),
    3: (
        "illegal data value",
        "the device refused the request size or value; lower max_registers_per_read",
    ),
    4: ("server device failure", "the device reports an internal fault; inspect the device"),
    5: ("acknowledge", "the device is still working on a long command; poll it later"),
    6: ("server device busy", "the device is busy; lengthen the poll interval"),
    8: ("memory parity error", "the device's memory check failed; service the device"),
    10: (
        "gateway path unavailable",
        "the Modbus gateway has no route to this unit; check the unit id and the gateway's setup",
    ),
    11: (
        "gateway target device failed to respond",
        "the unit behind the gateway did not answer; check its power, wiring, A/B polarity, "
        "termination and unit id",
    ),
}


def describe_exception(code: int) -> tuple[str, str]:
    """Name and hint for a Modbus exception code (unknown codes are named by number)."""
    return EXCEPTION_CODES.get(code, (f"exception code {code}", "see the device's manual"))


def char_bits(parity: str = "E", stopbits: int = 1, bytesize: int = 8) -> int:
    """Bits on the line per RTU character: start + data + parity + stop (11 for 8E1 or 8N2;
    Modbus over Serial Line V1.02 2.5.1 asks for 11, a common 8N1 line has 10)."""
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits


def rtu_silence_s(baudrate: int, bits_per_char: int = 11) -> float:
    """The inter-frame silence t3.5 (Modbus over Serial Line V1.02 2.5.1.1): 3.5 character
    times, fixed at 1.750 ms above 19200 baud."""
    if baudrate <= 0:
        raise ValueError("baudrate must be positive")
    if baudrate > 19200:
        return 0.00175
    return 3.5 * bits_per_char / baudrate


def rtu_frame_sizes(function: int, count: int) -> tuple[int, int]:
    """Bytes of the RTU request and of its normal response (address, PDU, CRC) for a read of
    ``count`` registers/bits (fc 1-4) or a write (fc 5, 6: one value; fc 15, 16: ``count``)."""
    if function in (1, 2):
        return 8, 5 + (count + 7) // 8
    if function in (3, 4):
        return 8, 5 + 2 * count
    if function in (5, 6):
        return 8, 8
    if function == 15:
        return 9 + (count + 7) // 8, 8
    if function == 16:
        return 9 + 2 * count, 8
    raise ValueError(f"function code {function} has no size rule here")
