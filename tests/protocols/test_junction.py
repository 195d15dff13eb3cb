"""The timing sheet: what a valid sheet is, its intergreens, and the errors for bad ones."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from edge.traffic_signal import load_junction
from protocols.junction import JunctionSpec


def sheet() -> dict[str, Any]:
    """A small valid sheet: two vehicle groups in conflict, one crossing, three phases."""
    return {
        "name": "t-junction",
        "arms": ["n", "e", "s"],
        "groups": [
            {
                "name": "NS",
                "kind": "vehicle",
                "movements": [{"from": "n", "to": "s"}],
                "min_green_s": 6,
                "amber_s": 3,
                "clearance_s": 2,
            },
            {
                "name": "E",
                "kind": "vehicle",
                "movements": [{"from": "e", "to": "s"}],
                "min_green_s": 5,
                "amber_s": 4,
                "clearance_s": 1,
            },
            {
                "name": "xE",
                "kind": "pedestrian",
                "crosses": "e",
                "min_green_s": 5,
                "clearance_s": 9,
            },
        ],
        "conflicts": [["NS", "E"], ["E", "xE"], ["NS", "xE"]],
        "phases": [
            {
                "name": "A",
                "groups": ["NS"],
                "min_green_s": 6,
                "max_green_s": 40,
                "fixed_green_s": 20,
            },
            {
                "name": "B",
                "groups": ["E"],
                "min_green_s": 5,
                "max_green_s": 30,
                "fixed_green_s": 10,
            },
            {
                "name": "P",
                "groups": ["xE"],
                "min_green_s": 5,
                "max_green_s": 10,
                "fixed_green_s": 6,
            },
        ],
        "detectors": [{"name": "dA", "group": "NS"}],
        "fixed_plan": ["A", "B", "P"],
        "ped_max_wait_s": 90,
    }


def test_the_shipped_sheet_loads_and_its_walk_stage_is_reachable() -> None:
    j = load_junction("four-arm")
    assert [p.name for p in j.phases] == ["NS_T", "NS_L", "EW_T", "EW_L", "PED"]
    assert j.ped_phases == frozenset({4})
    assert j.crossings == ("xN", "xE", "xS", "xW")
    assert j.fixed_ped_gap_s() <= j.ped_max_wait_s
    assert j.worst_ped_service_s() <= j.ped_max_wait_s


def test_intergreen_is_the_clearing_groups_amber_and_clearance() -> None:
    j = JunctionSpec.model_validate(sheet())
    assert j.intergreen("NS", "E") == 5  # 3 + 2
    assert j.intergreen("E", "NS") == 5  # 4 + 1
    assert j.intergreen("xE", "E") == 9  # walk ends: the pedestrian clearance
    # phase changes: amber of the ending vehicle groups, all-red for the rest
    assert j.transition(0, 1) == (3, 2)
    assert j.transition(1, 2) == (4, 1)
    assert j.transition(2, 0) == (0, 9)


def test_fixed_cycle_and_the_longest_pedestrian_wait() -> None:
    j = JunctionSpec.model_validate(sheet())
    # 20 + 5 + 10 + 5 + 6 + 9 = 55; walk ends at 46 and starts again at 55 + 40 = 95
    assert j.fixed_cycle_s() == 55
    assert j.fixed_ped_gap_s() == 55 - 6


def test_table_id_follows_the_content() -> None:
    a = JunctionSpec.model_validate(sheet())
    b = JunctionSpec.model_validate(copy.deepcopy(sheet()))
    assert a.table_id() == b.table_id()
    changed = sheet()
    changed["groups"][0]["clearance_s"] = 3
    assert JunctionSpec.model_validate(changed).table_id() != a.table_id()


def _edit(path: str, value: Any) -> dict[str, Any]:
    doc = sheet()
    target: Any = doc
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if k.isdigit() else target[k]
    last = keys[-1]
    if last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_edit("phases.0.groups", ["NS", "E"]), "greens conflicting groups NS, E"),
        (_edit("phases.1.groups", ["E", "NS"]), "is in phases 'A' and 'B'"),
        (_edit("phases.0.groups", ["NSX"]), "unknown group 'NSX'"),
        (_edit("phases.0.min_green_s", 4), "below its groups' minimum green 6"),
        (_edit("phases.0.fixed_green_s", 50), "min_green_s <= fixed_green_s <= max_green_s"),
        (_edit("fixed_plan", ["A", "B"]), "missing \\['P'\\]"),
        (_edit("fixed_plan", ["A", "A", "B", "P"]), "cannot repeat a phase back to back"),
        (_edit("fixed_plan", ["A", "Q", "B", "P"]), "unknown phase 'Q'"),
        (_edit("ped_max_wait_s", 30), "leaves pedestrians waiting up to 49 s"),
        (_edit("groups.0.amber_s", 2), "amber_s must be at least 3"),
        (_edit("groups.2.amber_s", 2), "no amber"),
        (_edit("groups.0.movements", []), "needs 'movements'"),
        (_edit("groups.0.movements", [{"from": "n", "to": "w"}]), "arm 'w'"),
        (_edit("conflicts", [["NS", "NS"]]), "cannot conflict with itself"),
        (_edit("conflicts", [["NS", "Z"]]), "unknown group 'Z'"),
        (_edit("detectors", [{"name": "dP", "group": "xE"}]), "must watch a vehicle group"),
    ],
)
def test_bad_sheets_are_refused_with_the_reason(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JunctionSpec.model_validate(doc)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        JunctionSpec.model_validate({**sheet(), "cycle_s": 90})
