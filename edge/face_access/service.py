"""One face-access installation: its store, audit log and pipeline, for the app and the CLI.

Enrolment, erasure and re-enrolment live here so the ``cityedge faces`` commands, the local
HTTP API and the running app do exactly the same thing, and each is audited the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import PermanentError
from edge.face_access.audit import AuditLog, Verdict
from edge.face_access.config import FaceAccessConfig
from edge.face_access.keys import derive_keys
from edge.face_access.photos import BadPhoto, decode_photo
from edge.face_access.pipeline import FacePipeline, QualitySettings
from edge.face_access.store import Person, TemplateStore
from edge.vision.manifest import ModelStore

_PERSON_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DAY_S = 86400.0


class EnrollmentError(PermanentError):
    code = "CE421"


@dataclass(frozen=True)
class Enrolled:
    person: str
    replaced: bool
    image_kept_until: float | None
    face_px: float
    sharpness: float


def check_person_id(person: str) -> None:
    if person == "unknown" or not _PERSON_ID.match(person):
        raise EnrollmentError(
            f"person id {person!r} is not allowed",
            hint="1-64 letters, digits, '_', '.', '-', starting with a letter or digit; not 'unknown'",
        )


class FaceService:
    def __init__(self, config: FaceAccessConfig, site: str, gateway: str, base_dir: Path) -> None:
        self.config = config
        keys = derive_keys(config.secret.get_secret_value(), site, gateway)
        folder = config.store_path(base_dir)
        self.store = TemplateStore(folder / "templates.db", keys.templates)
        self.audit = AuditLog(folder / "audit.log", keys.audit)
        models = config.models_dir
        if models is not None and not models.is_absolute():
            models = base_dir / models
        self.models = ModelStore(models)
        self._pipeline: FacePipeline | None = None

    @property
    def embedding_model(self) -> str:
        """Identity of the embedding model in the built models (what templates must match)."""
        return self.models.entry("dlib-resnet-embedding").identity

    @property
    def pipeline(self) -> FacePipeline:
        if self._pipeline is None:
            q = self.config.quality
            self._pipeline = FacePipeline(
                self.models,
                threads=self.config.threads,
                quality=QualitySettings(
                    q.min_face_px, q.min_sharpness, q.max_yaw_deg, q.max_roll_deg
                ),
                liveness=self.config.liveness != "off",
            )
            self._pipeline.warm()
        return self._pipeline

    def close(self) -> None:
        self.store.close()

    # -- enrolment ---------------------------------------------------------------------------
    def template_of(self, image: bytes) -> tuple[np.ndarray, float, float]:
        """The embedding of the one face in an encoded image, after the quality checks (a
        photo is refused by its size and pixel count before it is decoded: see
        :mod:`edge.face_access.photos`)."""
        try:
            pixels = decode_photo(image)
        except BadPhoto as err:
            raise EnrollmentError(err.message, hint=err.hint) from None
        rgb = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        analysis = self.pipeline.analyse(rgb, liveness=False, require_quality=True)
        if analysis.faces == 0:
            raise EnrollmentError(
                "no face found in the photo", hint="a frontal, well-lit photo, face at least 60 px"
            )
        if analysis.faces > 1:
            raise EnrollmentError(
                f"{analysis.faces} faces in the photo",
                hint="crop the photo to the one person to enrol",
            )
        q = analysis.quality
        if q is None or not q.ok or analysis.embedding is None:
            problems = ", ".join(q.problems) if q else "unknown"
            raise EnrollmentError(
                f"the face is not good enough: {problems}", hint="take a sharper, frontal photo"
            )
        return analysis.embedding, q.face_px, q.sharpness

    def enroll(
        self, person: str, name: str, image: bytes, now: float, keep_image_days: int = 0
    ) -> Enrolled:
        check_person_id(person)
        if not name.strip():
            raise EnrollmentError(
                "the name is empty", hint="give the name shown on the gate screen"
            )
        limit = self.config.max_image_retention_days
        if keep_image_days < 0 or keep_image_days > limit:
            raise EnrollmentError(
                f"the image may be kept 0-{limit} days (asked {keep_image_days})",
                hint="the site's max_image_retention_days limits it",
            )
        template, face_px, sharp = self.template_of(image)
        replaced = self.store.person(person) is not None
        until = now + keep_image_days * DAY_S if keep_image_days > 0 else None
        self.store.enroll(
            person,
            name.strip(),
            [template],
            self.embedding_model,
            now,
            image=image if until else None,
            image_expires_at=until,
        )
        self.audit.append(
            "enroll",
            person,
            {"model": self.embedding_model, "replaced": replaced, "image_kept_until": until},
            now,
        )
        return Enrolled(person, replaced, until, face_px, sharp)

    def delete(self, person: str, now: float) -> bool:
        gone = self.store.delete(person)
        self.audit.append("delete", person, {"existed": gone}, now)
        return gone

    def people(self) -> list[Person]:
        return self.store.people()

    def stale(self) -> list[Person]:
        model = self.embedding_model
        return [p for p in self.store.people() if p.stale(model)]

    def reenroll(self, now: float) -> tuple[list[str], list[str]]:
        """Rebuild stale templates from retained images: (re-enrolled, still need a photo)."""
        done: list[str] = []
        missing: list[str] = []
        for p in self.stale():
            image = self.store.retained_image(p.id, now)
            if image is None:
                missing.append(p.id)
                continue
            template, _, _ = self.template_of(image)
            until = p.image_expires_at
            self.store.enroll(
                p.id,
                p.name,
                [template],
                self.embedding_model,
                now,
                image=image,
                image_expires_at=until,
            )
            self.audit.append(
                "reenroll", p.id, {"model": self.embedding_model, "from": p.model}, now
            )
            done.append(p.id)
        return done, missing

    def purge_images(self, now: float) -> list[str]:
        gone = self.store.purge_expired(now)
        for person in gone:
            self.audit.append("image_erased", person, {"reason": "retention expired"}, now)
        return gone

    def verify_audit(self) -> Verdict:
        return self.audit.verify()
