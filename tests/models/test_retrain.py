"""`make retrain`: trains into its own folder, says what changed, and `--replace` keeps the
committed file, its measurement, the manifest and the card consistent.

The bin-fill recipe runs at a size that trains in about a second (its metrics are then far
outside the tolerance, which is what the verdict must say)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from edge.vision.manifest import ModelStore, sha256_file
from models import cards
from models.build import HERE, Builder, BuildError, load_manifest, read_metrics
from models.retrain import Retrained, assemble, describe, pin, replace, retrain

BUILD = HERE / "build"


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.train import recipes

    small = dataclasses.replace(  # and without the day's measurement (20 s of scene)
        recipes.RECIPES["bin-fill"],
        train_n=64,
        test_n=32,
        heldout_n=32,
        epochs=1,
        blocks=(4, 8),
        more=(),
    )
    monkeypatch.setitem(recipes.RECIPES, "bin-fill", small)


def tiny_retrain(out: Path) -> Retrained:
    manifest = load_manifest()
    return retrain(manifest.model("bin-fill"), out, ModelStore.of(manifest, BUILD), lambda _: None)


@pytest.mark.usefixtures("tiny")
def test_retraining_is_reproducible_and_says_what_changed(tmp_path: Path) -> None:
    a, b = tiny_retrain(tmp_path / "a"), tiny_retrain(tmp_path / "b")
    assert a.sha256 == b.sha256 == sha256_file(tmp_path / "a" / "onnx" / "bin-fill.onnx")
    assert (tmp_path / "a" / "onnx" / "bin-fill.onnx").read_bytes() == (
        tmp_path / "b" / "onnx" / "bin-fill.onnx"
    ).read_bytes(), "same seed, same bytes"
    entry = load_manifest().model("bin-fill")
    assert not a.same_file and not a.within
    assert [d.metric for d in a.drift] == sorted(entry.tolerance)
    sha, measured = read_metrics(tmp_path / "a" / "metrics" / "bin-fill.json")
    assert sha == a.sha256 and measured == a.metrics
    text = "\n".join(describe(a))
    assert f"sha256 {entry.sha256} (committed)" in text
    assert f"-> {a.sha256} (a different file)" in text
    assert "verdict: OUTSIDE the tolerance" in text and "heldout.fill_mae" in text


@pytest.mark.usefixtures("tiny")
def test_the_retrained_folder_is_a_complete_models_folder(tmp_path: Path) -> None:
    r = tiny_retrain(tmp_path)
    assemble(load_manifest(), BUILD, tmp_path, [r])
    store = ModelStore(tmp_path)
    assert (
        sha256_file(store.path("bin-fill")) == r.sha256 != load_manifest().model("bin-fill").sha256
    )
    for name in ("hair-cover", "mtcnn-pnet", "face-mask"):
        assert store.path(name).is_file()  # checked against its sha256
    assert store.asset("obama.jpg").is_file()


@pytest.mark.usefixtures("tiny")
def test_replace_keeps_file_measurement_manifest_and_card_consistent(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for sub in ("trained", "metrics", "cards"):
        shutil.copytree(HERE / sub, models / sub)
    shutil.copy(HERE / "manifest.yaml", models / "manifest.yaml")
    r = tiny_retrain(tmp_path / "out")
    bumped = str(int(load_manifest().model("bin-fill").version) + 1)
    assert replace(r, tmp_path / "out", models) == bumped
    before = (HERE / "manifest.yaml").read_text().splitlines()
    after = (models / "manifest.yaml").read_text().splitlines()
    changed = [(x, y) for x, y in zip(before, after, strict=True) if x != y]
    assert [y.strip() for _, y in changed] == [f'version: "{bumped}"', f"sha256: {r.sha256}"]
    manifest = load_manifest(models / "manifest.yaml")
    entry = manifest.model("bin-fill")
    assert (entry.version, entry.sha256) == (bumped, r.sha256)
    assert sha256_file(models / "trained" / "bin-fill.onnx") == r.sha256
    assert read_metrics(models / "metrics" / "bin-fill.json") == (r.sha256, r.metrics)
    card = (models / entry.card).read_text()
    assert cards.render(entry, r.sha256, r.metrics) in card
    # and `make models` now copies the new file
    lines: list[str] = []
    only = manifest.model_copy(update={"models": [entry], "assets": []})
    builder = Builder(only, tmp_path / "b", lines.append, measure=False, trained=models / "trained")
    builder.run()
    builder.close()
    assert any("copied (committed)" in line for line in lines)


def test_pin_changes_only_the_named_entry() -> None:
    text = (HERE / "manifest.yaml").read_text()
    out = pin(text, "hair-cover", "a" * 64, "7")
    assert load_manifest().model("bin-fill").sha256 in out
    assert out.count("a" * 64) == 1 and 'version: "7"' in out
    with pytest.raises(BuildError, match="no '- name: nope' entry"):
        pin(text, "nope", "a" * 64, "2")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nope"], "no trained model nope (known: bin-fill, hair-cover)"),
        (["--seed-offset", "1000", "--replace"], "--seed-offset is to measure the spread"),
        (["--build", "{tmp}", "--model", "bin-fill"], "make retrain: model mtcnn-pnet:"),
    ],
)
def test_wrong_use_is_one_line_and_exit_1(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.retrain import main

    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
