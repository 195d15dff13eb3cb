"""One face-access installation: its store, audit log and pipeline, for the app and the CLI.

Enrolment, erasure and re-enrolment live here so the ``cityedge faces`` commands, the local
HTTP API and the running app do exactly the same thing, and each is audited the same way.

Enrolment refuses what staff would regret: an id already enrolled unless replacing is asked
for (CE425), a face that matches someone enrolled under another id unless that is confirmed
(CE426), no consent recorded, a minor (under 14) without a guardian's consent (CE421). Cards
and PINs are kept as keyed digests only (CE427 when malformed, too short or another person's).
"""

from __future__ import annotations

import hashlib
import hmac
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
from edge.face_access.store import Consent, Home, Person, TemplateStore
from edge.vision.manifest import ModelStore
from protocols.wiegand import parse_card

_PERSON_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DAY_S = 86400.0
MAX_TEXT = 64  # characters of a building, unit, room, guardian or consent reference
NOTICE_VERSION = "2025-06"  # the privacy notice (docs/face-access-privacy.md) shown at enrolment


class EnrollmentError(PermanentError):
    code = "CE421"


class PersonExists(EnrollmentError):
    code = "CE425"


class SameFace(EnrollmentError):
    code = "CE426"

    def __init__(self, message: str, *, hint: str, matches: list[tuple[str, float]]) -> None:
        super().__init__(message, hint=hint)
        self.matches = matches


class CredentialError(PermanentError):
    code = "CE427"


@dataclass(frozen=True)
class Enrolled:
    person: str
    replaced: bool
    image_kept_until: float | None
    face_px: float | None
    sharpness: float | None
    same_face: tuple[tuple[str, float], ...] = ()  # others this face matches (allowed)


def make_consent(
    by: str, *, minor: bool, guardian: str | None, reference: str, now: float
) -> Consent:
    """A consent record, checked: who gave it, a guardian's name for a minor under 14, and a
    reference to where the signed form is kept."""
    reference, guardian = reference.strip(), (guardian or "").strip() or None
    if by not in ("self", "guardian"):
        raise EnrollmentError(
            f"consent by {by!r}", hint="consent is given by 'self' or by a 'guardian'"
        )
    if not reference:
        raise EnrollmentError(
            "no consent recorded",
            hint="record the separate consent to face recognition: the reference of the "
            "signed form (--consent-ref, the page's consent field)",
        )
    if minor and (by != "guardian" or guardian is None):
        raise EnrollmentError(
            "a minor under 14 needs a guardian's consent",
            hint="give the guardian's name and set consent by 'guardian'",
        )
    if by == "guardian" and guardian is None:
        raise EnrollmentError("consent by a guardian needs the guardian's name")
    for label, text in (("consent reference", reference), ("guardian", guardian or "")):
        if len(text) > MAX_TEXT:
            raise EnrollmentError(f"the {label} is longer than {MAX_TEXT} characters")
    return Consent(by, minor, guardian, reference, NOTICE_VERSION, now)


def make_home(building: str = "", unit: str = "", room: str = "") -> Home:
    home = Home(building.strip(), unit.strip(), room.strip())
    for label, text in home.as_dict().items():
        if len(text) > MAX_TEXT or not text.isprintable():
            raise EnrollmentError(
                f"the {label} must be printable text of at most {MAX_TEXT} characters"
            )
    return home


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
        self._credential_key = keys.credentials
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

    def same_face(self, person: str, template: np.ndarray) -> list[tuple[str, float]]:
        """Other people (not ``person``) whose templates are within the gate's threshold of
        ``template``, closest first."""
        gallery, _, _ = self.store.load(self.embedding_model)
        if not len(gallery):
            return []
        closest: dict[str, float] = {}
        for who, d in zip(gallery.people, gallery.distances(template), strict=True):
            if who != person and d <= self.config.threshold:
                closest[who] = min(float(d), closest.get(who, float("inf")))
        return sorted(closest.items(), key=lambda kv: kv[1])

    def enroll(
        self,
        person: str,
        name: str,
        image: bytes | None,
        now: float,
        keep_image_days: int = 0,
        *,
        consent: Consent,
        home: Home | None = None,
        replace: bool = False,
        allow_same_face: bool = False,
    ) -> Enrolled:
        """Enrol ``person`` from a photo (``image``), or without a face (None: they will use a
        card or a PIN)."""
        check_person_id(person)
        name = name.strip()
        if not name or len(name) > MAX_TEXT or not name.isprintable():
            raise EnrollmentError(
                "the name is empty, too long or not printable",
                hint=f"give the name shown (masked) on the gate screen, at most {MAX_TEXT} characters",
            )
        limit = self.config.max_image_retention_days
        if keep_image_days < 0 or keep_image_days > limit:
            raise EnrollmentError(
                f"the image may be kept 0-{limit} days (asked {keep_image_days})",
                hint="the site's max_image_retention_days limits it",
            )
        if image is None and keep_image_days:
            raise EnrollmentError("there is no photo to keep")
        replaced = self.store.person(person) is not None
        if replaced and not replace:
            raise PersonExists(
                f"person {person!r} is already enrolled",
                hint="choose another id, or ask to replace them (--replace; the page's "
                "'replace' box)",
            )
        templates: list[np.ndarray] = []
        face_px = sharp = None
        same: list[tuple[str, float]] = []
        if image is not None:
            template, face_px, sharp = self.template_of(image)
            same = self.same_face(person, template)
            if same and not allow_same_face:
                who = ", ".join(f"{p} (distance {d:.2f})" for p, d in same)
                raise SameFace(
                    f"this face matches {who}, already enrolled",
                    hint="the same person twice? erase or replace the other id; two people "
                    "who look alike: enrol anyway (--allow-same-face; the page asks)",
                    matches=same,
                )
            templates = [template]
        until = now + keep_image_days * DAY_S if keep_image_days > 0 else None
        self.store.enroll(
            person,
            name,
            templates,
            self.embedding_model,
            now,
            image=image if until else None,
            image_expires_at=until,
            home=home or Home(),
            consent=consent,
        )
        self.audit.append(
            "enroll",
            person,
            {
                "model": self.embedding_model,
                "face": bool(templates),
                "replaced": replaced,
                "image_kept_until": until,
                "consent": {
                    "by": consent.by,
                    "minor": consent.minor,
                    "notice": consent.notice,
                    "reference": consent.reference,
                },
                "same_face_as": [p for p, _ in same],
            },
            now,
        )
        return Enrolled(person, replaced, until, face_px, sharp, tuple(same))

    # -- cards and PINs ----------------------------------------------------------------------
    def credential_digest(self, kind: str, value: str) -> bytes:
        """The keyed digest a card or PIN is kept and looked up as (never the value)."""
        return hmac.new(self._credential_key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def add_card(self, person: str, card: str, now: float) -> None:
        try:
            value = parse_card(card).credential()
        except ValueError as err:
            raise CredentialError(str(err)) from None
        self._add_credential(person, "card", value, now)

    def set_pin(self, person: str, pin: str, now: float) -> None:
        digits = self.config.readers.pin_min_digits
        if not (pin.isascii() and pin.isdigit()) or not digits <= len(pin) <= 12:
            raise CredentialError(
                f"a PIN is {digits}-12 digits",
                hint="digits only; the site's readers.pin_min_digits sets the shortest",
            )
        if len(set(pin)) < 3 or pin in "01234567890123" or pin in "98765432109876":
            raise CredentialError(
                "this PIN is too easy to guess (a run or few different digits)",
                hint="choose digits that are not a sequence",
            )
        self._add_credential(person, "pin", pin, now)

    def _add_credential(self, person: str, kind: str, value: str, now: float) -> None:
        if self.store.person(person) is None:
            raise CredentialError(
                f"no person {person!r}", hint="enrol the person first ('cityedge faces enroll')"
            )
        owner = self.store.add_credential(person, kind, self.credential_digest(kind, value), now)
        if owner is not None:
            self.audit.append(kind, person, {"added": False, "reason": "another's"}, now)
            raise CredentialError(
                f"this {kind} is already enrolled for another person",
                hint=f"each {kind} opens for one person only: choose another",
            )
        self.audit.append(kind, person, {"added": True}, now)

    def remove_credentials(self, person: str, kind: str | None, now: float) -> int:
        gone = self.store.remove_credentials(person, kind)
        self.audit.append("credentials_erased", person, {"kind": kind, "count": gone}, now)
        return gone

    def credential_owner(self, kind: str, value: str) -> str | None:
        found = self.store.credential_owner(self.credential_digest(kind, value))
        return found[0] if found is not None and found[1] == kind else None

    def delete(self, person: str, now: float) -> bool:
        gone = self.store.delete(person)
        self.audit.append("delete", person, {"existed": gone}, now)
        return gone

    def people(self, query: str = "") -> list[Person]:
        """Everyone enrolled, or those a search finds (see :meth:`Person.matches`)."""
        return [p for p in self.store.people() if p.matches(query)]

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
                home=p.home,
                consent=p.consent,
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
