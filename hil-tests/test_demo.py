"""`cityedge demo` shows live readings and at least one alarm within a minute, and leaves
nothing running behind it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil


def test_demo_shows_readings_and_an_alarm_within_a_minute(tmp_path: Path) -> None:
    before = {p.pid for p in psutil.process_iter()}
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "demo", "--duration", "40", "--plain"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "broker:" in out
    assert "river-sonde-1: conductivity=" in out
    assert "air-station-1: co=" in out
    assert "ALARM RAISED" in out and "turbidity=240 NTU" in out
    assert "stopped everything the demo started" in out
    # only the demo's own programs count (they run in its work folder): other test runs on a
    # shared machine start gateways and brokers of their own meanwhile
    work = re.search(r"logs in (\S+)", out)
    assert work, out
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline", "cwd"])
        if p.pid not in before
        and p.info["cwd"] == work.group(1)
        and any("edge.cli" in part or "mosquitto" in part for part in (p.info["cmdline"] or []))
    ]
    assert not leftovers, leftovers
