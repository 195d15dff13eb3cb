"""Model cards quote the committed measurement, and the models in use measure within its
tolerances.

Every measured model has ``models/metrics/<model>.json`` (committed: the sha256 of the file it
measured and its metrics); its card's measured block is written from it, with the tolerance the
manifest gives each metric. The build measures the files it built (``<models folder>/metrics``)
on this machine: each metric with a tolerance must be within it of the committed value. With
``MODELS_DIR`` pointing at a retrained folder, the same test says whether those files are within
the cards' tolerances."""

from __future__ import annotations

import pytest

from edge.vision.manifest import ModelStore, OneSided
from models import cards
from models.build import HERE, METRICS, compare, load_manifest, measured, read_metrics

MEASURED = [m.name for m in load_manifest().models if measured(m)]


def test_every_measured_model_has_a_committed_measurement() -> None:
    assert set(MEASURED) == {"bin-fill", "hair-cover", "face-mask", "centernet-person"}
    assert {p.stem for p in METRICS.glob("*.json")} == set(MEASURED)


@pytest.mark.parametrize("name", MEASURED)
def test_card_quotes_the_committed_measurement(name: str) -> None:
    entry = load_manifest().model(name)
    sha, metrics = read_metrics(METRICS / f"{name}.json")
    assert sha == entry.sha256, "the committed measurement is of another file"
    assert set(entry.tolerance) <= set(metrics), "a tolerance for a metric never measured"
    text = (HERE / entry.card).read_text(encoding="utf-8")
    where = cards.block(text, name)
    assert where is not None, f"{entry.card} has no measured block"
    assert text[where[0] : where[1]] == cards.render(entry, sha, metrics), (
        f"{entry.card} differs from models/metrics/{name}.json: run 'python -m models.cards'"
    )


@pytest.mark.parametrize("name", MEASURED)
def test_models_in_use_measure_within_the_cards_tolerance(
    name: str, model_store: ModelStore
) -> None:
    entry = model_store.entry(name)  # the file in use (a retrained folder names its own)
    path = model_store.directory / "metrics" / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run 'make models'")
    sha, built = read_metrics(path)
    assert sha == entry.sha256, f"{path} measured another file than the one in use"
    _sha, committed = read_metrics(METRICS / f"{name}.json")
    assert set(built) == set(committed), "the build measures other metrics than the card quotes"
    tolerance = load_manifest().model(name).tolerance
    outside = [d.line() for d in compare(committed, built, tolerance) if not d.within]
    assert not outside, f"{name} measured outside its card's tolerance: {outside}"


def test_the_tolerance_check_can_fail() -> None:
    (drift,) = compare(
        {"heldout.accuracy": 0.70}, {"heldout.accuracy": 0.67}, {"heldout.accuracy": 0.02}
    )
    assert not drift.within and "OUTSIDE" in drift.line()
    (drift,) = compare(
        {"heldout.accuracy": 0.70}, {"heldout.accuracy": 0.68}, {"heldout.accuracy": 0.02}
    )
    assert drift.within, "exactly the tolerance is within"
    (drift,) = compare({"real.faces": 4.0}, {}, {"real.faces": 0.0})
    assert not drift.within, "a metric no longer measured is outside"
    low = OneSided(below=0.1)  # may fall by 0.1, rise by any
    assert [d.within for d in compare({"m": 0.7}, {"m": 0.59}, {"m": low})] == [False]
    assert [d.within for d in compare({"m": 0.7}, {"m": 0.6}, {"m": low})] == [True]
    assert [d.within for d in compare({"m": 0.7}, {"m": 0.99}, {"m": low})] == [True]
