"""``cityedge faces``: enrol, list, erase (and prove it), re-enrol after a model change, and
the audit verifier catching a tampered entry."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cityedge.cli import app
from edge.config.site import load_site
from edge.face_access.config import FaceAccessConfig
from edge.face_access.service import FaceService
from edge.vision.manifest import MANIFEST_JSON, ModelStore

runner = CliRunner()


def site(tmp_path: Path, models_dir: Path | None = None) -> Path:
    (tmp_path / "gate.avi").write_bytes(b"")  # the camera file only has to exist for the checks
    extra = f"    models_dir: {models_dir}\n" if models_dir else ""
    path = tmp_path / "site.yaml"
    path.write_text(
        f"""
site: test-site
gateway: gw-1
sources:
  - {{type: modbus, name: bus, host: 127.0.0.1, port: 1502, devices: [{{name: gate-1, profile: gate-controller}}]}}
  - {{type: camera, name: cam, camera: cam-1, url: gate.avi}}
apps:
  - type: face_access
    name: gate
    cameras: [cam-1]
    gate: {{device: gate-1}}
    secret: !secret gateway_secret
{extra}""",
        encoding="utf-8",
    )
    (tmp_path / "secrets.yaml").write_text(
        "gateway_secret: a-long-gateway-secret-for-tests\n", encoding="utf-8"
    )
    return path


def faces(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["faces", *args])
    return result.exit_code, result.output


def enrol(cfg: Path, photo: str, person: str, name: str, *extra: str) -> tuple[int, str]:
    return faces(
        "enroll",
        photo,
        "--id",
        person,
        "--name",
        name,
        "--consent-ref",
        f"form-{person}",
        *extra,
        "--config",
        str(cfg),
    )


def service(path: Path) -> FaceService:
    s = load_site(path)
    cfg = s.config.apps[0]
    assert isinstance(cfg, FaceAccessConfig)
    return FaceService(cfg, s.config.site, s.config.gateway, s.check.base_dir)


def embedding_of(file: str, svc: FaceService) -> np.ndarray:
    return svc.template_of(svc.models.asset(file).read_bytes())[0]


def test_erasure_leaves_no_template_and_the_person_is_no_longer_recognised(
    tmp_path: Path, model_store: ModelStore
) -> None:
    cfg = site(tmp_path)
    for pid, name, file in (("p-obama", "Obama", "obama.jpg"), ("p-biden", "Biden", "biden.jpg")):
        code, out = enrol(cfg, str(model_store.asset(file)), pid, name)
        assert code == 0, out
        assert f"enrolled {pid}" in out and "photo discarded" in out
    svc = service(cfg)
    probe = embedding_of("obama2.jpg", svc)  # another photo of the enrolled person
    gallery, _, _ = svc.store.load(svc.embedding_model)
    match = gallery.search(probe)
    assert match is not None and match.person == "p-obama" and match.distance <= 0.5
    db = sqlite3.connect(svc.store.path)
    (sealed,) = db.execute("SELECT sealed FROM people WHERE id='p-obama'").fetchone()
    db.close()
    svc.close()

    code, out = faces("delete", "p-obama", "--config", str(cfg))
    assert code == 0 and "erased p-obama" in out

    svc = service(cfg)
    gallery, names, _ = svc.store.load(svc.embedding_model)
    assert set(names) == {"p-biden"}
    match = gallery.search(probe)
    assert match is None or (match.person != "p-obama" and match.distance > 0.5)  # not recognised
    raw = (tmp_path / "faces" / "templates.db").read_bytes()
    assert bytes(sealed[:32]) not in raw and b"p-obama" not in raw
    svc.close()
    code, out = faces("list", "--config", str(cfg), "--json")
    assert code == 0 and [p["id"] for p in json.loads(out)["people"]] == ["p-biden"]
    code, out = faces("delete", "p-obama", "--config", str(cfg))
    assert code == 1 and "no person 'p-obama'" in out


def test_the_audit_verifier_detects_a_tampered_entry(
    tmp_path: Path, model_store: ModelStore
) -> None:
    cfg = site(tmp_path)
    assert enrol(cfg, str(model_store.asset("biden.jpg")), "p-b", "B")[0] == 0
    assert faces("delete", "p-b", "--config", str(cfg))[0] == 0
    code, out = faces("audit-verify", "--config", str(cfg))
    assert code == 0 and "intact, 2 entries" in out
    log = tmp_path / "faces" / "audit.log"
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    entry = json.loads(lines[1])
    entry["action"] = "enroll"  # pretend the erasure never happened
    lines[1] = json.dumps(entry) + "\n"
    log.write_text("".join(lines), encoding="utf-8")
    code, out = faces("audit-verify", "--config", str(cfg))
    assert code == 1 and "TAMPERED at line 2" in out and "mac does not match" in out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: cv2.imwrite(str(d / "x.png"), np.full((300, 300, 3), 120, np.uint8)),
            "no face found",
        ),
        (lambda d: (d / "x.png").write_bytes(b"GIF89a-not-really"), "not an image"),
    ],
)
def test_bad_photos_are_refused(tmp_path: Path, make: object, message: str) -> None:
    cfg = site(tmp_path)
    make(tmp_path)  # type: ignore[operator]
    code, out = enrol(cfg, str(tmp_path / "x.png"), "p-1", "X")
    assert code == 1 and message in out and "CE421" in out


def test_a_group_photo_and_bad_ids_are_refused(tmp_path: Path, model_store: ModelStore) -> None:
    cfg = site(tmp_path)
    code, out = enrol(cfg, str(model_store.asset("sample1.jpg")), "p-1", "X")
    assert code == 1 and "faces in the photo" in out
    code, out = enrol(cfg, str(model_store.asset("biden.jpg")), "unknown", "X")
    assert code == 1 and "not allowed" in out
    code, out = enrol(cfg, str(tmp_path / "missing.jpg"), "p-1", "X")
    assert code == 1 and "cannot read" in out


def test_a_model_change_asks_for_reenrolment_and_rebuilds_from_kept_photos(
    tmp_path: Path, model_store: ModelStore
) -> None:
    cfg = site(tmp_path)
    assert (
        enrol(cfg, str(model_store.asset("obama.jpg")), "p-kept", "K", "--keep-image-days", "3")[0]
        == 0
    )
    assert enrol(cfg, str(model_store.asset("biden.jpg")), "p-photo-gone", "G")[0] == 0
    # a new build of the embedding model: same file here, but a new version in its manifest
    new_models = tmp_path / "models-v2"
    new_models.mkdir()
    (new_models / "onnx").symlink_to(model_store.directory / "onnx")
    manifest = json.loads((model_store.directory / MANIFEST_JSON).read_text(encoding="utf-8"))
    for m in manifest["models"]:
        if m["name"] == "dlib-resnet-embedding":
            m["version"] = "2"
    (new_models / MANIFEST_JSON).write_text(json.dumps(manifest), encoding="utf-8")
    text = cfg.read_text(encoding="utf-8").replace(
        "    secret:", f"    models_dir: {new_models}\n    secret:"
    )
    cfg.write_text(text, encoding="utf-8")

    code, out = faces("list", "--config", str(cfg))
    assert code == 0 and out.count("STALE: re-enrol") == 2 and "2 stale" in out
    code, out = faces("reenroll", "--config", str(cfg))
    assert code == 1
    assert (
        "re-enrolled 1 from kept photos: p-kept" in out
        and "1 need a new photo" in out
        and "p-photo-gone" in out
    )
    code, out = faces("list", "--config", str(cfg), "--json")
    rows = {p["id"]: p for p in json.loads(out)["people"]}
    assert not rows["p-kept"]["stale"] and rows["p-photo-gone"]["stale"]
    assert rows["p-kept"]["model"].startswith("dlib-resnet-embedding@2+")
    assert faces("audit-verify", "--config", str(cfg))[0] == 0


def test_a_site_without_the_app_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("site: s\ngateway: g\n", encoding="utf-8")
    code, out = faces("list", "--config", str(path))
    assert code == 1 and "no face_access app" in out


def test_cards_and_pins_are_given_without_echo_and_bad_ones_named(tmp_path: Path) -> None:
    cfg = site(tmp_path)
    code, out = faces(
        "enroll",
        "--no-face",
        "--id",
        "p-card",
        "--name",
        "卡",
        "--consent-ref",
        "form-1",
        "--config",
        str(cfg),
    )
    assert code == 0, out
    code, out = faces("card", "add", "12:34567", "--id", "p-card", "--config", str(cfg), "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "id": "p-card", "kind": "card"}, out
    result = runner.invoke(
        app, ["faces", "pin", "set", "--id", "p-card", "--config", str(cfg)], input="480613\n"
    )
    assert result.exit_code == 0 and "PIN set for p-card" in result.output, result.output
    assert "480613" not in result.output
    svc = service(cfg)
    try:
        assert svc.credential_owner("card", "12:34567") == "p-card"
        assert svc.credential_owner("pin", "480613") == "p-card"
    finally:
        svc.close()
    code, out = faces("card", "add", "1234567", "--id", "p-card", "--config", str(cfg))
    assert code == 1 and "CE427" in out and "FACILITY:NUMBER" in out and "Traceback" not in out
    result = runner.invoke(
        app, ["faces", "pin", "set", "--id", "p-card", "--config", str(cfg)], input="1234\n"
    )
    assert result.exit_code == 1 and "CE427" in result.output, result.output
    assert "6-12 digits" in result.output and "Traceback" not in result.output
