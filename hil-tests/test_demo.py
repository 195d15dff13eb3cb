"""`cityedge demo` shows live readings and at least one alarm within a minute, what the ingest
stored, and leaves nothing running behind it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psutil


def _tagged(p: psutil.Process, tag: str) -> bool:
    try:
        return p.environ().get("CITYEDGE_TEST_TAG") == tag
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def test_demo_shows_readings_and_an_alarm_within_a_minute(tmp_path: Path) -> None:
    # other test runs share this machine: what the demo started carries our tag in its
    # environment (children inherit it), so only those count as left behind
    tag = str(uuid.uuid4())
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "demo", "--duration-s", "40", "--plain"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200", "CITYEDGE_TEST_TAG": tag},
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "broker:" in out
    assert "river-sonde-1: conductivity=" in out
    assert "air-station-1: co=" in out
    assert "ALARM RAISED" in out and "turbidity=240 NTU" in out
    assert "stopped everything the demo started" in out
    # the ingest's view: it stored what the gateway sent through its outbox
    ingest = [line for line in out.splitlines() if line.startswith("ingest stored:")]
    assert ingest, out[-2000:]
    assert "telemetry" in ingest[-1] and "alarm" in ingest[-1]
    assert "gw-demo-01 online (session 1)" in ingest[-1] or "gw-demo-01 offline" in ingest[-1]
    leftovers = [p for p in psutil.process_iter() if _tagged(p, tag)]
    assert not leftovers, leftovers
