"""The gateway image's install steps (scripts/install-gateway.sh, which the Dockerfile runs)
produce a working `cityedge` — checked here because no Docker engine runs in CI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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
        env={**env, "CITY_BRAIN_USER": "gw", "CITY_BRAIN_PASSWORD": "pw"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert "ok" in check.stdout
    # the image runs the gateway only: dev tools stay out of it
    assert not (prefix / "bin/pytest").exists()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "scripts/install-gateway.sh" in dockerfile and "USER cityedge" in dockerfile
    assert "HEALTHCHECK" in dockerfile
