"""App ``traffic_signal``: :mod:`.config`, :mod:`.app`; the safety guard, the controllers, the
independent monitor, and the shipped junction timing sheets (``edge/traffic_signal/junctions/<name>.yaml``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from edge.config.problems import load_model
from protocols.junction import JunctionSpec

JUNCTIONS_DIR = Path(__file__).parent / "junctions"


def junction_names() -> list[str]:
    return sorted(p.stem for p in JUNCTIONS_DIR.glob("*.yaml"))


def load_junction(name: str) -> JunctionSpec:
    """A shipped timing sheet by name; ``KeyError`` if absent, ``ValueError`` with problems."""
    path = JUNCTIONS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(name)
    return load_junction_file(path)


@cache
def load_junction_file(path: Path) -> JunctionSpec:
    """A timing sheet from a YAML file; ``ValueError`` lists its problems with file:line."""
    return load_model(path, JunctionSpec)
