"""A simulated ``machine`` module for the MicroPython unix port (hil-tests, benchmarks).

Put this folder first on ``sys.path`` (``MICROPYPATH=firmware/sim:...``) and the node's HAL runs
unchanged against a simulated world read from the file named by the ``SIM_WORLD`` environment
variable (default ``sim.json`` in the current folder), which a test rewrites while the node runs::

    {"echo_us": {"18": 5830}, "adc_mv": {"34": 700}, "pins": {"4": 0}}

``reset()`` ends the process with exit code 75 (the test restarts it, as a board would reboot).
"""

import json
import sys

RESET_EXIT_CODE = 75
_outputs: dict = {}
_cache: list = [None, {}]  # (when read, world): re-read at most every 200 ms


def _world() -> dict:
    import os

    path = os.getenv("SIM_WORLD") or "sim.json"  # type: ignore[attr-defined]
    import time

    now = time.ticks_ms()  # type: ignore[attr-defined]
    if _cache[0] is not None and time.ticks_diff(now, _cache[0]) < 200:  # type: ignore[attr-defined]
        return _cache[1]
    try:
        with open(path) as f:
            _cache[1] = json.load(f)
        _cache[0] = now
    except (OSError, ValueError):
        pass
    return _cache[1]


class Pin:
    IN = 0
    OUT = 1

    def __init__(self, pin_id, mode: int = 0, *args, **kwargs) -> None:
        self.id = str(pin_id)
        self.mode = mode

    def value(self, v=None):
        if v is None:
            if self.id in _outputs:
                return _outputs[self.id]
            return int(_world().get("pins", {}).get(self.id, 0))
        _outputs[self.id] = 1 if v else 0
        return None


class ADC:
    def __init__(self, pin) -> None:
        self.id = pin.id if isinstance(pin, Pin) else str(pin)

    def read_u16(self) -> int:
        mv = float(_world().get("adc_mv", {}).get(self.id, 0))
        return max(0, min(65535, int(mv * 65535 / 3300 + 0.5)))


def time_pulse_us(pin, level: int, timeout_us: int = 1000000) -> int:
    echo = int(_world().get("echo_us", {}).get(pin.id, -2))
    return echo if 0 < echo <= timeout_us else -2


class WDT:
    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        self.timeout = timeout

    def feed(self) -> None:
        pass


def reset() -> None:
    sys.exit(RESET_EXIT_CODE)
