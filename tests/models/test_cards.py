"""Model cards quote the metrics the build measured: every ``| key | value |`` row of a card
whose key is a measured metric must equal ``models/build/metrics/<model>.json``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from models.build import load_manifest

ROOT = Path(__file__).resolve().parents[2] / "models"
ROW = re.compile(r"^\| ((?:test|heldout|real|generated|clip)\.[a-z_0-9]+) \| ([0-9.]+) \|$")
MEASURED = ["bin-fill", "hair-cover", "face-mask", "centernet-person"]


@pytest.mark.parametrize("name", MEASURED)
def test_card_numbers_are_the_built_metrics(name: str) -> None:
    entry = load_manifest().model(name)
    path = ROOT / "build" / "metrics" / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run 'make models'")
    built = json.loads(path.read_text())
    assert built["sha256"] == entry.sha256, "metrics of another build"
    quoted = {
        m.group(1): float(m.group(2))
        for line in (ROOT / entry.card).read_text().splitlines()
        if (m := ROW.match(line))
    }
    assert quoted, f"{entry.card} quotes no metric"
    assert quoted == {k: v for k, v in built["metrics"].items() if k in quoted}
    assert set(built["metrics"]) == set(quoted), "the card leaves measured metrics out"
    if entry.train is not None:  # the manifest's pinned held-out metrics are the built ones too
        assert {k: built["metrics"][k] for k in entry.train.heldout} == entry.train.heldout
