"""Face templates, encrypted at rest, erasable, and tied to the model that made them.

One SQLite file. A person is one row: their id in clear (the key for erasure), the identity of
the embedding model that made their templates in clear (so a model change is found without
decrypting anything), and a sealed blob — AES-256-GCM with a fresh 96-bit nonce, the id and the
model as associated data — holding their name and templates. A row moved to another id or
relabelled with another model fails to open. An enrolment image is kept only when an operator
opts in, sealed the same way, with an expiry after which :meth:`TemplateStore.purge_expired`
erases it.

Erasure: ``secure_delete`` makes SQLite overwrite deleted content with zeros, and the rollback
journal (not WAL) leaves no second copy in the folder; after :meth:`TemplateStore.delete` no byte
of the person's sealed row remains in the file (a test reads the raw file to check).

Model change: templates made by another embedding model are *stale*; they are never matched
(distances between models mean nothing). :meth:`TemplateStore.load` reports them, the gateway
logs them and ``cityedge faces list`` shows them, and ``cityedge faces reenroll`` rebuilds
those that have a retained image; the others need a new photo.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.errors import PermanentError
from edge.face_access.gallery import Gallery

_KEYCHECK = b"cityedge face store"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, enrolled_at REAL NOT NULL,
    nonce BLOB NOT NULL, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    person TEXT PRIMARY KEY REFERENCES people(id) ON DELETE CASCADE,
    expires_at REAL NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL);
"""


class FaceStoreError(PermanentError):
    code = "CE420"


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    model: str
    enrolled_at: float
    templates: int
    image_expires_at: float | None

    def stale(self, model: str) -> bool:
        return self.model != model

    def summary(self, model: str) -> dict[str, object]:
        """What the CLI and the API show about a person (no template)."""
        return {
            "id": self.id,
            "name": self.name,
            "model": self.model,
            "stale": self.stale(model),
            "enrolled_at": self.enrolled_at,
            "image_expires_at": self.image_expires_at,
        }


class TemplateStore:
    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._aead = AESGCM(key)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        os.chmod(path, 0o600)
        self._check_key()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- sealing -----------------------------------------------------------------------------
    def _seal(self, payload: bytes, aad: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, self._aead.encrypt(nonce, payload, aad)

    def _open(self, nonce: bytes, sealed: bytes, aad: bytes, what: str) -> bytes:
        try:
            return self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise FaceStoreError(
                f"{self.path}: {what} cannot be opened (tampered, moved, or another key)",
                hint="restore the store from a backup, or delete and re-enrol that person",
            ) from None

    def _check_key(self) -> None:
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k='keycheck'").fetchone()
            if row is None:
                nonce, sealed = self._seal(_KEYCHECK, b"keycheck")
                self._db.execute("INSERT INTO meta VALUES ('keycheck', ?)", (nonce + sealed,))
                return
        blob = bytes(row[0])
        try:
            self._aead.decrypt(blob[:12], blob[12:], b"keycheck")
        except InvalidTag:
            raise FaceStoreError(
                f"{self.path} was written with another key",
                hint="the gateway secret (or site/gateway id) changed; restore the old secret",
            ) from None

    @staticmethod
    def _aad(person: str, model: str) -> bytes:
        return f"person:{person}\0model:{model}".encode()

    # -- writes ------------------------------------------------------------------------------
    def enroll(
        self,
        person: str,
        name: str,
        templates: list[np.ndarray],
        model: str,
        now: float,
        image: bytes | None = None,
        image_expires_at: float | None = None,
    ) -> None:
        """Add or replace a person (replacing drops their old templates and image)."""
        body = json.dumps(
            {
                "name": name,
                "templates": [
                    base64.b64encode(np.asarray(t, dtype="<f4").tobytes()).decode()
                    for t in templates
                ],
            }
        ).encode()
        nonce, sealed = self._seal(body, self._aad(person, model))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM images WHERE person=?", (person,))
                self._db.execute(
                    "INSERT OR REPLACE INTO people VALUES (?, ?, ?, ?, ?)",
                    (person, model, now, nonce, sealed),
                )
                if image is not None:
                    if image_expires_at is None:
                        raise ValueError("a retained image needs an expiry")
                    inonce, isealed = self._seal(image, self._aad(person, "image"))
                    self._db.execute(
                        "INSERT INTO images VALUES (?, ?, ?, ?)",
                        (person, image_expires_at, inonce, isealed),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def delete(self, person: str) -> bool:
        """Erase a person: templates, name and any retained image. False if unknown."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM images WHERE person=?", (person,))
            gone = self._db.execute("DELETE FROM people WHERE id=?", (person,)).rowcount
            self._db.execute("COMMIT")
        return gone > 0

    def purge_expired(self, now: float) -> list[str]:
        """Erase retained images past their expiry; the people whose image went."""
        with self._lock:
            rows = self._db.execute(
                "SELECT person FROM images WHERE expires_at <= ?", (now,)
            ).fetchall()
            if rows:
                self._db.execute("DELETE FROM images WHERE expires_at <= ?", (now,))
        return [r[0] for r in rows]

    # -- reads -------------------------------------------------------------------------------
    def _rows(self, person: str | None = None) -> list[Any]:
        sql = (
            "SELECT p.id, p.model, p.enrolled_at, p.nonce, p.sealed, i.expires_at "
            "FROM people p LEFT JOIN images i ON i.person = p.id"
        )
        with self._lock:
            if person is None:
                return self._db.execute(sql + " ORDER BY p.id").fetchall()
            return self._db.execute(sql + " WHERE p.id=?", (person,)).fetchall()

    def _unseal(self, row: Any) -> tuple[Person, list[np.ndarray]]:
        pid, model, enrolled_at, nonce, sealed, expires = row
        body = json.loads(self._open(nonce, sealed, self._aad(pid, model), f"person {pid!r}"))
        templates = [np.frombuffer(base64.b64decode(t), dtype="<f4") for t in body["templates"]]
        return Person(pid, body["name"], model, enrolled_at, len(templates), expires), templates

    def people(self) -> list[Person]:
        return [self._unseal(r)[0] for r in self._rows()]

    def person(self, person: str) -> Person | None:
        rows = self._rows(person)
        return self._unseal(rows[0])[0] if rows else None

    def load(self, model: str) -> tuple[Gallery, dict[str, str], list[Person]]:
        """The gallery of ``model``'s templates, id → name, and the stale people."""
        ids: list[str] = []
        vectors: list[np.ndarray] = []
        names: dict[str, str] = {}
        stale: list[Person] = []
        for row in self._rows():
            person, templates = self._unseal(row)
            if person.stale(model):
                stale.append(person)
                continue
            names[person.id] = person.name
            for t in templates:
                ids.append(person.id)
                vectors.append(t)
        if not vectors:
            return Gallery.empty(), names, stale
        return Gallery(ids, np.stack(vectors)), names, stale

    def retained_image(self, person: str, now: float) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT nonce, sealed, expires_at FROM images WHERE person=?", (person,)
            ).fetchone()
        if row is None or row[2] <= now:
            return None
        return self._open(row[0], row[1], self._aad(person, "image"), f"image of {person!r}")

    def data_version(self) -> int:
        """Changes whenever another connection (the CLI, the HTTP API) commits."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])
