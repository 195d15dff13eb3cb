"""JSON within limits: what passes is what ``json.loads`` gives; everything else is a
``DecodeError`` naming the limit, for any input."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import boundedjson
from protocols.errors import DecodeError

MB = 1 << 20


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"[" * 100_000, "more than 10000 arrays and objects"),
        (nested(33).encode(), "nested deeper than 32 levels"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper than 32 levels"),
        (b"[" * 33, "nested deeper than 32 levels"),
        (b"[]" * 10_001, "more than 10000 arrays and objects"),
        (b" " * (MB + 1), f"{MB + 1} bytes; at most {MB}"),
        (b"NaN", "NaN is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b'{"x": 1e400}', "number 1e400 is out of range"),
        (b'"\\ud800"', "lone surrogate"),
        (b'{"\\udfff": 1}', "lone surrogate"),
        (b"\xff{}", "not UTF-8 (byte 0)"),
        ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
        (b"1" * 5000, "not JSON"),
        (b"", "not JSON"),
        (b'{"a": 1} x', "not JSON"),
        ('"\ud800"', "cannot be encoded as UTF-8"),
    ],
)
def test_refused_with_the_limit_named(data: bytes | str, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        boundedjson.loads(data, max_bytes=MB)


@pytest.mark.parametrize(
    "text",
    [
        nested(32),
        '["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", {"}}}}": "]]]]"}]',
        '["a\\\\", [1], "\\\\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]',
        '"\\ud83d\\ude00 and \\" and \\\\"',
        '{"yaml": "site: x\\n  a: [b, c]\\n"}',
        "[" + ",".join(["[[1]]"] * 3333) + "]",
    ],
)
def test_within_the_limits_it_is_json_loads(text: str) -> None:
    assert boundedjson.loads(text.encode(), max_bytes=MB) == json.loads(text)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(_values, st.integers(min_value=1, max_value=8))
def test_the_pre_scan_is_exact_for_valid_json(value: Any, max_depth: int) -> None:
    text = json.dumps(value)
    if _depth(value) > max_depth:
        with pytest.raises(DecodeError, match=f"nested deeper than {max_depth}"):
            boundedjson.loads(text, max_bytes=MB, max_depth=max_depth)
    else:
        assert boundedjson.loads(text, max_bytes=MB, max_depth=max_depth) == json.loads(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_give_a_value_or_a_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):  # anything else fails the test
        boundedjson.loads(data, max_bytes=200, max_depth=4)
