"""Wiegand frames from access-control readers: cards (26 and 34 bits) and keypad keys (4 and 8
bits), and the one-line ASCII framing a Wiegand-to-RS-485 (or -TCP) interface sends them in.

Wiegand 26 (the H10301 layout)::

    bit 0       even parity over bits 1-12
    bits 1-8    facility code (0-255)
    bits 9-24   card number (0-65535)
    bit 25      odd parity over bits 13-24

Wiegand 34: the same with a 16-bit facility code (bits 1-16) and parity over bits 1-16 and
17-32. Bits go first-received first (the most significant bit of the integer below).

Keypads send one burst per key: 4 bits (the key's value) or 8 bits (the complement of the
value in the high nibble, the value in the low one, which is checked). Values 0-9 are digits,
10 is ``*`` (clear) and 11 is ``#`` (enter).

Line framing: one frame per line, ``W<bits>:<hex>`` then CR LF (or LF), where ``<hex>`` is the
frame as an unsigned integer, first bit most significant, in ``ceil(bits / 4)`` hexadecimal
digits — for example ``W26:0A1B2C3`` or ``W4:B`` (the ``#`` key). Anything else on the line is
a :class:`~protocols.errors.DecodeError` naming what is wrong; a line longer than
:data:`MAX_LINE_BYTES` is refused before it is read further.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from protocols.errors import DecodeError

MAX_LINE_BYTES: Final = 32
KEY_STAR: Final = 10
KEY_HASH: Final = 11
_LINE = re.compile(r"^W(\d{1,2}):([0-9A-Fa-f]{1,16})$")


@dataclass(frozen=True)
class Card:
    bits: int
    facility: int
    number: int

    def credential(self) -> str:
        """The canonical text of this card (what is hashed at enrolment and at the gate)."""
        return f"{self.facility}:{self.number}"


@dataclass(frozen=True)
class Key:
    value: int  # 0-9 digits, 10 '*', 11 '#'

    @property
    def char(self) -> str:
        return "*" if self.value == KEY_STAR else "#" if self.value == KEY_HASH else str(self.value)


Frame = Card | Key


def _parity_even(value: int) -> bool:
    return bin(value).count("1") % 2 == 0


def decode_bits(bits: int, value: int) -> Frame:
    """One Wiegand frame of ``bits`` bits (first bit most significant in ``value``)."""
    if value < 0 or value >= 1 << bits:
        raise DecodeError(f"a {bits}-bit Wiegand frame cannot hold 0x{value:x}")
    if bits == 4:
        if value > KEY_HASH:
            raise DecodeError(f"keypad value {value} is not a key (0-9, 10 '*', 11 '#')")
        return Key(value)
    if bits == 8:
        high, low = value >> 4, value & 0xF
        if high != (~low & 0xF):
            raise DecodeError("an 8-bit key whose high nibble is not the low one's complement")
        return decode_bits(4, low)
    if bits in (26, 34):
        half = (bits - 2) // 2
        inner = (value >> 1) & ((1 << (bits - 2)) - 1)
        first, second = inner >> half, inner & ((1 << half) - 1)
        leading, trailing = value >> (bits - 1), value & 1
        if not _parity_even(first ^ (leading << half)):  # even parity: bit 0 plus first half
            raise DecodeError(f"Wiegand {bits}: the leading (even) parity bit is wrong")
        if _parity_even(second ^ (trailing << half)):  # odd parity: second half plus last bit
            raise DecodeError(f"Wiegand {bits}: the trailing (odd) parity bit is wrong")
        return Card(bits, inner >> 16, inner & 0xFFFF)  # facility: 8 (26) or 16 (34) bits
    raise DecodeError(
        f"{bits}-bit Wiegand frames are not read (26 and 34 bit cards, 4 and 8 bit keys)"
    )


def encode_card(facility: int, number: int, bits: Literal[26, 34] = 26) -> int:
    """The Wiegand frame of a card, parity bits included (for simulators and tests)."""
    fc_max = 0xFF if bits == 26 else 0xFFFF
    if not 0 <= facility <= fc_max or not 0 <= number <= 0xFFFF:
        raise ValueError(f"Wiegand {bits}: facility 0-{fc_max}, number 0-65535")
    inner = (facility << 16) | number
    half = (bits - 2) // 2
    first, second = inner >> half, inner & ((1 << half) - 1)
    leading = 0 if _parity_even(first) else 1
    trailing = 1 if _parity_even(second) else 0
    return (leading << (bits - 1)) | (inner << 1) | trailing


def encode_key(char: str, bits: Literal[4, 8] = 4) -> int:
    value = {"*": KEY_STAR, "#": KEY_HASH}.get(char)
    if value is None:
        if not (len(char) == 1 and char.isdigit()):
            raise ValueError(f"{char!r} is not a keypad key (0-9, '*', '#')")
        value = int(char)
    return value if bits == 4 else ((~value & 0xF) << 4) | value


def frame_line(bits: int, value: int) -> bytes:
    """The framing's line for one frame."""
    return f"W{bits}:{value:0{(bits + 3) // 4}X}\r\n".encode("ascii")


def decode_line(line: bytes) -> Frame:
    """One line of the framing (with or without its line end)."""
    if len(line) > MAX_LINE_BYTES:
        raise DecodeError(f"a line of {len(line)} bytes; frames are at most {MAX_LINE_BYTES}")
    try:
        text = line.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        raise DecodeError("not ASCII: expected W<bits>:<hex>") from None
    m = _LINE.match(text)
    if m is None:
        raise DecodeError(f"expected W<bits>:<hex>, got {text[:MAX_LINE_BYTES]!r}")
    bits = int(m[1])
    if bits < 1 or len(m[2]) != (bits + 3) // 4:
        raise DecodeError(f"W{bits} needs {(bits + 3) // 4} hex digits, got {len(m[2])}")
    return decode_bits(bits, int(m[2], 16))


def parse_card(text: str) -> Card:
    """A card as written on it or typed at enrolment: ``FACILITY:NUMBER`` or ``FACILITY,NUMBER``
    (``012,34567``); ``ValueError`` says what is wrong."""
    m = re.fullmatch(r"\s*(\d{1,5})\s*[:,]\s*(\d{1,5})\s*", text)
    if m is None:
        raise ValueError(f"a card is FACILITY:NUMBER (e.g. 12:34567), got {text!r}")
    facility, number = int(m[1]), int(m[2])
    if facility > 0xFFFF or number > 0xFFFF:
        raise ValueError("facility code and card number are 0-65535 each")
    return Card(26 if facility <= 0xFF else 34, facility, number)
