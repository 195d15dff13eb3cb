"""The model manifest: schema errors name the field, references are checked, and the store
hands out a model only when its checksum matches."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edge.vision.manifest import MANIFEST_JSON, ModelError, ModelStore, parse_manifest, sha256_file
from models.build import HERE, load_manifest


def manifest_data() -> dict[str, Any]:
    data: dict[str, Any] = load_manifest().model_dump(mode="json")
    return data


def test_shipped_manifest_is_valid_and_complete() -> None:
    m = load_manifest()
    assert {e.name for e in m.models} >= {
        "mtcnn-pnet",
        "mtcnn-rnet",
        "mtcnn-onet",
        "dlib-resnet-embedding",
        "face-antispoofing",
    }
    for entry in m.models:
        assert entry.license and entry.card and entry.input.name
        assert (HERE / entry.card).is_file(), f"{entry.name}: card {entry.card} missing"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["models"][0].update(sha256="abc"), r"models\.0\.sha256: String should match"),
        (lambda d: d["models"][0].pop("license"), r"models\.0\.license: Field required"),
        (lambda d: d["models"][0].update(convert="magic"), r"models\.0\.convert: Input should be"),
        (lambda d: d["models"][0]["sources"][0].update(package="nope"), r"unknown package 'nope'"),
        (
            lambda d: d["models"][1].update(name=d["models"][0]["name"]),
            r"model name 'mtcnn-pnet' is used twice",
        ),
        (lambda d: d.update(extra_key=1), r"extra_key: Extra inputs are not permitted"),
        (lambda d: d["models"][0]["input"].update(layout="HWC"), r"input\.layout: Input should be"),
    ],
)
def test_bad_manifests_are_refused_with_the_field_named(change: Any, expected: str) -> None:
    data = copy.deepcopy(manifest_data())
    change(data)
    with pytest.raises(ModelError, match=expected):
        parse_manifest(data, "manifest.yaml")


def test_built_models_match_their_pinned_checksums(model_store: ModelStore) -> None:
    """What `make models` produced is what the manifest pins (the store checks every file)."""
    for entry in model_store.manifest.models:
        assert sha256_file(model_store.path(entry.name)) == entry.sha256
    for asset in model_store.manifest.assets:
        assert model_store.asset(asset.file).is_file()


def test_a_changed_model_file_is_refused(model_store: ModelStore, tmp_path: Path) -> None:
    copy_dir = tmp_path / "models"
    (copy_dir / "onnx").mkdir(parents=True)
    shutil.copy(model_store.directory / MANIFEST_JSON, copy_dir / MANIFEST_JSON)
    src = model_store.path("mtcnn-pnet")
    data = bytearray(src.read_bytes())
    data[-1] ^= 0x01
    (copy_dir / "onnx" / src.name).write_bytes(bytes(data))
    store = ModelStore(copy_dir)
    with pytest.raises(
        ModelError, match=r"model mtcnn-pnet: .* has sha256 .* the manifest says"
    ) as info:
        store.path("mtcnn-pnet")
    assert "make models" in (info.value.hint or "")
    with pytest.raises(ModelError, match="is missing"):
        store.path("mtcnn-rnet")
    with pytest.raises(ModelError, match="no model 'yolo'"):
        store.path("yolo")


def test_a_folder_without_a_build_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no built models") as info:
        ModelStore(tmp_path)
    assert "make models" in (info.value.hint or "")
    (tmp_path / MANIFEST_JSON).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelStore(tmp_path)
    (tmp_path / MANIFEST_JSON).write_text(json.dumps({"schema_version": 2}), encoding="utf-8")
    with pytest.raises(ModelError, match="schema_version"):
        ModelStore(tmp_path)


def test_identity_names_version_and_checksum() -> None:
    entry = load_manifest().model("dlib-resnet-embedding")
    assert entry.identity == f"dlib-resnet-embedding@{entry.version}+{entry.sha256[:12]}"
