"""Site config: good files load; each mistake gives one message with file:line, path and a hint."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from edge.config.site import SiteConfig, load_site
from edge.errors import ConfigError
from edge.registry import PLUGINS
from protocols import signed

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
site: riverside
gateway: gw-1
sources:
  - type: modbus
    name: bus
    host: 127.0.0.1
    port: 5020
    devices:
      - name: sonde-1
        profile: water-sonde
        poll_interval_s: 1
      - name: meter-1
        unit_id: 2
        points:
          - {name: flow, address: 0, table: input, dtype: float32, unit: m3/h}
apps:
  - type: thresholds
    name: limits
    rules:
      - {device: sonde-1, point: ph, above: 9.0, hysteresis: 0.1, min_duration_s: 5}
sinks:
  - type: mqtt
    name: brain
    host: 127.0.0.1
    username: gw
    password: ${BROKER_PASSWORD}
"""
ENV = {"BROKER_PASSWORD": "s3cret-pw"}


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_site(write(tmp_path, text), env=ENV if env is None else env)
    return info.value.problems


def test_good_file_loads(tmp_path: Path) -> None:
    site = load_site(write(tmp_path, GOOD), env=ENV)
    assert site.config.site == "riverside"
    assert set(site.catalog.devices) == {"sonde-1", "meter-1"}
    assert "ph" in site.catalog.devices["sonde-1"]
    assert site.catalog.devices["meter-1"]["flow"].unit == "m3/h"


def test_secret_is_redacted_in_dumps_and_reprs(tmp_path: Path) -> None:
    site = load_site(write(tmp_path, GOOD), env=ENV)
    assert "s3cret-pw" not in site.config.model_dump_json()
    assert "s3cret-pw" not in repr(site.config)
    sink = site.config.sinks[0]
    assert sink.password.get_secret_value() == "s3cret-pw"  # type: ignore[attr-defined]


# (what, edit of GOOD (old, new), expected line, expected regex)
MISTAKES = [
    (
        "typo'd key",
        ("        poll_interval_s: 1\n", "        poll_intervl_s: 1\n"),
        11,
        r'sources\[0\]\.devices\[0\]\.poll_intervl_s: unknown key; did you mean "poll_interval_s"\?',
    ),
    (
        "typo'd required key is one problem",
        ("    host: 127.0.0.1\n    port: 5020", "    hots: 127.0.0.1\n    port: 5020"),
        6,
        r'sources\[0\]\.hots: unknown key; did you mean "host"\?',
    ),
    (
        "wrong type",
        ("    port: 5020", "    port: fifty"),
        7,
        r"sources\[0\]\.port: input should be a valid integer.*\(got \"fifty\"\)",
    ),
    (
        "missing required field",
        ("    name: brain\n    host: 127.0.0.1\n", "    name: brain\n"),
        22,
        r"sinks\[0\]\.host: required key is missing \(Broker host name or address\); add it",
    ),
    (
        "undefined ${ENV}",
        ("", ""),
        26,
        r"sinks\[0\]\.password: environment variable BROKER_PASSWORD is not set; export it, or give a default",
    ),
    (
        "bad enum with did you mean",
        ("dtype: float32", "dtype: flaot32"),
        15,
        r"dtype: expected one of bool, int16, uint16, int32, uint32, float32, int64, uint64, float64 "
        r'\(got "flaot32"\); did you mean "float32"\?',
    ),
    (
        "unknown plug-in type",
        ("  - type: thresholds", "  - type: threshold"),
        17,
        r"apps\[0\]: unknown type 'threshold'; expected one of [a-z_, ]*thresholds[a-z_, ]*; "
        r'did you mean "thresholds"\?',
    ),
    (
        "out of range",
        ("        poll_interval_s: 1\n", "        poll_interval_s: -1\n"),
        11,
        r"poll_interval_s: input should be greater than 0 \(got -1\)",
    ),
    (
        "rule names an unknown device",
        ("{device: sonde-1,", "{device: sonde-2,"),
        20,
        r'apps\[0\]\.rules\[0\]\.device: no source provides device .sonde-2.; did you mean "sonde-1"\?',
    ),
    (
        "rule names an unknown point",
        ("point: ph,", "point: pH,"),
        20,
        r'apps\[0\]\.rules\[0\]\.point: device .sonde-1. has no point .pH.; did you mean "ph"\?',
    ),
    (
        "unknown profile",
        ("profile: water-sonde", "profile: water-sond"),
        10,
        r'sources\[0\]\.devices\[0\]\.profile: no profile .water-sond.; did you mean "water-sonde"\?',
    ),
    (
        "duplicate key",
        ("    port: 5020\n", "    port: 5020\n    port: 5021\n"),
        8,
        r"sources\[0\]\.port: duplicate key 'port'; keep one",
    ),
    ("yaml syntax", ("site: riverside", "site: [riverside"), 2, r"YAML syntax error"),
    (
        "rtu bus without a serial line",
        ("    host: 127.0.0.1\n    port: 5020\n", "    transport: rtu\n"),
        4,
        r"sources\[0\]: .*transport rtu needs 'serial",
    ),
    (
        "two devices with one unit id",
        ("        unit_id: 2\n", "        unit_id: 1\n"),
        4,
        r"sources\[0\]: .*unit id 1 is used by two devices on this bus",
    ),
    (
        "rtu line with parity typo",
        (
            "    host: 127.0.0.1\n    port: 5020\n",
            "    transport: rtu\n    serial: {device: /dev/ttyUSB0, parity: X}\n",
        ),
        7,
        r"parity: expected one of N, E, O",
    ),
    (
        "rule with both limits",
        ("above: 9.0,", "above: 9.0, below: 6.0,"),
        20,
        r"apps\[0\]\.rules\[0\]: give exactly one of 'above' or 'below'",
    ),
    (
        "duplicate plug-in name",
        ("    name: limits", "    name: bus"),
        18,
        r"apps\[0\]\.name: name 'bus' is already used",
    ),
]


@pytest.mark.parametrize(
    ("edit", "line", "pattern"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_each_mistake_gives_one_located_message(
    tmp_path: Path, edit: tuple[str, str], line: int, pattern: str
) -> None:
    old, new = edit
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    env = {} if "BROKER" in pattern else ENV
    problems = problems_of(tmp_path, text, env)
    assert len(problems) == 1, problems
    message = problems[0]
    assert message.startswith(f"{tmp_path / 'site.yaml'}:{line}: "), message
    assert re.search(pattern, message), message


def test_default_for_env_reference(tmp_path: Path) -> None:
    text = GOOD.replace("${BROKER_PASSWORD}", "${BROKER_PASSWORD:-fallback}")
    site = load_site(write(tmp_path, text), env={})
    assert site.config.sinks[0].password.get_secret_value() == "fallback"  # type: ignore[attr-defined]


def test_secret_tag_reads_secrets_yaml(tmp_path: Path) -> None:
    write(tmp_path, "broker_password: from-secrets\n", "secrets.yaml")
    text = GOOD.replace("${BROKER_PASSWORD}", "!secret broker_password")
    site = load_site(write(tmp_path, text), env={})
    assert site.config.sinks[0].password.get_secret_value() == "from-secrets"  # type: ignore[attr-defined]


def test_missing_secret_is_located(tmp_path: Path) -> None:
    write(tmp_path, "other: x\n", "secrets.yaml")
    problems = problems_of(
        tmp_path, GOOD.replace("${BROKER_PASSWORD}", "!secret broker_password"), {}
    )
    assert len(problems) == 1
    assert re.search(
        r"site.yaml:26: sinks\[0\]\.password: secret 'broker_password' is not in", problems[0]
    )


def test_many_mistakes_are_all_listed(tmp_path: Path) -> None:
    text = GOOD.replace("port: 5020", "port: x").replace("poll_interval_s: 1", "poll_intervl_s: 1")
    problems = problems_of(tmp_path, text)
    assert len(problems) == 2


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1
    assert "site.yaml" in problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_site(tmp_path / "nope.yaml")


def _models() -> set[type[BaseModel]]:
    from edge.config.reference import all_models

    roots: list[type[BaseModel]] = [SiteConfig, *(p.config for p in PLUGINS)]
    return {m for root in roots for m in all_models(root)}


def test_every_field_has_a_description_and_extra_is_forbidden() -> None:
    for model in _models():
        assert model.model_config.get("extra") == "forbid", model
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "examples").glob("*.yaml")), ROOT / "sim/demo/site.yaml"],
    ids=lambda p: p.name,
)
def test_shipped_configs_are_valid(path: Path) -> None:
    env = {
        "CITY_BRAIN_USER": "gw",
        "CITY_BRAIN_PASSWORD": "pw",
        "CITY_BRAIN_COMMAND_KEY": signed.b64url(
            signed.public_key_raw(Ed25519PrivateKey.generate())
        ),
        "BUREAU_PW": "k3v9q1",
        "GATE_SECRET": secrets.token_hex(16),
        "GATE_ADMIN_TOKEN": secrets.token_hex(16),
        "GATE_SCREEN_TOKEN": secrets.token_hex(16),
        "GATE_PASS_KEY": signed.b64url(signed.public_key_raw(Ed25519PrivateKey.generate())),
    }
    site = load_site(path, env=env)
    assert site.config.sources


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cityedge.cli import app

    good = write(tmp_path, GOOD.replace("${BROKER_PASSWORD}", "pw"))
    runner = CliRunner()
    ok = runner.invoke(app, ["check-config", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "ok" in ok.output
    bad = write(tmp_path, GOOD.replace("dtype: float32", "dtype: flaot32"), "bad.yaml")
    res = runner.invoke(app, ["check-config", str(bad)])
    assert res.exit_code == 1
    res_json = runner.invoke(app, ["check-config", "--json", str(bad)])
    assert res_json.exit_code == 1
    assert json.loads(res_json.output)["problems"][0].startswith(str(bad))


def test_configuration_reference_is_current() -> None:
    from edge.config.reference import render

    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render(), "run 'cityedge config-reference --write' and commit the result"
