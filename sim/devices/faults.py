"""Fault injection for simulators: what a device does wrong, and when.

A schedule entry reads ``KIND[:ARG]@START+DURATION[/PERIOD]`` (seconds from simulator start):

- ``silent@30+10``                   stop answering for 10 s from t=30 s
- ``exception:4@60+5``               answer with exception code 4 (server device failure)
- ``spike:turbidity=250@20+15/90``   turbidity reads 250 from t=20 s for 15 s, every 90 s

Pure: the simulator asks :meth:`FaultSchedule.active` with its own clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ENTRY = re.compile(
    r"^(?P<kind>silent|exception|spike)(?::(?P<arg>[^@]+))?@(?P<start>[\d.]+)\+(?P<dur>[\d.]+)(?:/(?P<period>[\d.]+))?$"
)


@dataclass(frozen=True)
class Fault:
    kind: str  # silent | exception | spike
    start_s: float
    duration_s: float
    period_s: float | None = None
    code: int = 4
    point: str | None = None
    value: float | None = None

    def covers(self, t: float) -> bool:
        if t < self.start_s:
            return False
        offset = t - self.start_s
        if self.period_s:
            offset %= self.period_s
        return offset < self.duration_s


def parse_fault(text: str) -> Fault:
    """Parse one schedule entry; ``ValueError`` says what is wrong and shows the form."""
    m = _ENTRY.match(text.strip())
    if not m:
        raise ValueError(
            f"bad fault {text!r}: use KIND[:ARG]@START+DURATION[/PERIOD], e.g. silent@30+10, "
            "exception:4@60+5, spike:turbidity=250@20+15/90"
        )
    kind, arg = m["kind"], m["arg"]
    start, dur = float(m["start"]), float(m["dur"])
    period = float(m["period"]) if m["period"] else None
    if period is not None and period <= dur:
        raise ValueError(f"bad fault {text!r}: the period must be longer than the duration")
    if kind == "exception":
        code = int(arg) if arg else 4
        if not 1 <= code <= 255:
            raise ValueError(f"bad fault {text!r}: exception code must be 1-255")
        return Fault(kind, start, dur, period, code=code)
    if kind == "spike":
        if not arg or "=" not in arg:
            raise ValueError(f"bad fault {text!r}: a spike needs POINT=VALUE, e.g. spike:ph=10@5+5")
        point, _, value = arg.partition("=")
        return Fault(kind, start, dur, period, point=point.strip(), value=float(value))
    if arg:
        raise ValueError(f"bad fault {text!r}: 'silent' takes no argument")
    return Fault(kind, start, dur, period)


@dataclass
class FaultSchedule:
    """Scheduled faults plus a manual override set through the control API."""

    faults: list[Fault] = field(default_factory=list)
    manual_mode: str = "normal"  # normal | silent | exception
    manual_code: int = 4
    manual_spikes: dict[str, tuple[float, float]] = field(
        default_factory=dict
    )  # point -> (value, until)

    def mode(self, t: float) -> tuple[str, int]:
        """('normal' | 'silent' | 'exception', exception code) at time ``t``."""
        if self.manual_mode != "normal":
            return self.manual_mode, self.manual_code
        for f in self.faults:
            if f.kind in ("silent", "exception") and f.covers(t):
                return f.kind, f.code
        return "normal", 0

    def spikes(self, t: float) -> dict[str, float]:
        out = {p: v for p, (v, until) in self.manual_spikes.items() if t < until}
        for f in self.faults:
            if f.kind == "spike" and f.point and f.value is not None and f.covers(t):
                out[f.point] = f.value
        return out
