"""The signal controller's Modbus register map, as data.

A traffic-signal cabinet that a cityedge gateway drives exposes its state in **input
registers** (read with fc 4) and takes plans in **holding registers** (fc 6 / fc 16). Times are
in tenths of a second (``scale: 0.1``, unit ``s``); the cabinet's own clock
(``cabinet_time``) is what every elapsed time is measured on, so a gateway never mixes its clock
with the cabinet's.

State (input registers)::

    0  cabinet_time        uint32  controller clock, 0.1 s
    2  mode                uint16  Mode: 0 local fixed plan, 1 remote (gateway), 2 fallback
    3  phase               uint16  phase whose green runs or has just ended
    4  interval            uint16  Interval: 0 green, 1 amber, 2 all-red
    5  interval_elapsed    uint16  0.1 s since the interval began
    6  green_elapsed       uint16  0.1 s of green of ``phase`` (its final length in intergreen)
    7  next_phase          uint16  phase the cabinet will go to when this green ends
    8  planned_green       uint16  0.1 s; the green of ``phase`` as the cabinet will run it
    9  cmd_seq_applied     uint16  ``cmd_seq`` of the last command the cabinet took
    10 cmd_status          uint16  CommandStatus of that last command
    11 faults              uint16  Fault bits
    12 detector_faults     uint16  bit i: detector i failed (stuck or dead)
    13 ped_demand          uint16  bit i: crossing i's button pressed and not yet served
    14 ped_wait            uint16  0.1 s the longest-waiting pressed button has waited
    15 phase_count         uint16  phases in the cabinet's timing sheet
    16 table_id            uint32  CRC-32 of the timing sheet (protocols.junction)
    18 watchdog_age        uint16  0.1 s since the gateway last wrote (saturates at 6553.5)
    19 conflict_trips      uint16  times the cabinet's conflict monitor tripped (saturates)
    20 + 5i                        detector i (0..11), see DETECTOR_FIELDS:
         det{i}_count      uint16  vehicles over the stop line, cumulative (wraps at 65536)
         det{i}_queue      uint16  vehicles halted in the zone
         det{i}_vehicles   uint16  vehicles in the zone
         det{i}_occupancy  uint16  zone occupancy, 0.1 %
         det{i}_gap        uint16  0.1 s since a vehicle last crossed the stop line

Plan (holding registers)::

    0  mode_request        uint16  0 run the fixed plan, 1 follow the gateway
    1  heartbeat           uint16  any write restarts the cabinet's watchdog
    2  cmd_seq             uint16  changes with every command (the cabinet acts on a change)
    3  cmd_phase           uint16  the phase this command shapes (current, or the one entered)
    4  cmd_green           uint16  0.1 s; total green of cmd_phase, from its start
    5  cmd_next_phase      uint16  phase after cmd_phase
    6  cmd_amber           uint16  0.1 s amber between them
    7  cmd_all_red         uint16  0.1 s all-red between them
    8  cmd_next_green      uint16  0.1 s green of cmd_next_phase unless a newer command says

Registers 1-8 form one command and are written together with one fc 16 (a Modbus server
applies a write-multiple request as a whole), so the cabinet never sees half a plan. A
command is a lease: it fixes the plan up to the end of the next phase's green; if no newer
command comes, the cabinet's watchdog takes it back to its fixed plan.

Pure data: :data:`POINTS` lists every point; :func:`point` finds one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

from protocols.junction import MAX_DETECTORS
from protocols.modbus import DataType, PointSpec, RegisterType, Value


class Mode(IntEnum):
    LOCAL = 0  # the cabinet runs its fixed plan because it was asked to
    REMOTE = 1  # the cabinet follows the gateway's commands
    FALLBACK = 2  # remote was asked for, but the watchdog expired: fixed plan


class Interval(IntEnum):
    GREEN = 0
    AMBER = 1
    ALL_RED = 2


class CommandStatus(IntEnum):
    NONE = 0
    APPLIED = 1
    STALE = 2  # cmd_phase is neither the current green nor the phase being entered
    REFUSED = 3  # the cabinet refused the values (out of range)


class Fault(IntFlag):
    WATCHDOG = 1  # the gateway stopped writing while in remote mode
    DETECTOR = 2  # at least one detector failed (see detector_faults)
    CONFLICT = 4  # the cabinet's conflict monitor tripped


@dataclass(frozen=True)
class RegisterPoint:
    """One point of the map, with the words a technician reads."""

    name: str
    address: int
    table: RegisterType
    dtype: DataType
    description: str
    scale: float = 1.0
    unit: str | None = None

    def spec(self) -> PointSpec:
        return PointSpec(
            name=self.name,
            address=self.address,
            register_type=self.table,
            dtype=self.dtype,
            scale=self.scale,
            unit=self.unit,
        )


_IN, _HOLD = RegisterType.INPUT, RegisterType.HOLDING
_U16, _U32 = DataType.UINT16, DataType.UINT32
DECI: Final = 0.1

DETECTOR_BASE: Final = 20
DETECTOR_FIELDS: Final = (
    ("count", "vehicles over the stop line, cumulative; wraps at 65536", 1.0, None),
    ("queue", "vehicles halted in the zone", 1.0, None),
    ("vehicles", "vehicles in the zone", 1.0, None),
    ("occupancy", "zone occupancy", DECI, "%"),
    ("gap", "time since a vehicle last crossed the stop line", DECI, "s"),
)

_STATE: Final = (
    RegisterPoint("cabinet_time", 0, _IN, _U32, "controller clock", DECI, "s"),
    RegisterPoint("mode", 2, _IN, _U16, "0 local fixed plan, 1 remote, 2 fallback"),
    RegisterPoint("phase", 3, _IN, _U16, "phase whose green runs or has just ended"),
    RegisterPoint("interval", 4, _IN, _U16, "0 green, 1 amber, 2 all-red"),
    RegisterPoint("interval_elapsed", 5, _IN, _U16, "time in the interval", DECI, "s"),
    RegisterPoint("green_elapsed", 6, _IN, _U16, "green of the phase so far", DECI, "s"),
    RegisterPoint("next_phase", 7, _IN, _U16, "phase after this green"),
    RegisterPoint("planned_green", 8, _IN, _U16, "green the phase will get", DECI, "s"),
    RegisterPoint("cmd_seq_applied", 9, _IN, _U16, "sequence number of the last command taken"),
    RegisterPoint("cmd_status", 10, _IN, _U16, "0 none, 1 applied, 2 stale, 3 refused"),
    RegisterPoint("faults", 11, _IN, _U16, "bit 0 watchdog, bit 1 detector, bit 2 conflict"),
    RegisterPoint("detector_faults", 12, _IN, _U16, "bit i: detector i failed"),
    RegisterPoint("ped_demand", 13, _IN, _U16, "bit i: crossing i waits for walk"),
    RegisterPoint("ped_wait", 14, _IN, _U16, "longest wait of a pressed button", DECI, "s"),
    RegisterPoint("phase_count", 15, _IN, _U16, "phases in the timing sheet"),
    RegisterPoint("table_id", 16, _IN, _U32, "CRC-32 of the timing sheet"),
    RegisterPoint("watchdog_age", 18, _IN, _U16, "time since the last gateway write", DECI, "s"),
    RegisterPoint("conflict_trips", 19, _IN, _U16, "times the conflict monitor tripped"),
)

_DETECTORS: Final = tuple(
    RegisterPoint(
        f"det{i}_{field}",
        DETECTOR_BASE + len(DETECTOR_FIELDS) * i + k,
        _IN,
        _U16,
        f"detector {i}: {what}",
        scale,
        unit,
    )
    for i in range(MAX_DETECTORS)
    for k, (field, what, scale, unit) in enumerate(DETECTOR_FIELDS)
)

_PLAN: Final = (
    RegisterPoint("mode_request", 0, _HOLD, _U16, "0 run the fixed plan, 1 follow the gateway"),
    RegisterPoint("heartbeat", 1, _HOLD, _U16, "any write restarts the watchdog"),
    RegisterPoint("cmd_seq", 2, _HOLD, _U16, "changes with every command"),
    RegisterPoint("cmd_phase", 3, _HOLD, _U16, "the phase the command shapes"),
    RegisterPoint("cmd_green", 4, _HOLD, _U16, "total green of cmd_phase", DECI, "s"),
    RegisterPoint("cmd_next_phase", 5, _HOLD, _U16, "phase after cmd_phase"),
    RegisterPoint("cmd_amber", 6, _HOLD, _U16, "amber between them", DECI, "s"),
    RegisterPoint("cmd_all_red", 7, _HOLD, _U16, "all-red between them", DECI, "s"),
    RegisterPoint("cmd_next_green", 8, _HOLD, _U16, "green of cmd_next_phase", DECI, "s"),
)

POINTS: Final[tuple[RegisterPoint, ...]] = _STATE + _DETECTORS + _PLAN

#: The holding registers of one command, in address order (written with one fc 16).
COMMAND_POINTS: Final = (
    "heartbeat",
    "cmd_seq",
    "cmd_phase",
    "cmd_green",
    "cmd_next_phase",
    "cmd_amber",
    "cmd_all_red",
    "cmd_next_green",
)

PROFILE_NAME: Final = "signal-controller"
PROFILE_DESCRIPTION: Final = "Traffic-signal controller (cabinet) driven by a cityedge gateway"

_BY_NAME: Final = {p.name: p for p in POINTS}


def point(name: str) -> RegisterPoint:
    """The point ``name``; ``KeyError`` if the map has none."""
    return _BY_NAME[name]


def detector_point(index: int, field: str) -> str:
    """Name of a detector field, e.g. ``detector_point(3, "queue") == "det3_queue"``."""
    if not 0 <= index < MAX_DETECTORS:
        raise ValueError(f"detector index {index} is outside 0..{MAX_DETECTORS - 1}")
    return f"det{index}_{field}"


@dataclass(frozen=True)
class DetectorState:
    count: int
    queue: int
    vehicles: int
    occupancy_pct: float
    gap_s: float


@dataclass(frozen=True)
class ControllerState:
    """One poll of the cabinet's input registers, typed (times in seconds)."""

    time_s: float
    mode: Mode
    phase: int
    interval: Interval
    interval_elapsed_s: float
    green_elapsed_s: float
    next_phase: int
    planned_green_s: float
    cmd_seq_applied: int
    cmd_status: CommandStatus
    faults: Fault
    detector_faults: int
    ped_demand: int
    ped_wait_s: float
    phase_count: int
    table_id: int
    watchdog_age_s: float
    detectors: tuple[DetectorState, ...]

    @classmethod
    def from_points(cls, values: Mapping[str, Value], detectors: int) -> ControllerState:
        """Build from decoded points; ``ValueError`` names a missing point or a value that is
        not one of its codes."""

        def get(name: str) -> float:
            try:
                return float(values[name])
            except KeyError:
                raise ValueError(f"the poll lacks point {name!r}") from None

        def code(name: str, enum: type[IntEnum]) -> int:
            raw = int(get(name))
            try:
                return int(enum(raw))
            except ValueError:
                raise ValueError(
                    f"{name} = {raw} is not one of {[e.value for e in enum]}"
                ) from None

        return cls(
            time_s=get("cabinet_time"),
            mode=Mode(code("mode", Mode)),
            phase=int(get("phase")),
            interval=Interval(code("interval", Interval)),
            interval_elapsed_s=get("interval_elapsed"),
            green_elapsed_s=get("green_elapsed"),
            next_phase=int(get("next_phase")),
            planned_green_s=get("planned_green"),
            cmd_seq_applied=int(get("cmd_seq_applied")),
            cmd_status=CommandStatus(code("cmd_status", CommandStatus)),
            faults=Fault(int(get("faults")) & 0x7),
            detector_faults=int(get("detector_faults")),
            ped_demand=int(get("ped_demand")),
            ped_wait_s=get("ped_wait"),
            phase_count=int(get("phase_count")),
            table_id=int(get("table_id")),
            watchdog_age_s=get("watchdog_age"),
            detectors=tuple(
                DetectorState(
                    count=int(get(detector_point(i, "count"))),
                    queue=int(get(detector_point(i, "queue"))),
                    vehicles=int(get(detector_point(i, "vehicles"))),
                    occupancy_pct=get(detector_point(i, "occupancy")),
                    gap_s=get(detector_point(i, "gap")),
                )
                for i in range(detectors)
            ),
        )
