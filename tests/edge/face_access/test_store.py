"""The template store: encrypted at rest, bound to id and model, erasable without a trace."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge.face_access.keys import derive_keys
from edge.face_access.store import FaceStoreError, TemplateStore

MODEL = "dlib-resnet-embedding@1+6afde9c2422d"
KEY = derive_keys("a-long-gateway-secret-for-tests", "site", "gw").templates


def template(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=128).astype(np.float32)


def test_keys_differ_by_purpose_gateway_and_secret() -> None:
    a = derive_keys("a-long-gateway-secret-for-tests", "site", "gw")
    assert a.templates != a.audit
    assert derive_keys("a-long-gateway-secret-for-tests", "site", "gw2").templates != a.templates
    assert derive_keys("another-long-gateway-secret!!", "site", "gw").templates != a.templates
    assert "secret" not in repr(a) and a.templates.hex() not in repr(a)
    with pytest.raises(ValueError, match="at least 16"):
        derive_keys("short", "s", "g")


def test_nothing_personal_is_readable_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = TemplateStore(path, KEY)
    t = template(1)
    store.enroll(
        "p-1",
        "Zhang Wei 张伟",
        [t],
        MODEL,
        1000.0,
        image=b"JPEGDATA-secret-photo",
        image_expires_at=2000.0,
    )
    store.close()
    raw = path.read_bytes()
    for secret in (b"Zhang Wei", "张伟".encode(), t.tobytes()[:32], b"JPEGDATA-secret-photo"):
        assert secret not in raw
    assert b"p-1" in raw  # the id is the clear key for erasure
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    again = TemplateStore(path, KEY)
    people = again.people()
    assert [(p.id, p.name, p.model, p.templates, p.image_expires_at) for p in people] == [
        ("p-1", "Zhang Wei 张伟", MODEL, 1, 2000.0)
    ]
    gallery, names, stale = again.load(MODEL)
    assert names == {"p-1": "Zhang Wei 张伟"} and not stale
    assert np.array_equal(gallery.templates[0], t)
    assert again.retained_image("p-1", 1500.0) == b"JPEGDATA-secret-photo"
    assert again.retained_image("p-1", 2500.0) is None  # past its expiry


def test_another_key_cannot_open_the_store(tmp_path: Path) -> None:
    TemplateStore(tmp_path / "t.db", KEY).close()
    other = derive_keys("a-long-gateway-secret-for-tests", "site", "other-gw").templates
    with pytest.raises(FaceStoreError, match="written with another key") as info:
        TemplateStore(tmp_path / "t.db", other)
    assert info.value.code == "CE420"


def test_a_row_moved_to_another_person_or_model_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = TemplateStore(path, KEY)
    store.enroll("p-1", "A", [template(1)], MODEL, 1.0)
    store.enroll("p-2", "B", [template(2)], MODEL, 1.0)
    store.close()
    db = sqlite3.connect(path)
    row = db.execute("SELECT nonce, sealed FROM people WHERE id='p-1'").fetchone()
    db.execute("UPDATE people SET nonce=?, sealed=? WHERE id='p-2'", row)  # copy A's template to B
    db.commit()
    db.close()
    store = TemplateStore(path, KEY)
    with pytest.raises(FaceStoreError, match="person 'p-2' cannot be opened"):
        store.load(MODEL)
    db = sqlite3.connect(path)
    db.execute("UPDATE people SET model='other@2+abc' WHERE id='p-1'")
    db.commit()
    db.close()
    with pytest.raises(FaceStoreError, match="person 'p-1'"):
        store.person("p-1")


def test_delete_leaves_no_byte_of_the_person(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = TemplateStore(path, KEY)
    store.enroll("p-keep", "Keep", [template(9)], MODEL, 1.0)
    store.enroll(
        "p-gone", "Gone", [template(7)], MODEL, 1.0, image=b"photo-bytes" * 50, image_expires_at=9e9
    )
    db = sqlite3.connect(path)
    nonce, sealed = db.execute("SELECT nonce, sealed FROM people WHERE id='p-gone'").fetchone()
    _, isealed = db.execute("SELECT nonce, sealed FROM images WHERE person='p-gone'").fetchone()
    db.close()
    assert store.delete("p-gone") is True
    assert store.delete("p-gone") is False
    store.close()
    raw = path.read_bytes()
    for blob in (sealed, isealed, nonce + sealed[:16]):
        assert bytes(blob[:24]) not in raw
    assert b"p-gone" not in raw
    assert list(tmp_path.iterdir()) == [path]  # no journal or WAL copy left beside it
    store = TemplateStore(path, KEY)
    gallery, names, _ = store.load(MODEL)
    assert names == {"p-keep": "Keep"} and gallery.people == ["p-keep"]


def test_templates_of_another_model_are_stale_not_matched(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "t.db", KEY)
    store.enroll("p-old", "Old", [template(1)], "dlib-resnet-embedding@0+000000000000", 1.0)
    store.enroll("p-new", "New", [template(2), template(3)], MODEL, 1.0)
    gallery, names, stale = store.load(MODEL)
    assert gallery.people == ["p-new", "p-new"] and set(names) == {"p-new"}
    assert [p.id for p in stale] == ["p-old"]
    assert stale[0].stale(MODEL)


def test_expired_images_are_purged(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "t.db", KEY)
    store.enroll("a", "A", [template(1)], MODEL, 1.0, image=b"a", image_expires_at=100.0)
    store.enroll("b", "B", [template(2)], MODEL, 1.0, image=b"b", image_expires_at=300.0)
    assert store.purge_expired(200.0) == ["a"]
    assert store.retained_image("a", 0.0) is None and store.retained_image("b", 0.0) == b"b"
    assert store.person("a") is not None  # the template stays; only the photo goes
    with pytest.raises(ValueError, match="expiry"):
        store.enroll("c", "C", [template(3)], MODEL, 1.0, image=b"c")


def test_data_version_moves_when_another_connection_commits(tmp_path: Path) -> None:
    gateway = TemplateStore(tmp_path / "t.db", KEY)
    cli = TemplateStore(tmp_path / "t.db", KEY)
    v0 = gateway.data_version()
    cli.enroll("p", "P", [template(1)], MODEL, 1.0)
    assert gateway.data_version() != v0
