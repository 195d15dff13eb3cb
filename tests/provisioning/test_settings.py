"""Node app settings: refused before anything is written, with the unit, the range and the
closest setting; and what the tool accepts the node accepts at boot (one schema, two checks)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioning import settings
from provisioning.errors import ProvisionInputError

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


@pytest.fixture(scope="module")
def node_config() -> Iterator[Any]:
    """The firmware's own config check (cenode.config), run on CPython."""
    sys.path.insert(0, str(FIRMWARE))
    try:
        from cenode import config  # type: ignore[import-not-found]

        yield config
    finally:
        sys.path.remove(str(FIRMWARE))


@pytest.mark.parametrize(
    ("kind", "sets", "words", "hint"),
    [
        ("bin-fill", ["full_mm=abc"], "--set full_mm=abc: expected a number of mm", "e.g. --set full_mm=150 (20-4900 mm)"),
        ("bin-fill", ["fullmm=200"], "--set fullmm: not a setting of a bin-fill node; did you mean 'full_mm'?", "empty_mm (100-5000 mm, default 1200)"),
        ("bin-fill", ["full_mm=20cm"], "full_mm is in mm, not cm", "e.g. --set full_mm=150"),
        ("bin-fill", ["full_mm=5"], "out of range, full_mm must be 20-4900 mm", "counts as full"),
        ("bin-fill", ["empty_mm=300", "full_mm=400"], "empty_mm (300 mm) must be larger than full_mm (400 mm)", "empty bin"),
        ("bin-fill", ["pings=2.5"], "expected a whole number", "pings: 1-15"),
        ("bin-fill", ["pins.echho=3"], "did you mean 'pins.echo'?", "pins.trigger|echo|temp"),
        ("bin-fill", ["pins.echo=99"], "pins.echo must be 0-48", ""),
        ("bin-fill", ["pins=[1,2]"], "expected a JSON object", "bin-fill settings"),
        ("bin-fill", ["empty_mm"], "expected KEY=VALUE", "--set empty_mm=1100"),
        ("bin-fill", ["samples=3"], "not a setting of a bin-fill node", "bin-fill settings"),
        ("water", ["calibration.ph=[[1500,7]]"], "expected two [mV, pH] points", "[[1500, 7.0], [2030, 4.0]]"),
        ("water", ["calibration.ph=[[1500,7],[1500,4]]"], "both points are at 1500 mV", "two different"),
        ("water", ["calibration.ph=[[1500,7],[2030,15]]"], "must be 0-14 pH", ""),
        ("water", ["calibration.redox=[[1,2],[3,4]]"], "not a probe of a water node", ""),
        ("water", ["calibration.ph=nope"], "not valid JSON", ""),
        ("gate-relay", ["max_pulse_ms=2s"], "max_pulse_ms is in ms, not s", ""),
        ("toaster", [], "unknown node kind 'toaster'", "bin-fill"),
    ],
)  # fmt: skip
def test_wrong_settings_are_refused_with_what_to_do(
    kind: str, sets: list[str], words: str, hint: str
) -> None:
    with pytest.raises(ProvisionInputError) as info:
        settings.apply_sets(kind, {}, sets)
    assert words in info.value.message and hint in (info.value.hint or ""), info.value
    assert info.value.code == "CE500"


def test_settings_in_their_units_and_dotted_parts() -> None:
    app = settings.apply_sets(
        "bin-fill",
        {"pins": {"trigger": 5, "echo": 18, "temp": 34}},
        ["full_mm=200mm", "empty_mm=1100", "pins.echo=19", "pings=7"],
    )
    assert app == {
        "pins": {"trigger": 5, "echo": 19, "temp": 34},
        "full_mm": 200,
        "empty_mm": 1100,
        "pings": 7,
    }
    water = settings.apply_sets("water", {}, ["calibration.ph=[[1480, 7], [2010, 4.01]]"])
    assert water == {"calibration": {"ph": [[1480, 7], [2010, 4.01]]}}
    assert settings.apply_sets("gate-relay", {}, ["max_pulse_ms=3000 ms"]) == {"max_pulse_ms": 3000}


TYPED: list[tuple[str, dict[str, Any]]] = [
    ("bin-fill", {}),
    ("bin-fill", {"full_mm": 200, "empty_mm": 1000.5}),
    ("bin-fill", {"full_mm": "abc"}),
    ("bin-fill", {"fullmm": 200}),
    ("bin-fill", {"full_mm": True}),
    ("bin-fill", {"full_mm": 5}),
    ("bin-fill", {"empty_mm": 300, "full_mm": 400}),
    ("bin-fill", {"empty_mm": 140}),  # below the default full_mm (150)
    ("bin-fill", {"pings": 2.0}),
    ("bin-fill", {"pings": 15}),
    ("bin-fill", {"pins": {"echo": 48}}),
    ("bin-fill", {"pins": {"echo": 49}}),
    ("bin-fill", {"pins": {"relay": 4}}),
    ("bin-fill", {"pins": 4}),
    ("water", {"samples": 31}),
    ("water", {"samples": 0}),
    ("water", {"calibration": {"ph": [[1500, 7.0], [2030, 4.0]]}}),
    ("water", {"calibration": {"ph": [[1500, 7.0], [1500, 4.0]]}}),
    ("water", {"calibration": {"turbidity": [[2900, 0], [1400, 4001]]}}),
    ("water", {"calibration": {"ph": [[3301, 7.0], [2030, 4.0]]}}),
    ("water", {"calibration": {"redox": [[1, 2], [3, 4]]}}),
    ("water", {"calibration": []}),
    ("gate-relay", {"max_pulse_ms": 60000}),
    ("gate-relay", {"max_pulse_ms": 60001}),
    ("gate-relay", {"max_pulse_ms": 99}),
]


@pytest.mark.parametrize(("kind", "app"), TYPED)
def test_the_tool_and_the_node_agree(kind: str, app: dict[str, Any], node_config: Any) -> None:
    doc = {"site": "s", "node": "n", "kind": kind, "broker": {"host": "h", "port": 1}, "app": app}
    try:
        written = settings.check_app(kind, app)
    except ProvisionInputError:
        tool_ok = False
    else:
        tool_ok = True
        node_config.check({**doc, "app": written})  # what the tool writes, the node takes
    try:
        node_config.check(doc)
    except node_config.ConfigError:
        node_ok = False
    else:
        node_ok = True
    assert tool_ok == node_ok, (kind, app)


def test_the_schema_is_read_as_data_not_imported() -> None:
    s = settings.schema()
    assert set(s.settings) == {"bin-fill", "water", "gate-relay"}
    assert s.settings["bin-fill"]["full_mm"]["unit"] == "mm" and s.pin_max == 48
