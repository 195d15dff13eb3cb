"""Face templates, encrypted at rest, erasable, and tied to the model that made them.

One SQLite file. A person is one row: their id in clear (the key for erasure), the identity of
the embedding model that made their templates in clear (so a model change is found without
decrypting anything), and a sealed blob — AES-256-GCM with a fresh 96-bit nonce, the id and the
model as associated data — holding their name and templates. A row moved to another id or
relabelled with another model fails to open. An enrolment image is kept only when an operator
opts in, sealed the same way, with an expiry after which :meth:`TemplateStore.purge_expired`
erases it.

A person's sealed blob also holds where they live (building, unit, room) and the consent
recorded at enrolment (by whom: the person, or a guardian for a minor under 14; the privacy
notice's version; the reference of the signed form). A person may have no face template at all
(they chose a card or a PIN): face is never the only way in.

Cards and PINs are kept as keyed digests only (HMAC-SHA256 with a key derived from the gateway
secret, :mod:`edge.face_access.keys`), one row each, erased with their person.

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
CREATE TABLE IF NOT EXISTS credentials (
    digest BLOB PRIMARY KEY, person TEXT NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    kind TEXT NOT NULL, enrolled_at REAL NOT NULL);
"""
CREDENTIAL_KINDS = ("card", "pin")


class FaceStoreError(PermanentError):
    code = "CE420"


@dataclass(frozen=True)
class Home:
    building: str = ""
    unit: str = ""
    room: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"building": self.building, "unit": self.unit, "room": self.room}


@dataclass(frozen=True)
class Consent:
    """Separate consent to face recognition, recorded with the enrolment (人脸识别技术应用安全
    管理办法: separate consent; a guardian's for a minor under 14)."""

    by: str  # "self" or "guardian"
    minor: bool  # under 14
    guardian: str | None  # the guardian's name (sealed like the person's)
    reference: str  # where the signed consent is kept (a form number), or how it was given
    notice: str  # version of the privacy notice the person was shown
    at: float

    def as_dict(self) -> dict[str, object]:
        return {
            "by": self.by,
            "minor": self.minor,
            "guardian": self.guardian,
            "reference": self.reference,
            "notice": self.notice,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Consent:
        return cls(
            str(d["by"]),
            bool(d["minor"]),
            d.get("guardian"),
            str(d["reference"]),
            str(d["notice"]),
            float(d["at"]),
        )


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    model: str
    enrolled_at: float
    templates: int
    image_expires_at: float | None
    home: Home = Home()
    consent: Consent | None = None
    credentials: tuple[str, ...] = ()  # kinds of the cards and PINs enrolled ("card", "pin")

    def stale(self, model: str) -> bool:
        return self.templates > 0 and self.model != model

    def summary(self, model: str) -> dict[str, object]:
        """What the CLI and the API show about a person (no template, no card, no PIN)."""
        return {
            "id": self.id,
            "name": self.name,
            "model": self.model,
            "face": self.templates > 0,
            "stale": self.stale(model),
            "enrolled_at": self.enrolled_at,
            "image_expires_at": self.image_expires_at,
            **self.home.as_dict(),
            "consent": None if self.consent is None else self.consent.as_dict(),
            "credentials": list(self.credentials),
        }

    def matches(self, query: str) -> bool:
        """Whether a search (words, any case) finds this person: every word is in the id, the
        name, the building, the unit or the room."""
        hay = " ".join((self.id, self.name, *self.home.as_dict().values())).casefold()
        return all(word in hay for word in query.casefold().split())


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
        home: Home = Home(),
        consent: Consent | None = None,
    ) -> None:
        """Add or replace a person (replacing drops their old templates and image, and keeps
        their cards and PINs)."""
        body = json.dumps(
            {
                "name": name,
                "templates": [
                    base64.b64encode(np.asarray(t, dtype="<f4").tobytes()).decode()
                    for t in templates
                ],
                "home": home.as_dict(),
                "consent": None if consent is None else consent.as_dict(),
            },
            ensure_ascii=False,
        ).encode()
        nonce, sealed = self._seal(body, self._aad(person, model))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM images WHERE person=?", (person,))
                self._db.execute(  # an upsert: a REPLACE would cascade to the credentials
                    "INSERT INTO people VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                    "model=excluded.model, enrolled_at=excluded.enrolled_at, "
                    "nonce=excluded.nonce, sealed=excluded.sealed",
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

    def add_credential(self, person: str, kind: str, digest: bytes, now: float) -> str | None:
        """Attach a card or PIN digest to ``person``; None when done, else the id of the
        person who already has it (nothing is changed then). A person has at most one PIN:
        a new one replaces the old."""
        if kind not in CREDENTIAL_KINDS:
            raise ValueError(f"kind must be one of {CREDENTIAL_KINDS}")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT person FROM credentials WHERE digest=?", (digest,)
                ).fetchone()
                if row is not None and row[0] != person:
                    self._db.execute("ROLLBACK")
                    return str(row[0])
                if kind == "pin":
                    self._db.execute(
                        "DELETE FROM credentials WHERE person=? AND kind='pin'", (person,)
                    )
                self._db.execute(
                    "INSERT OR REPLACE INTO credentials VALUES (?, ?, ?, ?)",
                    (digest, person, kind, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return None

    def remove_credentials(self, person: str, kind: str | None = None) -> int:
        """Erase a person's cards and PINs (of one ``kind``, or all); how many went."""
        with self._lock:
            if kind is None:
                cur = self._db.execute("DELETE FROM credentials WHERE person=?", (person,))
            else:
                cur = self._db.execute(
                    "DELETE FROM credentials WHERE person=? AND kind=?", (person, kind)
                )
        return int(cur.rowcount)

    def credential_owner(self, digest: bytes) -> tuple[str, str] | None:
        """(person, kind) of a card or PIN digest, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT person, kind FROM credentials WHERE digest=?", (digest,)
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

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

    def _kinds(self) -> dict[str, tuple[str, ...]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT person, kind FROM credentials ORDER BY person, kind"
            ).fetchall()
        kinds: dict[str, list[str]] = {}
        for person, kind in rows:
            kinds.setdefault(person, []).append(kind)
        return {p: tuple(k) for p, k in kinds.items()}

    def _unseal(
        self, row: Any, kinds: dict[str, tuple[str, ...]] | None = None
    ) -> tuple[Person, list[np.ndarray]]:
        pid, model, enrolled_at, nonce, sealed, expires = row
        body = json.loads(self._open(nonce, sealed, self._aad(pid, model), f"person {pid!r}"))
        templates = [np.frombuffer(base64.b64decode(t), dtype="<f4") for t in body["templates"]]
        home = Home(**body.get("home") or {})
        consent = Consent.from_dict(body["consent"]) if body.get("consent") else None
        person = Person(
            pid,
            body["name"],
            model,
            enrolled_at,
            len(templates),
            expires,
            home,
            consent,
            (kinds or {}).get(pid, ()),
        )
        return person, templates

    def people(self) -> list[Person]:
        kinds = self._kinds()
        return [self._unseal(r, kinds)[0] for r in self._rows()]

    def person(self, person: str) -> Person | None:
        rows = self._rows(person)
        return self._unseal(rows[0], self._kinds())[0] if rows else None

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
