"""What differs between MicroPython and CPython, in one place.

MicroPython has ``const``, ``time.ticks_ms`` and friends; CPython (where the unit tests also run)
gets equivalents here. Nothing else in the firmware looks at the implementation.
"""

import sys
import time

MICROPYTHON = sys.implementation.name == "micropython"

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:  # CPython

    def const(x: int) -> int:
        return x


_TICKS_PERIOD = const(1 << 30)

if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    ticks_add = time.ticks_add  # type: ignore[attr-defined]
    sleep_ms = time.sleep_ms  # type: ignore[attr-defined]
else:  # CPython

    def ticks_ms() -> int:
        return int(time.monotonic() * 1000) & (_TICKS_PERIOD - 1)  # pyright: ignore[reportAttributeAccessIssue]

    def ticks_diff(a: int, b: int) -> int:
        d = (a - b) & (_TICKS_PERIOD - 1)
        return d - _TICKS_PERIOD if d >= _TICKS_PERIOD // 2 else d

    def ticks_add(a: int, delta: int) -> int:
        return (a + delta) & (_TICKS_PERIOD - 1)

    def sleep_ms(ms: int) -> None:
        time.sleep(ms / 1000)


# seconds between 1970 and the port's epoch (ESP32 and RP2 count from 2000)
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


def unix_time() -> int:
    return int(time.time()) + EPOCH_OFFSET


def clock_set() -> bool:
    """True once the clock was set (NTP, or the host's clock on the unix port)."""
    return unix_time() > 1_700_000_000
