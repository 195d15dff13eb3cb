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


def b64url_decode(text: str) -> bytes:
    """base64url without padding -> bytes (ValueError when it is not base64url)."""
    import binascii

    for c in text:
        if not ("A" <= c <= "Z" or "a" <= c <= "z" or "0" <= c <= "9" or c in "-_"):
            raise ValueError("not base64url")
    std = text.replace("-", "+").replace("_", "/")
    std += "=" * (-len(std) % 4)
    try:
        return binascii.a2b_base64(std)
    except Exception as err:  # binascii.Error on CPython, ValueError on MicroPython
        raise ValueError("not base64url")


def hexlify(data: bytes) -> str:
    import binascii

    return binascii.hexlify(data).decode()


def exists(path: str) -> bool:
    import os

    try:
        os.stat(path)
        return True
    except OSError:
        return False


def rmtree(path: str) -> None:
    """Remove a file or a folder with everything in it (MicroPython has no shutil)."""
    import os

    try:
        mode = os.stat(path)[0]
    except OSError:
        return
    if mode & 0x4000:
        for name in os.listdir(path):
            rmtree(path + "/" + name)
        os.rmdir(path)
    else:
        os.remove(path)


def makedirs(path: str) -> None:
    import os

    at = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if not part:
            continue
        at = at + part if not at or at.endswith("/") else at + "/" + part
        if not exists(at):
            os.mkdir(at)
