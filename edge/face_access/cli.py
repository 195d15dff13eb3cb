"""``cityedge faces enroll|list|delete|reenroll|audit-verify|card|pin|pass``: the gate's people,
cards, PINs and visitor passes, from a shell.

Every command reads the site file to find the ``face_access`` app (``--app`` when there are
several), its store folder and its secret, so the keys are the same as the gateway's. The running
gateway picks up changes within a second. Exit codes: 0 done; 1 bad input (CE421 no face in the
photo or no consent, CE422 unknown person, CE423 a tampered audit log, CE424 people need a new
photo, CE425 the id is enrolled already, CE426 the face is someone else's, CE427 a bad card or
PIN, CE428 a pass that cannot be issued or is refused, CE630 a key file that cannot be used); 3
could not run (CE400 models not built). Every command takes ``--json`` (times as ISO 8601 UTC).

``pass issue`` signs a visitor pass with an Ed25519 key (any: ``cityedge command-key --out
office.key`` makes one and prints the public key for the gate's ``passes.keys``) and writes the
QR code as a PNG to send to the visitor's phone; ``pass check`` reads a pass (text or PNG) as
the gate would, without using it.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cityedge.console import (
    Failed,
    console,
    emit_json,
    fail,
    iso_time,
    readable_file,
)
from edge.cli import load_site_file
from protocols import codes

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge.face_access.config import FaceAccessConfig
    from edge.face_access.service import FaceService

out = console()

_CONFIG = typer.Option("--config", "-c", help="Site YAML file with a face_access app")
_APP = typer.Option("--app", help="Name of the face_access app (when the site has several)")
_JSON = typer.Option("--json", help="Machine-readable output (JSON on stdout)")


def _service(config: Path, app_name: str | None) -> FaceService:
    from edge.face_access.service import FaceService

    site_id, gateway, base_dir, app = _app_config(config, app_name)
    return FaceService(app, site_id, gateway, base_dir)


def _app_config(config: Path, app_name: str | None) -> tuple[str, str, Path, FaceAccessConfig]:
    """The site id, the gateway id, the site file's folder and the face_access app's config."""
    from edge.face_access.config import FaceAccessConfig

    site = load_site_file(config)
    apps = [a for a in site.config.apps if isinstance(a, FaceAccessConfig)]
    if app_name is not None:
        apps = [a for a in apps if a.name == app_name]
    if len(apps) != 1:
        names = [a.name for a in site.config.apps if isinstance(a, FaceAccessConfig)]
        if not apps and app_name is not None and names:
            fail(
                codes.BAD_VALUE,
                f"{config}: no face_access app {app_name!r}; it has {', '.join(names)}",
            )
        if not apps:
            fail(
                codes.BAD_VALUE,
                f"{config}: no face_access app",
                "--config must name the gate's site file",
            )
        fail(
            codes.BAD_VALUE,
            f"{config}: several face_access apps ({', '.join(names)})",
            "pick one with --app",
        )
    return site.config.site, site.config.gateway, site.check.base_dir, apps[0]


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def enroll(
    person: Annotated[str, typer.Option("--id", help="Person id (letters, digits, _ . -)")],
    name: Annotated[str, typer.Option("--name", help="Name (the gate screen masks it: 张*伟)")],
    config: Annotated[Path, _CONFIG],
    consent_ref: Annotated[
        str,
        typer.Option(
            "--consent-ref",
            help="Where the separate, signed consent to face recognition is kept (a form "
            "number); required",
        ),
    ],
    image: Annotated[
        Path | None, typer.Argument(help="Photo of the person (JPEG/PNG, one face)")
    ] = None,
    app_name: Annotated[str | None, _APP] = None,
    consent_by: Annotated[
        str, typer.Option("--consent-by", help="Who consented: self, or guardian")
    ] = "self",
    minor: Annotated[
        bool, typer.Option("--minor", help="Under 14: needs --consent-by guardian --guardian")
    ] = False,
    guardian: Annotated[str | None, typer.Option(help="The guardian's name (a minor)")] = None,
    building: Annotated[str, typer.Option(help="Building (楼栋)")] = "",
    unit: Annotated[str, typer.Option(help="Unit (单元)")] = "",
    room: Annotated[str, typer.Option(help="Room (房号)")] = "",
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a person already enrolled under this id")
    ] = False,
    allow_same_face: Annotated[
        bool,
        typer.Option(
            "--allow-same-face", help="Enrol although the face matches someone else's (twins)"
        ),
    ] = False,
    no_face: Annotated[
        bool,
        typer.Option("--no-face", help="No photo: the person uses a card or PIN ('faces card')"),
    ] = False,
    keep_image_days: Annotated[
        int,
        typer.Option(
            help="Keep the photo (encrypted) this many days for re-enrolment; 0 = discard"
        ),
    ] = 0,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Enrol a person, with their consent and home; only the encrypted template is kept."""
    from edge.face_access.photos import MAX_PHOTO_BYTES  # OpenCV: loaded when a photo is read
    from edge.face_access.service import make_consent, make_home

    if (image is None) != no_face:
        fail(
            codes.BAD_VALUE,
            "give a photo, or --no-face for a person who uses a card or PIN",
            "face is never the only way in; a person may choose a card or a PIN instead",
        )
    data: bytes | None = None
    if image is not None:
        readable_file(image, "photo")
        try:
            with image.open("rb") as f:  # no further than the limit: a larger file is refused
                data = f.read(MAX_PHOTO_BYTES + 1)
        except OSError as err:
            fail(codes.BAD_PATH, f"cannot read photo {image}: {err.strerror}")
    service = _service(config, app_name)
    now = time.time()
    try:
        consent = make_consent(
            consent_by, minor=minor, guardian=guardian, reference=consent_ref, now=now
        )
        done = service.enroll(
            person,
            name,
            data,
            now,
            keep_image_days,
            consent=consent,
            home=make_home(building, unit, room),
            replace=replace,
            allow_same_face=allow_same_face,
        )
    finally:
        service.close()
    same = [{"id": p, "distance": round(d, 3)} for p, d in done.same_face]
    if as_json:
        emit_json(
            {
                "ok": True,
                "id": done.person,
                "replaced": done.replaced,
                "face": done.face_px is not None,
                "image_kept_until": iso_time(done.image_kept_until),
                "same_face": same,
            }
        )
        return
    kept = (
        f"photo kept until {_when(done.image_kept_until)}"
        if done.image_kept_until
        else "photo discarded"
    )
    verb = "replaced" if done.replaced else "enrolled"
    face = f"face {done.face_px:.0f} px; {kept}" if done.face_px is not None else "no face"
    out.print(f"{verb} {done.person} ({face})")
    for p, d in done.same_face:
        out.print(f"  warning: the face also matches {p} (distance {d:.2f}); enrolled as asked")


def list_people(
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
    search: Annotated[
        str, typer.Option("--search", help="Only people whose id, name or home has these words")
    ] = "",
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """List enrolled people; 'stale' ones were enrolled with another model and need re-enrolment."""
    service = _service(config, app_name)
    try:
        model = service.embedding_model
        people = service.people(search)
    finally:
        service.close()
    if as_json:
        rows = [
            p.summary(model)
            | {
                "enrolled_at": iso_time(p.enrolled_at),
                "image_expires_at": iso_time(p.image_expires_at),
                "consent": None
                if p.consent is None
                else p.consent.as_dict() | {"at": iso_time(p.consent.at)},
            }
            for p in people
        ]
        emit_json({"ok": True, "model": model, "people": rows})
        return
    for p in people:
        state = "STALE: re-enrol" if p.stale(model) else "ok" if p.templates else "no face"
        home = "/".join(x for x in (p.home.building, p.home.unit, p.home.room) if x) or "-"
        consent = "no consent recorded" if p.consent is None else f"consent {p.consent.by}"
        ways = ",".join(("face",) * bool(p.templates) + p.credentials) or "-"
        out.print(
            f"{p.id}\t{p.name}\t{home}\t{state}\t{ways}\t{consent}\tenrolled "
            f"{_when(p.enrolled_at)}\tphoto until {_when(p.image_expires_at)}"
        )
    stale = sum(p.stale(model) for p in people)
    out.print(f"{len(people)} people, {stale} stale (current model {model})")


def delete(
    person: Annotated[str, typer.Argument(help="Person id to erase")],
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Erase a person: template, name and any kept photo (audited)."""
    service = _service(config, app_name)
    try:
        gone = service.delete(person, time.time())
    finally:
        service.close()
    if not gone:
        fail("CE422", f"no person {person!r} in the store (the attempt is audited)")
    if as_json:
        emit_json({"ok": True, "erased": person})
    else:
        out.print(f"erased {person}")


def reenroll(
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """After a model change: rebuild stale templates from kept photos; list who needs a new photo."""
    service = _service(config, app_name)
    try:
        done, missing = service.reenroll(time.time())
    finally:
        service.close()
    doc = {"reenrolled": done, "need_photo": missing}
    if not as_json:
        out.print(f"re-enrolled {len(done)} from kept photos: {', '.join(done) or '-'}")
    if missing:
        raise Failed("CE424", f"{len(missing)} need a new photo: {', '.join(missing)}", doc)
    if as_json:
        emit_json({"ok": True, **doc})


def audit_verify(
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Check the audit log's hash chain: exit 0 if intact, 1 naming the first bad line."""
    service = _service(config, app_name)
    try:
        verdict = service.verify_audit()
        path = service.audit.path
    finally:
        service.close()
    if not verdict.ok:
        where = f"line {verdict.line}" if verdict.line else "end of log"
        raise Failed(
            "CE423",
            f"{path}: TAMPERED at {where}: {verdict.problem} "
            f"({verdict.entries} entries verified before it)",
            {"log": str(path), "line": verdict.line, "entries": verdict.entries},
        )
    if as_json:
        emit_json({"ok": True, "log": str(path), "entries": verdict.entries})
    else:
        out.print(f"{path}: intact, {verdict.entries} entries")


# -- cards and PINs ----------------------------------------------------------------------------
def card_add(
    card: Annotated[str, typer.Argument(help="FACILITY:NUMBER as printed on the card (12:34567)")],
    person: Annotated[str, typer.Option("--id", help="The enrolled person")],
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Give a person a card (kept as a keyed digest, never the number)."""
    _give(config, app_name, person, "card", card, as_json)


def pin_set(
    person: Annotated[str, typer.Option("--id", help="The enrolled person")],
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Set a person's PIN: typed twice at a terminal (not shown), or one line on stdin. Never
    an argument: a command line is visible to every user and kept in shell history."""
    if sys.stdin.isatty():
        pin = typer.prompt("PIN", hide_input=True, confirmation_prompt=True)
    else:
        pin = sys.stdin.readline().strip()
    _give(config, app_name, person, "pin", pin, as_json)


def _give(
    config: Path, app_name: str | None, person: str, kind: str, value: str, as_json: bool
) -> None:
    """Give ``person`` a card or a PIN (never echoed)."""
    service = _service(config, app_name)
    try:
        if kind == "card":
            service.add_card(person, value, time.time())
        else:
            service.set_pin(person, value, time.time())
    finally:
        service.close()
    if as_json:
        emit_json({"ok": True, "id": person, "kind": kind})
    else:
        out.print(f"card enrolled for {person}" if kind == "card" else f"PIN set for {person}")


def _remover(kind: str) -> Callable[..., None]:
    def remove(
        person: Annotated[str, typer.Option("--id", help="The enrolled person")],
        config: Annotated[Path, _CONFIG],
        app_name: Annotated[str | None, _APP] = None,
        as_json: Annotated[bool, _JSON] = False,
    ) -> None:
        service = _service(config, app_name)
        try:
            gone = service.remove_credentials(person, kind, time.time())
        finally:
            service.close()
        if as_json:
            emit_json({"ok": True, "id": person, "kind": kind, "erased": gone})
        else:
            out.print(f"erased {gone} {kind}{'s' if gone != 1 else ''} of {person}")

    remove.__doc__ = f"Erase a person's {kind}s."
    return remove


# -- visitor passes -----------------------------------------------------------------------------
def _signing_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    readable_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        fail("CE630", f"{path} is not a PEM private key without a password")
    if not isinstance(key, Ed25519PrivateKey):
        fail("CE630", f"{path} is not an Ed25519 key")
    return key


def _when_arg(text: str) -> int:
    if text == "now":
        return int(time.time())
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail("CE428", f"--start {text!r}: expected 'now' or ISO 8601 (2026-03-01T09:00+08:00)")
    if when.tzinfo is None:
        fail("CE428", f"--start {text!r} has no UTC offset (add +08:00 or Z)")
    return int(when.timestamp())


def pass_issue(
    key: Annotated[Path, typer.Option(help="The issuer's Ed25519 private key (PEM)")],
    kid: Annotated[str, typer.Option(help="Key id the gate knows the key by (passes.keys)")],
    visit: Annotated[
        str | None, typer.Option(help="Visit id (a visitor: no name on the screen)")
    ] = None,
    person: Annotated[
        str | None, typer.Option("--person", help="Or an enrolled person's id")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Site file: gives --site and --gate")
    ] = None,
    app_name: Annotated[str | None, _APP] = None,
    site: Annotated[str | None, typer.Option(help="Site id (without --config)")] = None,
    gate: Annotated[str | None, typer.Option(help="Gate id (without --config)")] = None,
    start: Annotated[str, typer.Option(help="'now' or ISO 8601 with offset")] = "now",
    hours: Annotated[float, typer.Option(help="Valid this many hours from --start")] = 4.0,
    uses: Annotated[int, typer.Option(help="How many times it opens the gate")] = 1,
    png: Annotated[Path | None, typer.Option(help="Write the QR code here (PNG)")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Sign a visitor pass; print its text and write its QR code for the visitor's phone."""
    from protocols import visitor_pass

    signing = _signing_key(key)
    if config is not None:
        site, _, _, app = _app_config(config, app_name)
        gate = gate or app.pass_gate
    if site is None or gate is None:
        fail("CE428", "which gate? give --config (the gate's site file) or --site and --gate")
    if (visit is None) == (person is None):
        fail("CE428", "give one of --visit (a visitor) or --person (an enrolled person)")
    not_before = _when_arg(start)
    if not 0 < hours <= 31 * 24:
        fail("CE428", f"--hours {hours}: more than 0, at most 744 (the gate refuses longer)")
    try:
        p = visitor_pass.VisitorPass(
            kid=kid,
            site=site,
            gate=gate,
            subject=visit or person or "",
            not_before=not_before,
            not_after=not_before + round(hours * 3600),
            uses=uses,
            pass_id=secrets.token_bytes(8),
            person=person is not None,
        )
    except ValueError as err:
        fail("CE428", f"the pass: {err}")
    text = visitor_pass.issue(p, signing)
    if png is not None:
        _write_qr(text, png)
    doc = {
        "ok": True,
        "pass": text,
        "id": p.id_hex,
        "site": p.site,
        "gate": p.gate,
        "subject": p.subject,
        "valid_from": iso_time(p.not_before),
        "valid_until": iso_time(p.not_after),
        "uses": p.uses,
        "png": None if png is None else str(png),
    }
    if as_json:
        emit_json(doc)
        return
    out.print(text)
    out.print(
        f"pass {p.id_hex} for {p.subject} at {p.site}/{p.gate}, {p.uses} use(s), "
        f"{_when(p.not_before)} - {_when(p.not_after)}" + (f"; QR code: {png}" if png else "")
    )


def _write_qr(text: str, path: Path) -> None:
    import cv2

    params = cv2.QRCodeEncoder.Params()
    params.correction_level = cv2.QRCodeEncoder_CORRECT_LEVEL_M
    params.mode = cv2.QRCodeEncoder_MODE_ALPHANUMERIC
    modules = cv2.QRCodeEncoder.create(params).encode(text)
    scale = 8
    image = cv2.resize(modules, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    image = cv2.copyMakeBorder(image, 32, 32, 32, 32, cv2.BORDER_CONSTANT, value=255)
    if not cv2.imwrite(str(path), image):
        fail(codes.BAD_PATH, f"cannot write {path}")


def pass_check(
    config: Annotated[Path, _CONFIG],
    text: Annotated[str | None, typer.Argument(help="The pass's text (CEP1:...)")] = None,
    png: Annotated[Path | None, typer.Option(help="Or read it from a QR code image")] = None,
    app_name: Annotated[str | None, _APP] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Check a pass as the gate would (key, signature, gate, window, uses left); it is not used."""
    from protocols import visitor_pass
    from protocols.signed import public_key_from_raw, unb64url

    site, _, base_dir, app = _app_config(config, app_name)
    if png is not None:
        import cv2

        from edge.face_access.passes import PassScanner

        readable_file(png, "QR code image")
        image = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        text = None if image is None else PassScanner().scan(image)
        if text is None:
            fail("CE428", f"{png}: no cityedge pass found in the image")
    if text is None:
        fail("CE428", "give the pass's text or --png")
    keys = {k: public_key_from_raw(unb64url(v)) for k, v in app.passes.keys.items()}
    try:
        p = visitor_pass.verify(
            text,
            keys=keys,
            site=site,
            gate=app.pass_gate,
            now=time.time(),
            max_validity_s=int(app.passes.max_validity_h * 3600),
            skew_s=app.passes.skew_s,
        )
        used = 0
        ledger_path = app.store_path(base_dir) / app.passes.ledger
        if ledger_path.exists():
            from edge.face_access.passes import PassLedger

            ledger = PassLedger(ledger_path)
            try:
                used = ledger.used(p)
            finally:
                ledger.close()
        if used >= p.uses:
            raise visitor_pass.PassRefused(
                visitor_pass.PassRefusal.USED, f"used {used} of {p.uses} times"
            )
    except visitor_pass.PassRefused as err:
        raise Failed(
            "CE428", f"the gate refuses this pass: {err}", {"refusal": err.reason.value}
        ) from None
    if as_json:
        emit_json({"ok": True, "id": p.id_hex, "subject": p.subject, "uses_left": p.uses - used})
    else:
        out.print(f"valid: pass {p.id_hex} for {p.subject}, {p.uses - used} of {p.uses} uses left")


def register(app: typer.Typer) -> None:
    """``cityedge faces ...``."""
    faces = typer.Typer(
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        help="Gate access: enrol, list and erase people, their cards and PINs; issue visitor "
        "passes; verify the audit log.",
    )
    faces.command("enroll")(enroll)
    faces.command("list")(list_people)
    faces.command("delete")(delete)
    faces.command("reenroll")(reenroll)
    faces.command("audit-verify")(audit_verify)
    card = typer.Typer(no_args_is_help=True, help="Cards (Wiegand readers).")
    card.command("add")(card_add)
    card.command("remove")(_remover("card"))
    pin = typer.Typer(no_args_is_help=True, help="PINs (keypads).")
    pin.command("set")(pin_set)
    pin.command("remove")(_remover("pin"))
    passes = typer.Typer(no_args_is_help=True, help="Visitor passes (signed QR codes).")
    passes.command("issue")(pass_issue)
    passes.command("check")(pass_check)
    faces.add_typer(card, name="card")
    faces.add_typer(pin, name="pin")
    faces.add_typer(passes, name="pass")
    app.add_typer(faces, name="faces")
