"""A tiny test kit that works on CPython and MicroPython (no pytest on a MicroPython VM).

The runner (``run.py``) sets :data:`VECTORS` (the folder of golden vectors) and :data:`TMP`.
"""

import json
import os

VECTORS = ""
TMP = ""
_count = [0]


def vectors(name: str) -> dict:
    with open(VECTORS + "/" + name) as f:
        return json.load(f)


def tmpdir() -> str:
    _count[0] += 1
    path = TMP + "/t" + str(_count[0])
    os.mkdir(path)
    return path


def write(path: str, data) -> None:
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class raises:
    """``with raises(ValueError) as r: ...``; ``r.value`` is the exception."""

    def __init__(self, kind) -> None:
        self.kind = kind
        self.value = None

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb) -> bool:
        if kind is None:
            raise AssertionError("expected " + self.kind.__name__ + ", nothing was raised")
        if not issubclass(kind, self.kind):
            return False
        self.value = value
        return True


def eq(got, want, what: str = "") -> None:
    if got != want:
        raise AssertionError((what + ": " if what else "") + "got " + repr(got) + ", want " + repr(want))
