"""JSON from outside, parsed only within limits checked before parsing.

``json.loads`` recurses once per nesting level: ``b"[" * 100_000`` raises ``RecursionError``,
which no ``except ValueError`` catches. :func:`loads` refuses, with
:class:`~protocols.errors.DecodeError` only, anything that is:

- longer than ``max_bytes`` (checked first, on the raw length);
- not strict UTF-8 (``json.loads`` would also guess UTF-16 and UTF-32 from the bytes);
- nested deeper than ``max_depth``, or holding more than ``max_containers`` arrays and objects
  (a pre-scan of the brackets outside strings; its cost is bounded by those limits, about that
  of parsing);
- holding ``NaN``, ``Infinity`` or a number that overflows a float (``1e400``);
- holding a string that cannot be encoded (a lone surrogate such as ``"\\ud800"``: it would
  fail later, in a log line, a database or a reply);
- not JSON at all, including integers of more digits than Python converts.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from protocols.errors import DecodeError
from protocols.limits import MAX_CONTAINERS, check_size, nesting_problem

MAX_DEPTH: Final = 32
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _constant(name: str) -> Any:
    raise DecodeError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DecodeError(f"number {text[:20]} is out of range")
    return value


def loads(
    data: bytes | bytearray | str,
    *,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    max_containers: int = MAX_CONTAINERS,
) -> Any:
    """The value ``data`` holds; :class:`~protocols.errors.DecodeError` for anything outside
    the limits (see the module docstring)."""
    check_size(data, max_bytes, "the JSON text")
    if isinstance(data, str):
        text = data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise DecodeError("text that cannot be encoded as UTF-8") from err
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as err:
            raise DecodeError(f"not UTF-8 (byte {err.start})") from err
    problem = nesting_problem(text, max_depth, max_containers)
    if problem is not None:
        raise DecodeError(problem)
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_finite)
    except DecodeError:
        raise
    except (ValueError, RecursionError) as err:
        raise DecodeError(f"not JSON: {err}") from err
    if _SURROGATE_ESCAPE.search(text):  # pairs are joined by the parser; a lone one is not
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            raise DecodeError("a string holds a lone surrogate (\\ud800-\\udfff)") from err
    return value
