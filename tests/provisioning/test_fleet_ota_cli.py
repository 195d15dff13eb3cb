"""Fleet join (against the balena stand-in), OTA tooling, and the CLI's JSON, exit codes and hints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cityedge.cli import app
from edge.node_mqtt.config import MqttSourceConfig
from protocols import signed
from provisioning import fleet, ota
from provisioning.errors import ProvisionInputError, ProvisionRunError
from provisioning.site import Site
from tests.provisioning.balena_standin import TOKEN, BalenaStandIn

runner = CliRunner()


@pytest.fixture
def balena() -> Iterator[BalenaStandIn]:
    s = BalenaStandIn()
    yield s
    s.close()


def run(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_join_fleet_registers_the_device(balena: BalenaStandIn) -> None:
    joined = fleet.join_fleet("cityedge/riverside-gateways", TOKEN, balena.url)
    assert len(joined.uuid) == 62 and joined.api_key == "device-key"
    assert balena.registered == [
        {"user": 3, "application": 42, "uuid": joined.uuid, "device_type": "raspberrypi4-64"}
    ]
    assert ("POST", "/device/register") in balena.requests


def test_join_fleet_errors_say_what_to_do(balena: BalenaStandIn) -> None:
    with pytest.raises(ProvisionInputError, match="no balena fleet 'cityedge/nope'") as info:
        fleet.join_fleet("cityedge/nope", TOKEN, balena.url)
    assert "slug" in (info.value.hint or "")
    with pytest.raises(ProvisionRunError, match="refused the token") as run_info:
        fleet.join_fleet("cityedge/riverside-gateways", "stolen", balena.url)
    assert "Access tokens" in (run_info.value.hint or "")
    assert balena.registered == []


def test_bundle_round_trip_and_bad_names() -> None:
    files = {"cenode/a.mpy": b"\x00" * 10, "VERSION": b"1.2.3"}
    assert ota.unbundle(ota.bundle(files)) == files
    for bad in ("../x", "/abs", "a//b", "é"):
        with pytest.raises(ValueError, match="bundle file name"):
            ota.bundle({bad: b""})
    with pytest.raises(ValueError, match="ends inside"):
        ota.unbundle(ota.bundle(files)[:-3])
    chunks = list(ota.chunks(b"x" * 1200, 512))
    assert [len(c) for c in chunks] == [516, 516, 180] and chunks[2][:4] == (1024).to_bytes(
        4, "big"
    )


def test_signed_manifest_verifies_on_the_gateway_side(tmp_path: Path) -> None:
    site = Site.init(tmp_path / "s", "riverside", "127.0.0.1")
    upd = ota.build_update(
        "1.4.0", target_name="esp32", key=site.ota_key(), kid=site.ota_kid, expires_at=4_102_444_800
    )
    keys = {site.ota_kid: site.ota_key().public_key()}
    v = signed.verify(upd.manifest, purpose="ota", keys=keys, now=1_795_500_000, max_ttl_s=None)
    body = json.loads(v.body)
    assert body["version"] == "1.4.0" and body["size"] == len(upd.image)
    files = ota.unbundle(upd.image)
    assert (
        files["VERSION"] == b"1.4.0" and "cenode/node.mpy" in files and "bootsel.mpy" not in files
    )


def test_cli_init_list_gateway_and_errors(tmp_path: Path, balena: BalenaStandIn) -> None:
    d = str(tmp_path / "site")
    code, doc = run(
        "provision", "init-site", "-d", d, "--site", "riverside", "--broker-host", "10.0.0.2"
    )
    assert code == 0 and doc["ok"]
    code, doc = run(
        "provision", "init-site", "-d", d, "--site", "riverside", "--broker-host", "10.0.0.2"
    )
    assert code == 1 and doc["code"] == "CE500" and "already holds a site" in doc["error"]

    def node(name: str, kind: str, *extra: str) -> tuple[int, dict[str, Any]]:
        return run(
            "provision",
            "node",
            "-d",
            d,
            "--hwid",
            "aabbccddeeff",
            "--name",
            name,
            "--kind",
            kind,
            *extra,
        )

    code, doc = node("bin-1", "toaster")
    assert code == 1 and "unknown node kind" in doc["error"] and "bin-fill" in doc["hint"]
    code, doc = node("bad/name", "water")
    assert code == 1 and "topic level" in doc["error"]
    code, doc = node("w-1", "water", "--port", "/dev/ttyUSB0")
    assert code == 1 and "--firmware" in doc["hint"]
    code, doc = node("w-1", "water", "--set", "calibration")
    assert code == 1 and "KEY=VALUE" in doc["error"]

    code, doc = node("w-1", "water", "--set", "samples=7")
    assert code == 0 and doc["created"] and doc["flash_image"] is None
    config = json.loads((Path(doc["dir"]) / "config.json").read_text())
    assert config["app"]["samples"] == 7 and config["app"]["pins"] == {
        "ph": 34,
        "turbidity": 35,
        "temp": 32,
    }
    assert config["broker"] == {"host": "10.0.0.2", "port": 8883, "tls": True, "keepalive_s": 30}

    code, doc = run(
        "provision",
        "gateway",
        "-d",
        d,
        "--hwid",
        "aa:bb:cc:dd:ee:01",
        "--name",
        "gw-1",
        "--fleet",
        "cityedge/riverside-gateways",
        "--balena-token",
        TOKEN,
        "--balena-api",
        balena.url,
    )
    assert code == 0 and doc["balena"]["api_key"] == "***" and len(balena.registered) == 1
    block = doc["source_yaml"]
    import yaml

    source = MqttSourceConfig.model_validate(yaml.safe_load(block)[0])
    assert [(n.name, n.kind) for n in source.nodes] == [("w-1", "water")]
    assert "user riverside.gw-1" in (tmp_path / "site" / "broker" / "acl").read_text()

    code, doc = run("provision", "list", "-d", d)
    assert code == 0 and [(x["name"], x["role"]) for x in doc["devices"]] == [
        ("gw-1", "gateway"),
        ("w-1", "node"),
    ]
    code, doc = run("provision", "list", "-d", str(tmp_path / "nowhere"))
    assert code == 1 and "init-site" in doc["hint"]
