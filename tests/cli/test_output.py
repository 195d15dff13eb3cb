"""The shared conventions of every command: ``-h`` and ``--version`` everywhere, output never
hard-wrapped when piped (whatever COLUMNS says), ISO 8601 UTC times in JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cityedge.cli import app
from cityedge.console import version
from edge.vision.manifest import ModelStore
from provisioning.site import Site
from tests.cli.run import run_all

runner = CliRunner()


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_and_version_on_every_command() -> None:
    import typer

    paths = list(_commands(typer.main.get_command(app)))
    assert (
        len(paths) > 35 and ("faces", "audit-verify") in paths and ("simulate", "junction") in paths
    )
    for path in paths:
        short = runner.invoke(app, [*path, "-h"])
        assert short.exit_code == 0 and "Usage:" in short.stdout, (path, short.output)
        long = runner.invoke(app, [*path, "--help"])
        assert long.stdout == short.stdout, path
        shown = runner.invoke(app, [*path, "--version"])
        assert shown.exit_code == 0 and shown.stdout == f"cityedge {version()}\n", (
            path,
            shown.output,
        )


LONG_SITE = """\
site: riverside
gateway: gw-1
sources:
  - type: modbus
    name: bus
    hots: 127.0.0.1
    port: 5020
    devices:
      - {name: sonde-with-a-rather-long-name-for-a-device-that-makes-lines-long, profile: water-sonde}
apps:
  - type: thresholds
    name: limits
    rules:
      - {device: sonde-with-a-rather-long-name-for-a-device-that-makes-lines-long, point: phh, abvoe: 9}
"""


@pytest.mark.parametrize("columns", [None, "20", "200"])
def test_piped_output_is_never_hard_wrapped(tmp_path: Path, columns: str | None) -> None:
    deep = tmp_path / ("a-folder-with-a-long-name-" * 4).rstrip("-") / "broker"
    site = tmp_path / "site.yaml"
    site.write_text(LONG_SITE, encoding="utf-8")
    env = {"COLUMNS": columns} if columns else None
    check, broker, listing = run_all(
        [
            (["cityedge", "check-config", str(site)], tmp_path, env),
            (["cityedge", "broker-config", "--site", "s", "--gateway", "gw-1", "--out", str(deep)], tmp_path, env),
            (["cityedge", "errors"], tmp_path, env),
        ]
    )  # fmt: skip
    # check-config: one line per problem, each starting with its file:line
    problems = check.stderr.splitlines()
    assert check.returncode == 1 and len(problems) == 3, check.stderr
    assert all(p.startswith(f"CE100: {site}:") for p in problems[:2]), problems
    assert any(p.endswith('did you mean "above"?') for p in problems[:2]), problems
    # a command printed to be copied stays whole on its line
    first = broker.stdout.splitlines()[0]
    assert broker.returncode == 0 and first.endswith(f"run: mosquitto -c {deep}/mosquitto.conf")
    # the code list: a code line, then its hint line, nothing in between
    lines = listing.stdout.splitlines()
    assert len(lines) % 2 == 0 and len(lines) > 60
    assert all(
        a.startswith("CE") and b.startswith("  hint: ")
        for a, b in zip(lines[::2], lines[1::2], strict=True)
    )


def _iso_utc(text: object) -> datetime:
    assert isinstance(text, str), text
    when = datetime.fromisoformat(text)
    assert when.utcoffset() == timedelta(0), text
    return when


def test_json_times_are_iso_8601_utc(tmp_path: Path, model_store: ModelStore) -> None:
    from tests.edge.face_access.test_cli import site as face_site

    cfg = face_site(tmp_path)
    photo = str(model_store.asset("obama.jpg"))
    done = runner.invoke(
        app,
        ["faces", "enroll", photo, "--id", "p-1", "--name", "O", "--consent-ref", "f-1", "-c", str(cfg), "--keep-image-days", "2", "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    kept = _iso_utc(json.loads(done.stdout)["image_kept_until"])
    listed = runner.invoke(app, ["faces", "list", "-c", str(cfg), "--json"])
    (person,) = json.loads(listed.stdout)["people"]
    enrolled = _iso_utc(person["enrolled_at"])
    assert _iso_utc(person["image_expires_at"]) == kept and kept - enrolled > timedelta(days=1)
    assert _iso_utc(person["consent"]["at"]) == enrolled

    for argv, key in (
        (["faces", "delete", "p-1", "-c", str(cfg), "--json"], "erased"),
        (["faces", "reenroll", "-c", str(cfg), "--json"], "reenrolled"),
        (["faces", "audit-verify", "-c", str(cfg), "--json"], "entries"),
    ):
        res = runner.invoke(app, argv)
        assert res.exit_code == 0 and key in json.loads(res.stdout), (argv, res.output)

    Site.init(tmp_path / "prov", "riverside", "127.0.0.1")
    prov = str(tmp_path / "prov")
    runner.invoke(
        app, ["provision", "gateway", "-d", prov, "--hwid", "0a0b0c0d0e0f", "--name", "g"]
    )
    inventory = runner.invoke(app, ["provision", "list", "-d", prov, "--json"])
    (device,) = json.loads(inventory.stdout)["devices"]
    _iso_utc(device["last_provisioned"])


def test_reports_have_json(tmp_path: Path) -> None:
    for argv, key in (
        (["profiles", "--json"], "profiles"),
        (["schema", "--check", "--json"], "files"),
        (["errors", "--json"], "codes"),
        (["command-key", "--out", str(tmp_path / "k.pem"), "--json"], "public_key"),
        (
            ["broker-config", "--site", "s", "--gateway", "g", "--out", str(tmp_path), "--json"],
            "conf",
        ),
    ):
        res = runner.invoke(app, argv)
        assert res.exit_code == 0, (argv, res.output)
        doc = json.loads(res.stdout)
        assert doc["ok"] is True and key in doc, argv
    profiles = json.loads(runner.invoke(app, ["profiles", "--json"]).stdout)["profiles"]
    sonde = next(p for p in profiles if p["name"] == "water-sonde")
    assert "ph" in sonde["points"] and sonde["description"]
