"""The gate screen, the enrolment page and the local HTTP API of one ``face_access`` app.

Routes, under ``/faces/<app name>/`` on the gateway's HTTP endpoint:

- ``GET screen``            the gate terminal page (Chinese and English): the live decision;
- ``GET events``            Server-Sent Events feeding it (``granted`` with the name,
                            ``unknown``, ``spoof``, ``adjust`` with what to fix, ``idle``);
- ``GET enroll``            the enrolment page for property staff;
- ``GET api/people``        enrolled people (id, name, model, stale, image expiry);
- ``POST api/people``       enrol: multipart ``id``, ``name``, ``image``, ``keep_image_days``;
- ``DELETE api/people/ID``  erase a person.

The API needs ``Authorization: Bearer <admin_token>`` (RFC 6750; the scheme is required, its
case is not); with no ``admin_token`` configured it answers 403 (enrol with the CLI instead). A
header that is missing, of another scheme, not a well-formed token (non-ASCII, spaces) or the
wrong token is 401; nothing is compared unless both values are well formed
(:data:`edge.config.tokens.TOKEN_PATTERN`). The screen shows names, so the endpoint should listen
on the terminal's local network only (``http.host``).

An enrolment body is read part by part within limits: the image at most
:data:`~edge.face_access.photos.MAX_PHOTO_BYTES` (413 beyond it, read no further), other fields at
most 1 KB of UTF-8, at most 16 parts; a malformed body is a 400. The photo itself is checked by
its header before it is decoded (:mod:`edge.face_access.photos`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from edge.config.tokens import TOKEN_PATTERN, token_problem
from edge.errors import EdgeError
from edge.face_access.photos import MAX_PHOTO_BYTES
from protocols.limits import shown

if TYPE_CHECKING:
    from edge.face_access.app import FaceAccessApp

MAX_IMAGE_BYTES = MAX_PHOTO_BYTES
MAX_FIELD_BYTES = 1024
MAX_PARTS = 16
KEEPALIVE_S = 15.0
_CLOSED: dict[str, Any] = {"state": "closed"}


class ScreenFeed:
    """Fans the latest decision out to every open gate screen (bounded, newest wins)."""

    def __init__(self) -> None:
        self.current: dict[str, Any] = {"state": "idle"}
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=16)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(q)

    def publish(self, state: dict[str, Any]) -> None:
        self.current = state
        for q in self._subscribers:
            if q.full():  # a slow screen skips to the newest state
                q.get_nowait()
            q.put_nowait(state)

    def close(self) -> None:
        self.publish(_CLOSED)


class _BadBody(EdgeError):
    """An enrolment body refused while it was read (status and message for the reply)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    """A part's bytes, read no further than ``limit`` (413 beyond it)."""
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise _BadBody(413, f"part {shown(part.name)} is larger than {limit} bytes")
    return bytes(data)


async def _enrol_form(request: web.Request) -> tuple[dict[str, str], bytes | None]:
    """The text fields and the image of an enrolment body, within the limits."""
    fields: dict[str, str] = {}
    image: bytes | None = None
    try:
        reader = await request.multipart()
        parts = 0
        async for part in reader:
            parts += 1
            if parts > MAX_PARTS:
                raise _BadBody(400, f"more than {MAX_PARTS} parts")
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == "image":
                image = await _read_part(part, MAX_IMAGE_BYTES)
                continue
            raw = await _read_part(part, MAX_FIELD_BYTES)
            try:
                fields[part.name] = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise _BadBody(400, f"field {shown(part.name)} is not UTF-8 text") from None
    except (ValueError, AssertionError, LookupError, HttpProcessingError) as err:
        # aiohttp's words for bodies that are not multipart as RFC 7578 says
        raise _BadBody(400, f"malformed multipart body: {str(err)[:80]}") from err
    return fields, image


def _page(name: str) -> str:
    return resources.files("edge.face_access").joinpath("web", name).read_text(encoding="utf-8")


def face_routes(app: FaceAccessApp) -> list[web.RouteDef]:
    base = f"/faces/{app.name}"
    config = app.config

    def authorised(request: web.Request) -> None:
        expected = None if config.admin_token is None else config.admin_token.get_secret_value()
        if expected is None or token_problem(expected) is not None:
            raise web.HTTPForbidden(
                text="HTTP enrolment is off: set admin_token or use 'cityedge faces'"
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if (
            scheme.lower() != "bearer"
            or not TOKEN_PATTERN.fullmatch(given)
            or not hmac.compare_digest(given.encode("ascii"), expected.encode("ascii"))
        ):
            raise web.HTTPUnauthorized(
                text="wrong or missing token: send 'Authorization: Bearer <admin_token>'",
                headers={"WWW-Authenticate": 'Bearer realm="cityedge faces"'},
            )

    def problem(err: EdgeError, status: int = 400) -> web.Response:
        return web.json_response(
            {"error": err.message, "code": err.code, "hint": err.hint}, status=status
        )

    async def screen(_request: web.Request) -> web.Response:
        return web.Response(text=_page("screen.html"), content_type="text/html", charset="utf-8")

    async def enroll_page(_request: web.Request) -> web.Response:
        return web.Response(text=_page("enroll.html"), content_type="text/html", charset="utf-8")

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        q = app.screen.subscribe()
        try:
            state = app.screen.current
            while state is not _CLOSED:
                await resp.write(f"data: {json.dumps(state, ensure_ascii=False)}\n\n".encode())
                try:
                    state = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    state = app.screen.current
        except ConnectionResetError:
            pass
        finally:
            app.screen.unsubscribe(q)
        return resp

    async def people(request: web.Request) -> web.Response:
        authorised(request)
        model = app.service.embedding_model
        rows = await app.call(app.service.people)
        return web.json_response(
            {
                "model": model,
                "people": [p.summary(model) for p in rows],
            }
        )

    async def enroll(request: web.Request) -> web.Response:
        authorised(request)
        if not request.content_type.startswith("multipart/"):
            return web.json_response(
                {"error": "missing image: send multipart/form-data with id, name and image"},
                status=400,
            )
        try:
            fields, image = await _enrol_form(request)
        except _BadBody as err:
            return web.json_response({"error": str(err)}, status=err.status)
        missing = [f for f in ("id", "name") if not fields.get(f)] + ([] if image else ["image"])
        if missing:
            return web.json_response({"error": f"missing {', '.join(missing)}"}, status=400)
        days = fields.get("keep_image_days") or "0"
        if not (days.isascii() and days.isdigit()) or len(days) > 5:
            return web.json_response(
                {"error": "keep_image_days must be a whole number"}, status=400
            )
        keep = int(days)
        assert image is not None
        try:
            done = await app.call(
                app.service.enroll, fields["id"], fields["name"], image, app.ctx.clock.time(), keep
            )
        except EdgeError as err:
            return problem(err)
        await app.reload()
        return web.json_response(
            {
                "id": done.person,
                "replaced": done.replaced,
                "image_kept_until": done.image_kept_until,
                "face_px": round(done.face_px),
            },
            status=201,
        )

    async def delete(request: web.Request) -> web.Response:
        authorised(request)
        person = request.match_info["person"]
        gone = await app.call(app.service.delete, person, app.ctx.clock.time())
        await app.reload()
        if not gone:
            return web.json_response({"error": f"no person {person!r}"}, status=404)
        return web.json_response({"id": person, "deleted": True})

    return [
        web.get(f"{base}/screen", screen),
        web.get(f"{base}/events", events),
        web.get(f"{base}/enroll", enroll_page),
        web.get(f"{base}/api/people", people),
        web.post(f"{base}/api/people", enroll),
        web.delete(f"{base}/api/people/{{person}}", delete),
    ]
