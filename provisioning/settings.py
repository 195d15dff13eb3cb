"""A node app's settings, checked before anything is written: ``--set KEY=VALUE`` against the
settings each app declares in the firmware (``firmware/cenode/appschema.py``).

That file is the one source of truth: the node checks its ``config.json`` against it at boot,
and this module reads it *as data* (``ast.literal_eval`` of its ``SETTINGS``, ``LARGER`` and
``PIN_MAX``; the tool never imports the firmware). What the tool accepts the node accepts:
``tests/provisioning/test_settings.py`` runs both checks on one table.

``--set`` takes ``KEY=VALUE`` where KEY is a setting or ``setting.part`` (``pins.echo=19``,
``calibration.ph=[[1500,7],[2030,4]]``) and VALUE is JSON or a number with the setting's own
unit (``full_mm=200``, ``full_mm=200mm``; ``full_mm=20cm`` is refused, naming the unit). A
misspelt key is refused with the closest setting (``fullmm`` -> did you mean ``full_mm``?).
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from provisioning.errors import ProvisionInputError

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "firmware" / "cenode" / "appschema.py"
_NUMBER = re.compile(
    r"^\s*(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>[^\d\s].*)?$"
)


@dataclass(frozen=True)
class Schema:
    settings: Mapping[str, Mapping[str, Mapping[str, Any]]]  # kind -> setting -> spec
    larger: Mapping[str, Sequence[Sequence[str]]]  # kind -> [[bigger, smaller], ...]
    pin_max: int


@cache
def schema(path: Path = SCHEMA_FILE) -> Schema:
    """The apps' declared settings, read from the firmware's file as literals."""
    found: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in ("SETTINGS", "LARGER", "PIN_MAX"):
                found[target.id] = ast.literal_eval(node.value)
    return Schema(found["SETTINGS"], found.get("LARGER", {}), int(found["PIN_MAX"]))


def _range(spec: Mapping[str, Any]) -> str:
    unit = spec.get("unit") or ""
    return f"{spec['min']}-{spec['max']}" + (f" {unit}" if unit else "")


def describe(kind: str) -> str:
    """One line naming every setting of ``kind`` with its unit, range and default."""
    parts = []
    for key, spec in schema().settings[kind].items():
        if spec["type"] == "pins":
            parts.append(f"pins.{'|'.join(spec['names'])} (GPIO 0-{schema().pin_max})")
        elif spec["type"] == "two-point":
            chans = "|".join(spec["of"])
            parts.append(f"{key}.{chans} ([[mV, value], [mV, value]])")
        else:
            parts.append(f"{key} ({_range(spec)}, default {spec['default']})")
    return f"{kind} settings: " + ", ".join(parts)


def _unknown(
    kind: str, key: str, choices: Sequence[str], what: str = "setting"
) -> ProvisionInputError:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    return ProvisionInputError(
        f"--set {key}: not a {what} of a {kind} node{guess}", hint=describe(kind)
    )


def _number(key: str, raw: Any, spec: Mapping[str, Any], integer: bool) -> float | int:
    """A value given on the command line (text) or in JSON, in the setting's unit and range."""
    unit = spec.get("unit") or ""
    example = f"e.g. --set {key}={spec.get('default', spec['min'])} ({_range(spec)})"
    parsed: Any = raw
    if isinstance(raw, str):
        m = _NUMBER.match(raw)
        if m is None:
            raise ProvisionInputError(
                f"--set {key}={raw}: expected a number" + (f" of {unit}" if unit else ""),
                hint=example,
            )
        given_unit = (m["unit"] or "").strip()
        if given_unit and given_unit != unit:
            raise ProvisionInputError(
                f"--set {key}={raw}: {key} is in {unit or 'plain numbers'}, not {given_unit}",
                hint=example,
            )
        parsed = int(m["num"]) if re.fullmatch(r"[-+]?\d+", m["num"]) else float(m["num"])
    if isinstance(parsed, bool) or not isinstance(parsed, (int, float)):
        raise ProvisionInputError(
            f"--set {key}={raw!r}: expected a number" + (f" of {unit}" if unit else ""),
            hint=example,
        )
    value: int | float = parsed
    if integer and not isinstance(value, int):
        raise ProvisionInputError(
            f"--set {key}={raw}: expected a whole number", hint=f"{key}: {_range(spec)}"
        )
    if not spec["min"] <= value <= spec["max"]:
        raise ProvisionInputError(
            f"--set {key}={raw}: out of range, {key} must be {_range(spec)}",
            hint=str(spec.get("help") or f"{key}: {_range(spec)}"),
        )
    return value


def _json(key: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ProvisionInputError(
            f"--set {key}={raw}: not valid JSON",
            hint=f"e.g. --set {key}=[[1500, 7.0], [2030, 4.0]]",
        ) from None


def _two_point(
    key: str, value: Any, spec: Mapping[str, Any], chan: Mapping[str, Any]
) -> list[list[float]]:
    if isinstance(value, str):
        value = _json(key, value)
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(p, list) and len(p) == 2 for p in value)
    ):
        raise ProvisionInputError(
            f"--set {key}: expected two [mV, {chan['unit']}] points",
            hint=f"e.g. --set {key}={json.dumps(chan['default'])}",
        )
    points = [
        [
            _number(f"{key}[{i}] mV", p[0], spec, False),
            _number(f"{key}[{i}] {chan['unit']}", p[1], chan, False),
        ]
        for i, p in enumerate(value)
    ]
    if points[0][0] == points[1][0]:
        raise ProvisionInputError(
            f"--set {key}: both points are at {points[0][0]} mV",
            hint="calibrate at two different buffer solutions",
        )
    return points


def check_app(kind: str, app: Mapping[str, Any]) -> dict[str, Any]:
    """``app`` (values typed, as JSON gives them) checked against ``kind``'s settings: the same
    rules the node applies at boot, with messages for the technician. Returns a copy."""
    specs = schema().settings.get(kind)
    if specs is None:
        raise ProvisionInputError(
            f"unknown node kind {kind!r}", hint=f"one of {', '.join(schema().settings)}"
        )
    out: dict[str, Any] = {}
    for key, value in app.items():
        spec = specs.get(key)
        if spec is None:
            raise _unknown(kind, key, list(specs))
        if spec["type"] == "pins":
            if not isinstance(value, Mapping):
                raise ProvisionInputError(
                    f"--set {key}: expected GPIO numbers by pin name", hint=describe(kind)
                )
            pins: dict[str, int] = {}
            for name, gpio in value.items():
                if name not in spec["names"]:
                    raise _unknown(
                        kind, f"{key}.{name}", [f"{key}.{n}" for n in spec["names"]], "pin"
                    )
                pins[name] = int(
                    _number(f"{key}.{name}", gpio, {"min": 0, "max": schema().pin_max}, True)
                )
            out[key] = pins
        elif spec["type"] == "two-point":
            if not isinstance(value, Mapping):
                raise ProvisionInputError(
                    f"--set {key}: expected an object by probe", hint=describe(kind)
                )
            cal = {}
            for chan, points in value.items():
                if chan not in spec["of"]:
                    raise _unknown(
                        kind, f"{key}.{chan}", [f"{key}.{c}" for c in spec["of"]], "probe"
                    )
                cal[chan] = _two_point(f"{key}.{chan}", points, spec, spec["of"][chan])
            out[key] = cal
        else:
            out[key] = _number(key, value, spec, spec["type"] == "int")
    for big, small in schema().larger.get(kind, ()):
        b = out.get(big, specs[big]["default"])
        s = out.get(small, specs[small]["default"])
        if b <= s:
            unit = specs[big].get("unit", "")
            raise ProvisionInputError(
                f"{big} ({b} {unit}) must be larger than {small} ({s} {unit})",
                hint=f"{big}: {specs[big]['help']}; {small}: {specs[small]['help']}",
            )
    return out


def apply_sets(kind: str, base: Mapping[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """``base`` (e.g. the target's pins) with each ``KEY=VALUE`` applied, then checked."""
    specs = schema().settings.get(kind)
    if specs is None:
        raise ProvisionInputError(
            f"unknown node kind {kind!r}", hint=f"one of {', '.join(schema().settings)}"
        )
    app: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for item in sets:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ProvisionInputError(
                f"--set {item!r}: expected KEY=VALUE", hint="e.g. --set empty_mm=1100"
            )
        top, dot, part = key.partition(".")
        spec = specs.get(top)
        if spec is None:
            raise _unknown(
                kind,
                key,
                list(specs)
                + [f"{k}.{n}" for k, s in specs.items() for n in s.get("names", s.get("of", ()))],
            )
        if spec["type"] in ("pins", "two-point"):
            if dot:
                sub = app.setdefault(top, {})
                if not isinstance(sub, dict):
                    sub = app[top] = {}
                sub[part] = raw
            else:
                value = _json(key, raw)
                if not isinstance(value, dict):
                    raise ProvisionInputError(
                        f"--set {key}: expected a JSON object", hint=describe(kind)
                    )
                app[top] = value
        elif dot:
            raise _unknown(kind, key, list(specs))
        else:
            app[top] = raw
    return check_app(kind, app)
