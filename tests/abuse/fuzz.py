"""What the fuzz targets of the abuse suite share: one budget, and inputs made by mutation.

Every target runs a fixed number of examples, derandomized (the same inputs on every machine
and every run, so ``make test`` costs the same and a failure reproduces), each under a
deadline that catches a runaway (an alias expansion, a quadratic scan) rather than a slow
machine. Inputs are random bytes and mutations of valid seeds: bit flips, cuts, duplicated
slices, and splices of "interesting" tokens (huge numbers, deep nesting, lone surrogates,
NaN), so the targets get past the first check of each decoder.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Sequence
from datetime import timedelta
from typing import Any, Final, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

T = TypeVar("T")

#: Examples per target: the nine targets take some 25 s together on 2 cores.
EXAMPLES: Final = 300

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=2),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Tokens that broke decoders somewhere once: spliced into seeds.
INTERESTING: Final[tuple[bytes, ...]] = (
    b"\x00",
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",  # a surrogate encoded as UTF-8: invalid
    b"\\ud800",  # a lone surrogate as a JSON escape: valid JSON, not UTF-8
    b"1e400",
    b"-1e400",
    b"NaN",
    b"Infinity",
    b"9" * 400,
    b"9" * 5000,
    b"1e308",
    b"[" * 200,
    b"{" * 200,
    b'"',
    b"\\",
    b"*a",
    b"&a ",
    b"<<: ",
    b"\t",
    b"\r\n",
    b"##",
    b"&&",
    b";",
    b"=",
    b"\x9f",  # CBOR: an indefinite array
    b"\xc2\x5a\x00\x01\x00\x00",  # CBOR: a bignum announcing 64 KiB
    b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
)


#: Numbers that overflow, are not finite, or are too long to print: they replace numbers.
NUMBERS: Final[tuple[bytes, ...]] = (
    b"1e400", b"-1e400", b"1e308", b"-1e308", b"NaN", b"Infinity", b"9" * 400, b"9" * 5000,
    b"0", b"-0", b"4294967296", b"18446744073709551616", b"1.5",
)  # fmt: skip
_NUMBER: Final = re.compile(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?")


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], extra: Sequence[bytes] = ()) -> bytes:
    """One of ``seeds`` changed in one to six places."""
    data = bytearray(draw(st.sampled_from(seeds)))
    tokens = (*INTERESTING, *extra)
    ops = ("flip", "insert", "delete", "duplicate", "cut", "token", "number", "nest")
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(ops))
        if op == "number":  # a number of the seed replaced by a hostile one
            numbers = list(_NUMBER.finditer(data))
            if numbers:
                m = draw(st.sampled_from(numbers))
                data[m.start() : m.end()] = draw(st.sampled_from(NUMBERS))
        elif op == "nest":  # a slice wrapped in many brackets
            n = draw(st.sampled_from((2, 50, 3000)))
            end = min(len(data), at + draw(st.integers(0, 16)))
            data[at:end] = b"[" * n + data[at:end] + b"]" * n
        elif op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "duplicate":
            end = min(len(data), at + draw(st.integers(1, 64)))
            data[at:at] = data[at:end] * draw(st.integers(1, 20))
        elif op == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.sampled_from(tokens))
    return bytes(data)


def fuzz_input(seeds: Sequence[bytes], extra: Sequence[bytes] = ()) -> st.SearchStrategy[bytes]:
    """Random bytes now and then, mutated seeds mostly."""
    return st.one_of(st.binary(max_size=300), mutated(seeds, extra), mutated(seeds, extra))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """One example's coroutine on a fresh event loop (hypothesis drives sync tests)."""
    return asyncio.run(coro)
