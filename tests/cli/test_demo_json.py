"""``cityedge demo --json``: JSON lines on stdout (the addresses once everything runs, the exit
at the end), the view on stderr."""

from __future__ import annotations

import json
import subprocess
import urllib.request

from tests.cli.run import CITYEDGE, ROOT


def test_demo_json_lines_name_addresses_that_answer() -> None:
    proc = subprocess.Popen(
        [CITYEDGE, "demo", "--json", "--duration-s", "6"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and ready["mqtt"].startswith("mqtt://127.0.0.1:")
        with urllib.request.urlopen(f"{ready['gateway']}/metrics", timeout=10) as reply:
            assert reply.status == 200 and b"cityedge_" in reply.read()
        rest, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in rest.splitlines()]
    assert lines == [{"event": "stopped", "exit": 0}]
    assert "stopped everything the demo started" in err
