"""The site files the demos write or run are valid site files (the vision demo's is checked
with stand-in videos: `cityedge simulate vision-demo` renders the real ones in a CPU minute)."""

from __future__ import annotations

import shutil
from pathlib import Path

from edge.config.site import load_site

DEMO = Path(__file__).resolve().parents[2] / "sim" / "demo"


def test_the_vision_demo_site_loads(tmp_path: Path) -> None:
    shutil.copy(DEMO / "waste-food.yaml", tmp_path / "site.yaml")
    for video in ("bin-day.avi", "factory.avi"):
        (tmp_path / video).write_bytes(b"")
    site = load_site(tmp_path / "site.yaml", env={})
    assert [s.model_dump()["type"] for s in site.config.sinks] == ["mqtt"]
    sink = load_site(tmp_path / "site.yaml", env={"MQTT_PORT": "1884"}).config.sinks[0]
    assert sink.model_dump()["port"] == 1884
