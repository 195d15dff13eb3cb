"""The signal controller's register map: layout, encodings, and the typed state."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.junction import MAX_DETECTORS
from protocols.modbus import MAX_REGISTERS_PER_READ, RegisterType, decode_value, encode_value
from protocols.signal_controller import (
    COMMAND_POINTS,
    DETECTOR_BASE,
    DETECTOR_FIELDS,
    POINTS,
    CommandStatus,
    ControllerState,
    Interval,
    Mode,
    detector_point,
    point,
)


def test_no_two_points_share_a_register() -> None:
    for table in RegisterType:
        spans = sorted((p.address, p.address + p.spec().count) for p in POINTS if p.table is table)
        assert all(a_end <= b for (_, a_end), (b, _) in itertools.pairwise(spans)), table


def test_the_whole_state_is_one_read_and_the_plan_one_write() -> None:
    state = [p for p in POINTS if p.table is RegisterType.INPUT]
    end = max(p.address + p.spec().count for p in state)
    assert min(p.address for p in state) == 0
    assert end <= MAX_REGISTERS_PER_READ
    assert end == DETECTOR_BASE + MAX_DETECTORS * len(DETECTOR_FIELDS)
    # the command block: adjacent holding registers, in address order
    addresses = [point(name).address for name in COMMAND_POINTS]
    assert addresses == list(range(addresses[0], addresses[0] + len(COMMAND_POINTS)))
    assert all(point(name).table is RegisterType.HOLDING for name in COMMAND_POINTS)
    assert point("mode_request").address not in addresses


# value -> registers, checked whole (Modbus registers are big-endian words)
@pytest.mark.parametrize(
    ("name", "value", "registers"),
    [
        ("cabinet_time", 123.4, [0x0000, 0x04D2]),
        ("cabinet_time", 429496729.5, [0xFFFF, 0xFFFF]),
        ("cmd_green", 32.5, [325]),
        ("cmd_green", 0.0, [0]),
        ("cmd_amber", 3.0, [30]),
        ("det3_occupancy", 100.0, [1000]),
        ("table_id", 0x55AE4D1A, [0x55AE, 0x4D1A]),
        ("mode_request", 1, [1]),
    ],
)
def test_encoding_table(name: str, value: float, registers: list[int]) -> None:
    spec = point(name).spec()
    assert encode_value(spec, value) == registers
    assert decode_value(spec, registers) == pytest.approx(value)


def test_detector_points_are_laid_out_per_detector() -> None:
    for i in range(MAX_DETECTORS):
        for k, (field, *_rest) in enumerate(DETECTOR_FIELDS):
            assert point(detector_point(i, field)).address == DETECTOR_BASE + 5 * i + k
    with pytest.raises(ValueError, match=r"outside 0\.\.11"):
        detector_point(12, "count")


def state_values(**overrides: float) -> dict[str, float]:
    values: dict[str, float] = {p.name: 0.0 for p in POINTS if p.table is RegisterType.INPUT}
    values.update(overrides)
    return values


def test_state_from_points() -> None:
    s = ControllerState.from_points(
        state_values(
            cabinet_time=99.5,
            mode=1,
            phase=2,
            interval=1,
            green_elapsed=12.3,
            cmd_status=2,
            faults=2,
            det1_queue=4,
            det1_gap=1.5,
        ),
        detectors=2,
    )
    assert s.time_s == 99.5 and s.mode is Mode.REMOTE and s.interval is Interval.AMBER
    assert s.cmd_status is CommandStatus.STALE
    assert s.detectors[1].queue == 4 and s.detectors[1].gap_s == 1.5
    assert len(s.detectors) == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": 7}, "mode = 7 is not one of \\[0, 1, 2\\]"),
        ({"interval": 3}, "interval = 3"),
        ({"cmd_status": 9}, "cmd_status = 9"),
    ],
)
def test_state_refuses_codes_it_does_not_know(values: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ControllerState.from_points(state_values(**values), detectors=0)


def test_state_names_a_missing_point() -> None:
    values = state_values()
    del values["ped_wait"]
    with pytest.raises(ValueError, match="lacks point 'ped_wait'"):
        ControllerState.from_points(values, detectors=0)


@given(st.sampled_from([p for p in POINTS]), st.integers(0, 0xFFFF))
def test_every_point_round_trips_any_register_value(p: object, raw: int) -> None:
    from protocols.signal_controller import RegisterPoint

    assert isinstance(p, RegisterPoint)
    spec = p.spec()
    registers = [raw] * spec.count
    assert encode_value(spec, decode_value(spec, registers)) == registers
