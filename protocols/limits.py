"""Limits checked on outside input *before* it is parsed, and a safe way to name a bad value.

A decoder that takes bytes from a device, a broker or a person checks the size first, then
the nesting depth (the stdlib JSON parser recurses once per level: ``[`` x 100 000 is a
``RecursionError``, not a decode error), then parses. The same values are refused the same way
everywhere:

- :func:`check_size` — more bytes than the entry point allows;
- :func:`check_json_depth` / :func:`nesting_problem` — arrays and objects nested deeper (or more
  of them) than allowed, found by one scan that skips strings (brackets inside a string do not
  count); :mod:`protocols.boundedjson` parses JSON within these limits;
- :func:`shown` — a value quoted in an error message: ``repr`` cut to a length, and safe for
  integers too long to print (CPython refuses ``str()`` of an int beyond 4300 digits).
"""

from __future__ import annotations

import re
from typing import Final

from protocols.errors import DecodeError

MAX_CONTAINERS: Final = 10_000
# a whole string (once escaped backslashes and quotes are gone; one never closed runs to the
# end), or anything but a bracket
_NOT_BRACKET: Final = re.compile(r'"[^"]*"?|[^\[\]{}"]+')


def check_size(data: bytes | bytearray | str, max_bytes: int, what: str) -> None:
    """Raise :class:`DecodeError` when ``data`` is longer than ``max_bytes`` (a ``str`` counts
    its characters, which is a lower bound of its UTF-8 size)."""
    if len(data) > max_bytes:
        raise DecodeError(f"{what} is {len(data)} bytes; at most {max_bytes} are accepted")


def nesting_problem(text: str, max_depth: int, max_containers: int = MAX_CONTAINERS) -> str | None:
    """Why JSON ``text`` cannot be parsed within the limits, or None: nested deeper than
    ``max_depth``, or more than ``max_containers`` arrays and objects (brackets inside strings do
    not count). Exact for valid JSON; text that is not JSON may be refused here rather than by
    the parser. Costs a few regular-expression passes (C speed) and a loop over at most
    ``2 * max_containers`` brackets."""
    if text.count("[") + text.count("{") <= max_depth:
        return None
    # escapes are read left to right, as the parser does: an escaped backslash first, then an
    # escaped quote; what is left has no quote inside a string
    plain = text.replace("\\\\", "").replace('\\"', "")
    brackets = _NOT_BRACKET.sub("", plain)
    if len(brackets) > 2 * max_containers:
        return f"more than {max_containers} arrays and objects"
    depth = 0
    for c in brackets:
        if c in "[{":
            depth += 1
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
        else:
            depth -= 1
    return None


def json_depth_exceeds(data: bytes | str, max_depth: int) -> bool:
    """Whether JSON text nests arrays and objects deeper than ``max_depth`` (brackets inside
    strings do not count). Not a validator: text that is not JSON is left to the parser."""
    # latin-1 maps each byte to one character: brackets, quotes and backslashes stay as they are
    text = data if isinstance(data, str) else bytes(data).decode("latin-1")
    return nesting_problem(text, max_depth, max_containers=len(text)) is not None


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
