"""``cityedge faces enroll|list|delete|reenroll|audit-verify``: the face store, from a shell.

Every command reads the site file to find the ``face_access`` app (``--app`` when there are
several), its store folder and its secret, so the keys are the same as the gateway's. The running
gateway picks up changes within a second. Exit codes: 0 done; 1 bad input (CE421 no face in the
photo, CE422 unknown person, CE423 a tampered audit log, CE424 people need a new photo); 3 could
not run (CE400 models not built). Every command takes ``--json`` (times as ISO 8601 UTC).
"""

from __future__ import annotations

import time
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
    from edge.face_access.service import FaceService

out = console()

_CONFIG = typer.Option("--config", "-c", help="Site YAML file with a face_access app")
_APP = typer.Option("--app", help="Name of the face_access app (when the site has several)")
_JSON = typer.Option("--json", help="Machine-readable output (JSON on stdout)")


def _service(config: Path, app_name: str | None) -> FaceService:
    from edge.face_access.config import FaceAccessConfig
    from edge.face_access.service import FaceService

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
    return FaceService(apps[0], site.config.site, site.config.gateway, site.check.base_dir)


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def enroll(
    image: Annotated[Path, typer.Argument(help="Photo of the person (JPEG/PNG, one face)")],
    person: Annotated[str, typer.Option("--id", help="Person id (letters, digits, _ . -)")],
    name: Annotated[str, typer.Option("--name", help="Name shown on the gate screen")],
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
    keep_image_days: Annotated[
        int,
        typer.Option(
            help="Keep the photo (encrypted) this many days for re-enrolment; 0 = discard"
        ),
    ] = 0,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Enrol (or replace) a person from a photo; only the encrypted template is kept."""
    from edge.face_access.photos import MAX_PHOTO_BYTES  # OpenCV: loaded when a photo is read

    readable_file(image, "photo")
    try:
        with image.open("rb") as f:  # no further than the limit: a larger file is refused
            data = f.read(MAX_PHOTO_BYTES + 1)
    except OSError as err:
        fail(codes.BAD_PATH, f"cannot read photo {image}: {err.strerror}")
    service = _service(config, app_name)
    try:
        done = service.enroll(person, name, data, time.time(), keep_image_days)
    finally:
        service.close()
    if as_json:
        emit_json(
            {
                "ok": True,
                "id": done.person,
                "replaced": done.replaced,
                "image_kept_until": iso_time(done.image_kept_until),
            }
        )
    else:
        kept = (
            f"photo kept until {_when(done.image_kept_until)}"
            if done.image_kept_until
            else "photo discarded"
        )
        verb = "replaced" if done.replaced else "enrolled"
        out.print(f"{verb} {done.person} (face {done.face_px:.0f} px; {kept})")


def list_people(
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """List enrolled people; 'stale' ones were enrolled with another model and need re-enrolment."""
    service = _service(config, app_name)
    try:
        model = service.embedding_model
        people = service.people()
    finally:
        service.close()
    if as_json:
        rows = [
            p.summary(model)
            | {
                "enrolled_at": iso_time(p.enrolled_at),
                "image_expires_at": iso_time(p.image_expires_at),
            }
            for p in people
        ]
        emit_json({"ok": True, "model": model, "people": rows})
        return
    for p in people:
        state = "STALE: re-enrol" if p.stale(model) else "ok"
        out.print(
            f"{p.id}\t{p.name}\t{state}\tenrolled {_when(p.enrolled_at)}\tphoto until {_when(p.image_expires_at)}"
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


def register(app: typer.Typer) -> None:
    """``cityedge faces ...``."""
    faces = typer.Typer(
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        help="Face access: enrol, list and erase people; verify the audit log.",
    )
    faces.command("enroll")(enroll)
    faces.command("list")(list_people)
    faces.command("delete")(delete)
    faces.command("reenroll")(reenroll)
    faces.command("audit-verify")(audit_verify)
    app.add_typer(faces, name="faces")
