"""`cityedge demo` shows live readings and at least one alarm within a minute, what the ingest
stored, and leaves nothing behind it: no process, no temp folder (see test_demo_terminal.py for
the live view on a real terminal)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from hil import tagged_processes


def test_demo_shows_readings_and_an_alarm_within_a_minute(tmp_path: Path) -> None:
    # other test runs share this machine: what the demo started carries our tag in its
    # environment (children inherit it), so only those count as left behind
    tag = str(uuid.uuid4())
    result = subprocess.run(
        [sys.executable, "-m", "cityedge", "demo", "--duration-s", "40", "--plain"],
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
    assert "ALARM RAISED" in out and "turbidity=240.0 NTU" in out
    assert "stopped everything the demo started" in out
    # a clean run removes its work folder, and says which
    removed = [line for line in out.splitlines() if line.startswith("removed the demo's work")]
    assert removed, out[-2000:]
    assert not Path(removed[0].rsplit(" ", 1)[1]).exists()
    # the ingest's view: it stored what the gateway sent through its outbox
    ingest = [line for line in out.splitlines() if line.startswith("ingest stored:")]
    assert ingest, out[-2000:]
    assert "telemetry" in ingest[-1] and "alarm" in ingest[-1]
    assert "gw-demo-01 online (session 1)" in ingest[-1] or "gw-demo-01 offline" in ingest[-1]
    leftovers = tagged_processes(tag)
    assert not leftovers, leftovers
