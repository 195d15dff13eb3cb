"""Limits checked on outside input *before* it is parsed, and a safe way to name a bad value.

A decoder that takes bytes from a device, a broker or a person checks the size first, then
the nesting depth (the stdlib JSON parser recurses once per level: ``[`` x 100 000 is a
``RecursionError``, not a decode error), then parses. The same values are refused the same way
everywhere:

- :func:`check_size` — more bytes than the entry point allows;
- :func:`check_json_depth` — arrays and objects nested deeper than allowed, found by one linear
  scan that skips strings (brackets inside a string do not count);
- :func:`shown` — a value quoted in an error message: ``repr`` cut to a length, and safe for
  integers too long to print (CPython refuses ``str()`` of an int beyond 4300 digits).
"""

from __future__ import annotations

import re
from typing import Final

from protocols.errors import DecodeError

#: A JSON string; an unterminated one runs to the end, so one pass stays linear.
_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def check_size(data: bytes | str, max_bytes: int, what: str) -> None:
    """Raise :class:`DecodeError` when ``data`` is longer than ``max_bytes`` (a ``str`` counts
    its characters, which is a lower bound of its UTF-8 size)."""
    if len(data) > max_bytes:
        raise DecodeError(f"{what} is {len(data)} bytes; at most {max_bytes} are accepted")


def json_depth_exceeds(data: bytes | str, max_depth: int) -> bool:
    """Whether JSON text nests arrays and objects deeper than ``max_depth`` (brackets inside
    strings do not count). Not a validator: text that is not JSON is left to the parser."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= max_depth:
        return False
    depth = 0
    for c in brackets:
        depth += 1 if c in b"[{" else -1
        if depth > max_depth:
            return True
    return False


def check_json_depth(data: bytes | str, max_depth: int, what: str) -> None:
    """Raise :class:`DecodeError` when JSON ``data`` nests deeper than ``max_depth``."""
    if json_depth_exceeds(data, max_depth):
        raise DecodeError(f"{what} nests arrays/objects deeper than {max_depth} levels")


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters (then ``…``); a
    container is described, never printed (it may be deep or huge)."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int):
        text = (
            repr(value)
            if value.bit_length() <= 128
            else f"<an integer of {value.bit_length()} bits>"
        )
    elif isinstance(value, str | bytes | bytearray):
        text = repr(value[: limit + 1])  # the head only: never build the whole text
    elif isinstance(value, list | tuple | dict | set | frozenset):
        text = f"<a {type(value).__name__} of {len(value)} items>"
    else:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"
