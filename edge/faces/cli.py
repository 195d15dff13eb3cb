"""``cityedge faces enroll|list|delete|reenroll|audit-verify``: the face store, from a shell.

Every command reads the site file to find the ``face_access`` app (``--app`` when there are
several), its store folder and its secret, so the keys are the same as the gateway's. The running
gateway picks up changes within a second. Exit codes: 0 done; 1 bad input (no face in the
photo, unknown person, a tampered audit log); 3 could not run (models not built, store locked).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from edge.errors import ConfigError, EdgeError, ExitCode

if TYPE_CHECKING:
    from edge.faces.service import FaceService

out = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

_CONFIG = typer.Option("--config", "-c", help="Site YAML file with a face_access app")
_APP = typer.Option("--app", help="Name of the face_access app (when the site has several)")
_JSON = typer.Option("--json", help="Machine-readable output")


def _fail(message: str, code: int) -> typer.Exit:
    err_console.print(message, highlight=False, markup=False)
    return typer.Exit(code)


def _service(config: Path, app_name: str | None) -> FaceService:
    from edge.apps.face_access_config import FaceAccessConfig
    from edge.config.site import load_site
    from edge.faces.service import FaceService

    try:
        site = load_site(config)
    except ConfigError as err:
        raise _fail(err.for_humans(), ExitCode.INPUT) from None
    apps = [a for a in site.config.apps if isinstance(a, FaceAccessConfig)]
    if app_name is not None:
        apps = [a for a in apps if a.name == app_name]
    if len(apps) != 1:
        what = "no face_access app" if not apps else "several face_access apps: pick one with --app"
        raise _fail(f"{config}: {what}", ExitCode.INPUT)
    try:
        return FaceService(apps[0], site.config.site, site.config.gateway, site.check.base_dir)
    except EdgeError as err:
        raise _fail(err.for_humans(), ExitCode.RUNTIME) from None


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
    from edge.faces.photos import MAX_PHOTO_BYTES  # OpenCV: loaded when a photo is read

    try:
        with image.open("rb") as f:  # no further than the limit: a larger file is refused
            data = f.read(MAX_PHOTO_BYTES + 1)
    except OSError as err:
        raise _fail(f"cannot read {image}: {err.strerror}", ExitCode.INPUT) from None
    service = _service(config, app_name)
    try:
        done = service.enroll(person, name, data, time.time(), keep_image_days)
    except EdgeError as err:
        raise _fail(err.for_humans(), ExitCode.INPUT) from None
    finally:
        service.close()
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "id": done.person,
                    "replaced": done.replaced,
                    "image_kept_until": done.image_kept_until,
                }
            )
        )
    else:
        kept = (
            f"photo kept until {_when(done.image_kept_until)}"
            if done.image_kept_until
            else "photo discarded"
        )
        verb = "replaced" if done.replaced else "enrolled"
        out.print(f"{verb} {done.person} (face {done.face_px:.0f} px; {kept})", highlight=False)


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
    except EdgeError as err:
        raise _fail(err.for_humans(), ExitCode.INPUT) from None
    finally:
        service.close()
    if as_json:
        rows = [p.summary(model) for p in people]
        out.print_json(json.dumps({"model": model, "people": rows}, ensure_ascii=False))
        return
    for p in people:
        state = "STALE: re-enrol" if p.stale(model) else "ok"
        out.print(
            f"{p.id}\t{p.name}\t{state}\tenrolled {_when(p.enrolled_at)}\tphoto until {_when(p.image_expires_at)}",
            highlight=False,
            markup=False,
        )
    stale = sum(p.stale(model) for p in people)
    out.print(f"{len(people)} people, {stale} stale (current model {model})", highlight=False)


def delete(
    person: Annotated[str, typer.Argument(help="Person id to erase")],
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
) -> None:
    """Erase a person: template, name and any kept photo (audited)."""
    service = _service(config, app_name)
    try:
        gone = service.delete(person, time.time())
    finally:
        service.close()
    if not gone:
        raise _fail(f"no person {person!r} in the store (the attempt is audited)", ExitCode.INPUT)
    out.print(f"erased {person}", highlight=False)


def reenroll(
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
) -> None:
    """After a model change: rebuild stale templates from kept photos; list who needs a new photo."""
    service = _service(config, app_name)
    try:
        done, missing = service.reenroll(time.time())
    except EdgeError as err:
        raise _fail(err.for_humans(), ExitCode.INPUT) from None
    finally:
        service.close()
    out.print(
        f"re-enrolled {len(done)} from kept photos: {', '.join(done) or '-'}", highlight=False
    )
    if missing:
        out.print(
            f"{len(missing)} need a new photo ('cityedge faces enroll'): {', '.join(missing)}",
            highlight=False,
        )
        raise typer.Exit(ExitCode.INPUT)


def audit_verify(
    config: Annotated[Path, _CONFIG],
    app_name: Annotated[str | None, _APP] = None,
) -> None:
    """Check the audit log's hash chain: exit 0 if intact, 1 naming the first bad line."""
    service = _service(config, app_name)
    try:
        verdict = service.verify_audit()
        path = service.audit.path
    finally:
        service.close()
    if verdict.ok:
        out.print(f"{path}: intact, {verdict.entries} entries", highlight=False)
        return
    where = f"line {verdict.line}" if verdict.line else "end of log"
    raise _fail(
        f"{path}: TAMPERED at {where}: {verdict.problem} ({verdict.entries} entries verified before it)",
        ExitCode.INPUT,
    )


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
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
