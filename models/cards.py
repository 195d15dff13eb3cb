"""The measured part of each model card, written from the committed measurement.

A card (``models/cards/<model>.md``) is prose written by hand around one generated block: the
file the numbers were measured on, and every metric of ``models/metrics/<model>.json`` with the
tolerance the manifest gives it. ``python -m models.cards`` rewrites the blocks (``make retrain
RETRAIN_ARGS=--replace`` does it for the models it replaces); ``--record NAME`` first takes the
build's own measurement of a model whose built file is the pinned one (after a change to an
evaluation in :mod:`models.evaluate`, say). ``tests/models/test_cards.py`` keeps both true.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from edge.vision.manifest import Manifest, ModelEntry
from models.build import (
    HERE,
    METRICS,
    describe_tolerance,
    load_manifest,
    measured,
    read_metrics,
    write_metrics,
)

BEGIN = "<!-- measured: written by python -m models.cards from models/metrics/{name}.json -->"
END = "<!-- end of measured -->"
PREFIXES = ("test", "heldout", "real", "generated", "clip")


def card_path(entry: ModelEntry, models_dir: Path = HERE) -> Path:
    return models_dir / entry.card


def order(metric: str) -> tuple[int, str]:
    prefix = metric.split(".", 1)[0]
    return (PREFIXES.index(prefix) if prefix in PREFIXES else len(PREFIXES), metric)


def render(entry: ModelEntry, sha256: str, metrics: dict[str, float]) -> str:
    """The generated block of ``entry``'s card (without a trailing newline)."""
    where = f"`models/trained/{entry.file}`" if entry.train is not None else f"`{entry.file}`"
    lines = [
        BEGIN.format(name=entry.name),
        f"Measured on {where} version {entry.version}, sha256 `{sha256}`.",
        "A metric with a tolerance must stay within it when the model is retrained or measured",
        "on another machine (`tests/models/test_cards.py`).",
        "",
        "| metric | value | tolerance |",
        "|---|---|---|",
    ]
    for key in sorted(metrics, key=order):
        tol = entry.tolerance.get(key)
        shown = "" if tol is None else describe_tolerance(tol)
        lines.append(f"| {key} | {metrics[key]:g} | {shown} |")
    lines.append(END)
    return "\n".join(lines)


def block(text: str, name: str) -> tuple[int, int] | None:
    """Where the generated block of ``name`` lies in a card's text (start, end), if it does."""
    m = re.search(re.escape(BEGIN.format(name=name)) + r".*?" + re.escape(END), text, re.S)
    return (m.start(), m.end()) if m else None


def update(entry: ModelEntry, models_dir: Path = HERE) -> bool:
    """Rewrite the card's block from the committed measurement; True if the card changed."""
    sha, metrics = read_metrics(models_dir / "metrics" / f"{entry.name}.json")
    path = card_path(entry, models_dir)
    text = path.read_text(encoding="utf-8")
    where = block(text, entry.name)
    if where is None:
        raise ValueError(f"{path} has no block '{BEGIN.format(name=entry.name)}' ... '{END}'")
    new = text[: where[0]] + render(entry, sha, metrics) + text[where[1] :]
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def record(manifest: Manifest, name: str, build: Path) -> None:
    """Commit the build's measurement of ``name`` (its built file must be the pinned one)."""
    entry = manifest.model(name)
    sha, metrics = read_metrics(build / "metrics" / f"{name}.json")
    if sha != entry.sha256:
        raise ValueError(f"{build}/metrics/{name}.json measured {sha[:12]}, not the pinned file")
    write_metrics(METRICS / f"{name}.json", sha, metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.cards", description="rewrite the measured block of the cards"
    )
    parser.add_argument(
        "--record",
        metavar="NAME",
        action="append",
        default=[],
        help="first commit the build's measurement of this model (models/build/metrics/)",
    )
    parser.add_argument("--build", type=Path, default=HERE / "build", help="built models folder")
    args = parser.parse_args(argv)
    manifest = load_manifest()
    try:
        for name in args.record:
            record(manifest, name, args.build)
        for entry in manifest.models:
            if measured(entry) and update(entry):
                print(f"updated {card_path(entry)}")
    except (ValueError, OSError) as err:
        print(f"python -m models.cards: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
