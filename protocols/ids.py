"""Time-ordered unique identifiers: UUID version 7 (RFC 9562, section 5.7).

Layout (128 bits): 48-bit Unix time in milliseconds, 4-bit version (7), 12-bit ``rand_a``,
2-bit variant (0b10), 62-bit ``rand_b``. The 74 random bits are treated as one counter: within
the same millisecond, or when the clock steps backwards, the generator keeps the last timestamp
and adds one to the counter (RFC 9562 section 6.2, method 2 "monotonic random"), so ids from
one generator sort in the order they were made. The canonical lowercase text form sorts the
same way as the integer, which is what the outbox and the ingest rely on.

The time and the random source are injected so tests can make exact vectors.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable

_RAND_BITS = 74
_RAND_MASK = (1 << _RAND_BITS) - 1
_MAX_MS = (1 << 48) - 1


def uuid7_from_parts(unix_ms: int, rand74: int) -> uuid.UUID:
    """Assemble a UUIDv7 from a millisecond timestamp and 74 random bits.

    Raises ``ValueError`` when either part does not fit its field.
    """
    if not 0 <= unix_ms <= _MAX_MS:
        raise ValueError(f"unix_ms {unix_ms} does not fit in 48 bits")
    if not 0 <= rand74 <= _RAND_MASK:
        raise ValueError("rand74 does not fit in 74 bits")
    return uuid.UUID(int=_uuid7_int(unix_ms, rand74))


def _uuid7_int(unix_ms: int, rand74: int) -> int:
    rand_a = rand74 >> 62
    rand_b = rand74 & ((1 << 62) - 1)
    return (unix_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b


def uuid7_time_ms(value: uuid.UUID | str) -> int:
    """The Unix millisecond timestamp stored in a UUIDv7."""
    u = value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    if u.version != 7:
        raise ValueError(f"{u} is not a version 7 UUID")
    return u.int >> 80


class Uuid7Generator:
    """Monotonic UUIDv7 source. Not thread-safe: one per event loop."""

    def __init__(self, random_bits: Callable[[int], int] = secrets.randbits) -> None:
        self._random_bits = random_bits
        self._last_ms = -1
        self._last_rand = 0

    def new_str(self, unix_ms: int) -> str:
        """:meth:`new` as its canonical text (``str(uuid.UUID)``), made without the object:
        the gateway takes one per envelope it makes."""
        h = f"{self._next(unix_ms):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def new(self, unix_ms: int) -> uuid.UUID:
        """A new id for ``unix_ms``; never smaller than the previous one from this generator."""
        return uuid.UUID(int=self._next(unix_ms))

    def _next(self, unix_ms: int) -> int:
        if unix_ms <= self._last_ms:
            unix_ms = self._last_ms
            rand = self._last_rand + 1
            if rand > _RAND_MASK:  # 2**74 ids in one millisecond: borrow the next millisecond
                unix_ms += 1
                rand = self._random_bits(_RAND_BITS - 1)
        else:
            # Leave the top bit clear so the counter has room to grow within this millisecond.
            rand = self._random_bits(_RAND_BITS - 1)
        self._last_ms = unix_ms
        self._last_rand = rand
        if not 0 <= unix_ms <= _MAX_MS:  # as uuid7_from_parts says (also after a borrow)
            raise ValueError(f"unix_ms {unix_ms} does not fit in 48 bits")
        return _uuid7_int(unix_ms, rand)
