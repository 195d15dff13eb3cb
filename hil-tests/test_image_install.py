"""The gateway image's install steps (scripts/install-gateway.sh, which the Dockerfile runs)
produce a working `cityedge` — checked here because no Docker engine runs in CI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import signed

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
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "scripts/install-gateway.sh" in dockerfile and "USER cityedge" in dockerfile
    assert "HEALTHCHECK" in dockerfile
