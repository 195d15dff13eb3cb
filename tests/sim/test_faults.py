"""The simulators' fault schedule syntax."""

from __future__ import annotations

import pytest

from sim.devices.faults import Fault, FaultSchedule, parse_fault


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("silent@30+10", Fault("silent", 30, 10)),
        ("exception:4@60+5", Fault("exception", 60, 5, code=4)),
        ("exception@1+1", Fault("exception", 1, 1, code=4)),
        ("spike:turbidity=250@20+15/90", Fault("spike", 20, 15, 90, point="turbidity", value=250)),
        ("spike:ph=-1.5@0+1", Fault("spike", 0, 1, point="ph", value=-1.5)),
    ],
)
def test_parse(text: str, fault: Fault) -> None:
    assert parse_fault(text) == fault


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("loud@1+1", "KIND"),
        ("silent@1", "KIND"),
        ("silent:3@1+1", "no argument"),
        ("spike:ph@1+1", "POINT=VALUE"),
        ("spike:ph=x@1+1", "could not convert"),
        ("exception:300@1+1", "1-255"),
        ("silent@1+10/5", "period"),
    ],
)
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fault(text)


def test_schedule_windows_and_periods() -> None:
    s = FaultSchedule([parse_fault("silent@10+5"), parse_fault("spike:ph=10@0+2/20")])
    assert s.mode(9.9) == ("normal", 0)
    assert s.mode(10) == ("silent", 4)
    assert s.mode(15) == ("normal", 0)
    assert s.spikes(1) == {"ph": 10} and s.spikes(2) == {} and s.spikes(41) == {"ph": 10}
    s.manual_mode = "exception"
    s.manual_code = 6
    assert s.mode(0) == ("exception", 6)


def test_fleet_layout_deals_profiles_round_robin() -> None:
    from sim.devices.modbus_device import fleet_layout

    layout = fleet_layout(50, 5)
    assert len(layout) == 50 and len({name for *_, name in layout}) == 50
    assert layout[:3] == [
        (0, 1, "water-sonde", "dev-000"),
        (1, 1, "air-station", "dev-001"),
        (2, 1, "water-sonde", "dev-002"),
    ]
    assert [u for b, u, *_ in layout if b == 0] == list(range(1, 11))
