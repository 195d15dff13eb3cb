"""The gateway image's install steps (scripts/install-gateway.sh, which the Dockerfile runs)
produce a working `cityedge` that runs the gateway, and carry no simulator, scene, local-site,
live-view, demo or city-brain code — checked here because no Docker engine runs in CI."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hil import http_text

from protocols import signed
from sim.localsite import free_port, start, wait_port

ROOT = Path(__file__).resolve().parents[1]


def test_install_script_gives_a_working_gateway(tmp_path: Path) -> None:
    prefix = tmp_path / "opt-cityedge"
    env = {**os.environ, "CITYEDGE_CREATE_USER": "0"}
    subprocess.run(
        [str(ROOT / "scripts/install-gateway.sh"), str(prefix), str(ROOT)],
        check=True,
        env=env,
        timeout=600,
        capture_output=True,
    )
    check = subprocess.run(
        [str(prefix / "bin/cityedge"), "check-config", str(ROOT / "examples/river-station.yaml")],
        env={
            **env,
            "CITY_BRAIN_USER": "gw",
            "CITY_BRAIN_PASSWORD": "pw",
            # the example has no fallback key (a weak one would let anyone forge commands)
            "CITY_BRAIN_COMMAND_KEY": signed.b64url(
                signed.public_key_raw(Ed25519PrivateKey.generate())
            ),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert "ok" in check.stdout
    # every gateway plug-in the image is meant to run can be loaded from it (no missing extra)
    load = subprocess.run(
        [
            str(prefix / "bin/python"),
            "-c",
            "from edge.registry import PLUGINS, load\n"
            "wanted = {'modbus', 'coap', 'camera', 'face_access', 'thresholds', 'environment', 'mqtt'}\n"
            "for p in PLUGINS:\n"
            "    if p.type in wanted: load(p)\n",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert load.returncode == 0, load.stderr
    # the image runs the gateway only: dev tools stay out of it
    assert not (prefix / "bin/pytest").exists()
    _has_no_stand_ins(prefix)
    _runs_the_gateway(prefix, tmp_path)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "scripts/install-gateway.sh" in dockerfile and "USER cityedge" in dockerfile
    assert "HEALTHCHECK" in dockerfile


# what stands in for the world, or is the city brain's: none of it in a gateway's install
STAND_INS = ("scene", "simulat", "synth", "localsite", "liveview", "demo", "junction/sumo")


def _has_no_stand_ins(prefix: Path) -> None:
    (site,) = prefix.glob("lib/python3*/site-packages")
    ours = [
        site / room for room in ("cityedge", "protocols", "edge", "cloud_bridge", "provisioning")
    ]
    assert all(room.is_dir() for room in ours), [r for r in ours if not r.is_dir()]
    assert not (site / "sim").exists()
    assert not (site / "cloud_bridge" / "citybrain").exists()
    files = [
        p.relative_to(site).as_posix() for room in ours for p in room.rglob("*") if p.is_file()
    ]
    assert [f for f in files if any(word in f for word in STAND_INS)] == []
    # and the install's Python cannot find them either
    probe = subprocess.run(
        [
            str(prefix / "bin/python"),
            "-c",
            "import importlib.util as u, json\n"
            "print(json.dumps([m for m in ('sim', 'cloud_bridge.citybrain') if u.find_spec(m)]))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=prefix,  # not the checkout, whose folders would be found first
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == []
    # their commands say so in one line, exit 3, and name the code
    for argv in (["demo", "--duration-s", "1"], ["simulate", "water-sonde"], ["ingest"]):
        left_out = subprocess.run(
            [str(prefix / "bin/cityedge"), *argv], capture_output=True, text=True, timeout=60
        )
        assert left_out.returncode == 3, (argv, left_out.stderr)
        first, hint = left_out.stderr.splitlines()
        assert first.startswith("CE101: ") and "not part of this install" in first, first
        assert hint.startswith("  hint: ")


def _runs_the_gateway(prefix: Path, tmp_path: Path) -> None:
    """The installed gateway runs a site (a Modbus source whose device is away), answers on its
    HTTP endpoint, and stops cleanly on SIGTERM."""
    http_port, modbus_port = free_port(), free_port()
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: image-test\n"
        "gateway: gw-1\n"
        f"http: {{host: 127.0.0.1, port: {http_port}}}\n"
        "sources:\n"
        f"  - {{type: modbus, name: bus, host: 127.0.0.1, port: {modbus_port}, timeout_s: 0.5,\n"
        "     devices: [{name: sonde, unit_id: 1, profile: water-sonde, poll_interval_s: 1}]}\n",
        encoding="utf-8",
    )
    argv = [str(prefix / "bin/cityedge"), "run", "--config", str(site)]
    gateway = start("installed-gateway", argv, tmp_path, env={"PYTHONPATH": ""})
    try:
        wait_port(http_port, proc=gateway, timeout_s=30)
        deadline = time.monotonic() + 20
        status, body = http_text(f"http://127.0.0.1:{http_port}/healthz")
        while "bus" not in body and time.monotonic() < deadline:
            time.sleep(0.2)
            status, body = http_text(f"http://127.0.0.1:{http_port}/healthz")
        assert status == 200 and "bus" in json.loads(body)["plugins"], (status, body)
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log_path.read_text(errors="replace")
