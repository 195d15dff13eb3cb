"""Wiegand frames and their line framing: spec vectors, parity, keys, and garbage refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import wiegand
from protocols.errors import DecodeError
from protocols.wiegand import Card, Key


# H10301 (26 bit): P FFFFFFFF NNNNNNNNNNNNNNNN P, even parity over the first 12 data bits,
# odd over the last 12. FC 1 / card 1: 1 00000001 0000000000000001 0
@pytest.mark.parametrize(
    ("bits", "value", "frame"),
    [
        (26, 0b1_00000001_0000000000000001_0, Card(26, 1, 1)),
        (26, 0b0_00000000_0000000000000000_1, Card(26, 0, 0)),
        (26, 0b0_11111111_1111111111111111_1, Card(26, 255, 65535)),
        (26, 0b1_00001100_1000011100000111_1, Card(26, 12, 34567)),
        (34, 0b0_0000000000000000_0000000000000000_1, Card(34, 0, 0)),
        (4, 0b1011, Key(11)),
        (8, 0b0100_1011, Key(11)),  # '#': complement 0100 then 1011
        (8, 0b1111_0000, Key(0)),
    ],
)
def test_frames_decode_to_the_spec(bits: int, value: int, frame: Card | Key) -> None:
    assert wiegand.decode_bits(bits, value) == frame
    line = wiegand.frame_line(bits, value)
    assert wiegand.decode_line(line) == frame
    assert wiegand.decode_line(line.rstrip(b"\r\n")) == frame


@given(st.integers(0, 255), st.integers(0, 65535))
def test_26_bit_cards_round_trip(facility: int, number: int) -> None:
    value = wiegand.encode_card(facility, number)
    assert wiegand.decode_bits(26, value) == Card(26, facility, number)
    for bit in range(26):  # any single flipped bit is caught by a parity bit
        with pytest.raises(DecodeError, match="parity"):
            wiegand.decode_bits(26, value ^ (1 << bit))


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_34_bit_cards_round_trip(facility: int, number: int) -> None:
    assert wiegand.decode_bits(34, wiegand.encode_card(facility, number, 34)) == Card(
        34, facility, number
    )


def test_keys_round_trip() -> None:
    for char in "0123456789*#":
        for bits in (4, 8):
            frame = wiegand.decode_bits(bits, wiegand.encode_key(char, bits))
            assert isinstance(frame, Key) and frame.char == char


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"W26:0A1B2C\r\n", "needs 7 hex digits"),
        (b"W26:ZZZZZZZ\r\n", "expected W<bits>:<hex>"),
        (b"W37:0000000000\r\n", "37-bit"),
        (b"W4:C\r\n", "not a key"),
        (b"W8:BB\r\n", "complement"),
        (b"W4:F0\r\n", "needs 1 hex digits"),
        (b"\xff\xfe\r\n", "not ASCII"),
        (b"W26:" + b"0" * 100, "at most 32"),
        (b"", "expected W<bits>:<hex>"),
        (b"card 12:34567\r\n", "expected W<bits>:<hex>"),
    ],
)
def test_garbage_lines_are_refused_naming_the_problem(line: bytes, words: str) -> None:
    with pytest.raises(DecodeError, match=words):
        wiegand.decode_line(line)


@given(st.binary(max_size=40))
def test_any_line_is_a_frame_or_a_decode_error(line: bytes) -> None:
    with contextlib.suppress(DecodeError):
        wiegand.decode_line(line)


@pytest.mark.parametrize(
    ("text", "card"),
    [
        ("12:34567", Card(26, 12, 34567)),
        ("012,34567", Card(26, 12, 34567)),
        (" 300:1 ", Card(34, 300, 1)),
    ],
)
def test_cards_as_printed(text: str, card: Card) -> None:
    assert wiegand.parse_card(text) == card
    assert card.credential() == f"{card.facility}:{card.number}"


@pytest.mark.parametrize("text", ["12", "12:70000", "a:b", "12:34:56", ""])
def test_bad_card_texts(text: str) -> None:
    with pytest.raises(ValueError, match=r"FACILITY:NUMBER|0-65535"):
        wiegand.parse_card(text)
