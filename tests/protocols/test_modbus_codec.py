"""Modbus value codec: byte tables for every data type and order, round trips, fuzzing."""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DecodeError, EncodeError
from protocols.modbus import (
    BlockReader,
    DataType,
    Order,
    PointSpec,
    ReadBlock,
    RegisterType,
    bytes_to_registers,
    decode_raw,
    decode_value,
    encode_raw,
    encode_value,
    plan_reads,
    registers_to_bytes,
)
from protocols.modbus_wire import pack_bits

B, L = Order.BIG, Order.LITTLE

# (dtype, word_order, byte_order, value, registers as the device sends them)
# float32 123.456 is 0x42F6E979; int32 -123456789 is 0xF8A432EB; uint32 3000000000 is 0xB2D05E00.
TABLE = [
    (DataType.INT16, B, B, -2, [0xFFFE]),
    (DataType.INT16, B, L, -2, [0xFEFF]),
    (DataType.INT16, B, B, 0x1234, [0x1234]),
    (DataType.INT16, B, L, 0x1234, [0x3412]),
    (DataType.UINT16, B, B, 65535, [0xFFFF]),
    (DataType.UINT16, B, B, 0xABCD, [0xABCD]),
    (DataType.UINT16, B, L, 0xABCD, [0xCDAB]),
    (DataType.UINT16, L, B, 0xABCD, [0xABCD]),  # word order means nothing for one register
    (DataType.INT32, B, B, -123456789, [0xF8A4, 0x32EB]),  # ABCD
    (DataType.INT32, L, B, -123456789, [0x32EB, 0xF8A4]),  # CDAB
    (DataType.INT32, B, L, -123456789, [0xA4F8, 0xEB32]),  # BADC
    (DataType.INT32, L, L, -123456789, [0xEB32, 0xA4F8]),  # DCBA
    (DataType.UINT32, B, B, 3_000_000_000, [0xB2D0, 0x5E00]),
    (DataType.UINT32, L, B, 3_000_000_000, [0x5E00, 0xB2D0]),
    (DataType.UINT32, B, L, 3_000_000_000, [0xD0B2, 0x005E]),
    (DataType.UINT32, L, L, 3_000_000_000, [0x005E, 0xD0B2]),
    (DataType.FLOAT32, B, B, struct.unpack(">f", bytes.fromhex("42F6E979"))[0], [0x42F6, 0xE979]),
    (DataType.FLOAT32, L, B, struct.unpack(">f", bytes.fromhex("42F6E979"))[0], [0xE979, 0x42F6]),
    (DataType.FLOAT32, B, L, struct.unpack(">f", bytes.fromhex("42F6E979"))[0], [0xF642, 0x79E9]),
    (DataType.FLOAT32, L, L, struct.unpack(">f", bytes.fromhex("42F6E979"))[0], [0x79E9, 0xF642]),
    (DataType.FLOAT32, B, B, -0.0, [0x8000, 0x0000]),
    # 64-bit: 0x0102030405060708
    (DataType.INT64, B, B, 0x0102030405060708, [0x0102, 0x0304, 0x0506, 0x0708]),
    (DataType.INT64, L, B, 0x0102030405060708, [0x0708, 0x0506, 0x0304, 0x0102]),
    (DataType.INT64, B, L, 0x0102030405060708, [0x0201, 0x0403, 0x0605, 0x0807]),
    (DataType.INT64, L, L, 0x0102030405060708, [0x0807, 0x0605, 0x0403, 0x0201]),
    (DataType.INT64, B, B, -1, [0xFFFF] * 4),
    (DataType.UINT64, B, B, 2**64 - 1, [0xFFFF] * 4),
    (DataType.UINT64, L, B, 0x0102030405060708, [0x0708, 0x0506, 0x0304, 0x0102]),
    # float64 1.5 is 0x3FF8000000000000
    (DataType.FLOAT64, B, B, 1.5, [0x3FF8, 0x0000, 0x0000, 0x0000]),
    (DataType.FLOAT64, L, B, 1.5, [0x0000, 0x0000, 0x0000, 0x3FF8]),
    (DataType.FLOAT64, B, L, 1.5, [0xF83F, 0x0000, 0x0000, 0x0000]),
    (DataType.FLOAT64, L, L, 1.5, [0x0000, 0x0000, 0x0000, 0xF83F]),
]


@pytest.mark.parametrize(("dtype", "word", "byte", "value", "registers"), TABLE)
def test_decode_table(
    dtype: DataType, word: Order, byte: Order, value: float, registers: list[int]
) -> None:
    got = decode_raw(dtype, registers, byte, word)
    assert got == value
    assert math.copysign(1, got) == math.copysign(1, value)


@pytest.mark.parametrize(("dtype", "word", "byte", "value", "registers"), TABLE)
def test_encode_table(
    dtype: DataType, word: Order, byte: Order, value: float, registers: list[int]
) -> None:
    assert encode_raw(dtype, value, byte, word) == registers


@pytest.mark.parametrize(("dtype", "word", "byte", "value", "registers"), TABLE)
def test_decode_is_byte_exact(
    dtype: DataType, word: Order, byte: Order, value: float, registers: list[int]
) -> None:
    """Flipping any one bit of any register changes the value (no byte is ignored)."""
    base = decode_raw(dtype, registers, byte, word)
    for i in range(len(registers)):
        for bit in range(16):
            changed = list(registers)
            changed[i] ^= 1 << bit
            got = decode_raw(dtype, changed, byte, word)
            assert got != base or (math.isnan(got) and math.isnan(base)) or (got == 0 and base == 0)


@pytest.mark.parametrize(("dtype", "word", "byte", "value", "registers"), TABLE)
def test_decode_refuses_short_and_trailing(
    dtype: DataType, word: Order, byte: Order, value: float, registers: list[int]
) -> None:
    with pytest.raises(DecodeError, match="expected"):
        decode_raw(dtype, registers[:-1], byte, word)
    with pytest.raises(DecodeError, match="expected"):
        decode_raw(dtype, [*registers, 0], byte, word)


@pytest.mark.parametrize("bad", [[-1], [0x10000], [70000]])
def test_decode_refuses_values_that_are_not_16_bit(bad: list[int]) -> None:
    with pytest.raises(DecodeError, match="16-bit"):
        decode_raw(DataType.UINT16, bad)


@pytest.mark.parametrize(
    ("dtype", "value"),
    [
        (DataType.INT16, 32768),
        (DataType.INT16, -32769),
        (DataType.UINT16, -1),
        (DataType.UINT16, 65536),
        (DataType.INT32, 2**31),
        (DataType.UINT32, 2**32),
        (DataType.INT64, 2**63),
        (DataType.UINT64, -1),
        (DataType.INT16, 1.5),
        (DataType.FLOAT32, 1e39),
    ],
)
def test_encode_refuses_out_of_range(dtype: DataType, value: float) -> None:
    with pytest.raises(EncodeError):
        encode_raw(dtype, value)


def spec(**kw: object) -> PointSpec:
    base: dict[str, object] = {
        "name": "p",
        "address": 0,
        "register_type": RegisterType.HOLDING,
        "dtype": DataType.UINT16,
    }
    base.update(kw)
    return PointSpec(**base)  # type: ignore[arg-type]


def test_scale_and_offset() -> None:
    temp = spec(dtype=DataType.INT16, scale=0.01, unit="°C")
    assert decode_value(temp, [0x0708]) == pytest.approx(18.0)
    assert decode_value(temp, [0xFF38]) == pytest.approx(-2.0)
    assert encode_value(temp, 18.0) == [0x0708]
    shifted = spec(dtype=DataType.UINT16, scale=0.1, offset=-40)
    assert decode_value(shifted, [650]) == pytest.approx(25.0)
    assert encode_value(shifted, 25.0) == [650]


def test_unscaled_integers_stay_integers() -> None:
    value = decode_value(spec(dtype=DataType.UINT32), [0x0001, 0x0000])
    assert value == 65536 and isinstance(value, int)


def test_bits_of_a_status_word() -> None:
    word = [0b0000_0000_0000_0110]
    assert decode_value(spec(dtype=DataType.BOOL, bit=0), word) is False
    assert decode_value(spec(dtype=DataType.BOOL, bit=1), word) is True
    assert decode_value(spec(dtype=DataType.BOOL, bit=2), word) is True
    assert decode_value(spec(dtype=DataType.BOOL), word) is True
    with pytest.raises(EncodeError, match="single bit"):
        encode_value(spec(dtype=DataType.BOOL, bit=1), True)


def test_coils() -> None:
    coil = spec(register_type=RegisterType.COIL, dtype=DataType.BOOL)
    assert decode_value(coil, [True]) is True
    assert encode_value(coil, False) == [0]
    with pytest.raises(DecodeError):
        decode_value(coil, [True, False])


def test_non_finite_float_is_a_bad_reading() -> None:
    nan = spec(dtype=DataType.FLOAT32)
    with pytest.raises(DecodeError, match="no measurement"):
        decode_value(nan, [0x7FC0, 0x0000])
    with pytest.raises(DecodeError, match="no measurement"):
        decode_value(nan, [0x7F80, 0x0000])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"register_type": RegisterType.COIL, "dtype": DataType.UINT16}, "one bit"),
        ({"dtype": DataType.UINT16, "bit": 3}, "'bit' needs dtype bool"),
        ({"dtype": DataType.BOOL, "bit": 16}, "bit must be 0-15"),
        ({"address": 65535, "dtype": DataType.FLOAT32}, "leaves 0-65535"),
        ({"address": -1}, "leaves 0-65535"),
        ({"scale": 0.0}, "scale must be finite and non-zero"),
    ],
)
def test_impossible_points_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**kwargs)


orders = st.sampled_from([B, L])


@given(st.integers(-(2**31), 2**31 - 1), orders, orders)
def test_int32_round_trip(value: int, word: Order, byte: Order) -> None:
    assert (
        decode_raw(DataType.INT32, encode_raw(DataType.INT32, value, byte, word), byte, word)
        == value
    )


@given(st.integers(0, 2**64 - 1), orders, orders)
def test_uint64_round_trip(value: int, word: Order, byte: Order) -> None:
    assert (
        decode_raw(DataType.UINT64, encode_raw(DataType.UINT64, value, byte, word), byte, word)
        == value
    )


@given(st.floats(width=32, allow_nan=False), orders, orders)
def test_float32_round_trip(value: float, word: Order, byte: Order) -> None:
    assert (
        decode_raw(DataType.FLOAT32, encode_raw(DataType.FLOAT32, value, byte, word), byte, word)
        == value
    )


@given(st.floats(allow_nan=False), orders, orders)
def test_float64_round_trip(value: float, word: Order, byte: Order) -> None:
    assert (
        decode_raw(DataType.FLOAT64, encode_raw(DataType.FLOAT64, value, byte, word), byte, word)
        == value
    )


@given(st.sampled_from(list(DataType)), orders, orders, st.data())
def test_registers_round_trip_through_encode(
    dtype: DataType, word: Order, byte: Order, data: st.DataObject
) -> None:
    """Any registers decode, and encoding the result gives the same registers back."""
    regs = data.draw(
        st.lists(st.integers(0, 0xFFFF), min_size=dtype.registers, max_size=dtype.registers)
    )
    raw = decode_raw(dtype, regs, byte, word)
    if isinstance(raw, float) and math.isnan(raw):
        return  # NaN payload bits are not preserved by Python floats
    if dtype is DataType.BOOL:
        return  # bool is "register != 0": many registers, one value
    assert encode_raw(dtype, raw, byte, word) == regs


@given(st.binary(max_size=16).filter(lambda b: len(b) % 2 == 0), orders, orders)
def test_bytes_registers_round_trip(data: bytes, word: Order, byte: Order) -> None:
    assert registers_to_bytes(bytes_to_registers(data, byte, word), byte, word) == data


@given(
    st.sampled_from(list(DataType)),
    st.lists(st.integers(-(2**17), 2**17), max_size=6),
    orders,
    orders,
)
def test_fuzz_decode_raises_only_decode_error(
    dtype: DataType, regs: list[int], word: Order, byte: Order
) -> None:
    with contextlib.suppress(DecodeError):
        decode_raw(dtype, regs, byte, word)


@st.composite
def blocks_with_data(draw: st.DrawFn) -> tuple[ReadBlock, bytes, list[int] | list[bool]]:
    """A planned block of random points (any type, order, scale, status bits) and reply data."""
    table = draw(st.sampled_from(list(RegisterType)))
    specs = []
    for i in range(draw(st.integers(1, 8))):
        address = draw(st.integers(0, 40))
        if table.is_bit:
            specs.append(PointSpec(f"p{i}", address, table, DataType.BOOL))
            continue
        dtype = draw(st.sampled_from(list(DataType)))
        bit = draw(st.none() | st.integers(0, 15)) if dtype is DataType.BOOL else None
        scale = draw(st.sampled_from((1.0, 0.1, -2.0, 1e300)))
        offset = draw(st.sampled_from((0.0, 0.0, 5.5)))
        specs.append(
            PointSpec(
                f"p{i}", address, table, dtype, draw(orders), draw(orders), scale, offset, bit=bit
            )
        )
    (block,) = plan_reads(specs, max_gap=125, max_registers=125, max_bits=2000)
    if table.is_bit:
        bits = draw(st.lists(st.booleans(), min_size=block.count, max_size=block.count))
        return block, pack_bits(bits), bits
    regs = draw(st.lists(st.integers(0, 0xFFFF), min_size=block.count, max_size=block.count))
    return block, b"".join(r.to_bytes(2, "big") for r in regs), regs


@given(blocks_with_data())
def test_block_reader_decodes_as_decode_value_does(
    found: tuple[ReadBlock, bytes, list[int] | list[bool]],
) -> None:
    """Decoding straight from the reply bytes gives each point what decode_value gives it
    from its registers: the same value, or the same error."""
    block, data, words = found
    got = BlockReader(block).values(data)
    assert [p for p, _ in got] == list(block.points)
    for point, value in got:
        expected: object
        try:
            expected = decode_value(point, block.values_of(point, words))
        except DecodeError as err:
            expected = err
        if isinstance(expected, DecodeError):
            assert isinstance(value, DecodeError) and str(value) == str(expected)
        else:
            assert type(value) is type(expected) and value == expected, point


def test_block_reader_refuses_data_of_another_size() -> None:
    (block,) = plan_reads([PointSpec("t", 0, RegisterType.INPUT, DataType.FLOAT32)])
    with pytest.raises(DecodeError, match="block of 4 bytes got 2"):
        BlockReader(block).values(b"\x00\x00")
