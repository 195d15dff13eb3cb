"""The gate screen, the enrolment page and the local HTTP API of one ``face_access`` app.

Routes, under ``/faces/<app name>/`` on the gateway's HTTP endpoint:

- ``GET screen``            the gate terminal page (Chinese and English): the live decision, the
                            other ways in, the privacy notice; open it as ``screen#token=<token>``;
- ``GET events``            Server-Sent Events feeding it (see below); only for the terminal;
- ``GET enroll``            the enrolment page for property staff;
- ``GET api/people``        enrolled people (id, name, home, consent, model, stale, image
                            expiry, kinds of cards/PINs); ``?q=words`` searches id, name, home;
- ``POST api/people``       enrol: multipart ``id``, ``name``, ``image`` (optional: none = card
                            or PIN only), ``keep_image_days``, ``building``, ``unit``, ``room``,
                            ``consent_by`` (self|guardian), ``consent_ref``, ``minor``,
                            ``guardian``, ``replace``, ``allow_same_face``;
- ``DELETE api/people/ID``  erase a person (the page asks for confirmation first).

The API needs ``Authorization: Bearer <admin_token>`` (RFC 6750; the scheme is required, its
case is not); with no ``admin_token`` configured it answers 403 (enrol with the CLI instead). A
header that is missing, of another scheme, not a well-formed token (non-ASCII, spaces) or the
wrong token is 401; nothing is compared unless both values are well formed
(:data:`edge.config.tokens.TOKEN_PATTERN`). Errors are JSON ``{"error", "zh", "code", "hint"}``:
the page shows them in red, in Chinese and English. Enrolling an existing id without
``replace`` and a face that matches another person without ``allow_same_face`` are 409.

The events stream is for the gate terminal only: a browser on the gateway itself (loopback,
unless ``screen.loopback: false``) or one that shows a token of ``screen.tokens`` (the query's
``token``, or ``Authorization: Bearer``); anything else is 401. A decision goes to the screens
connected when it is made and is never sent again: a screen that connects later gets ``idle``,
and a message older than ``screen.show_s`` when its turn comes is dropped. A heartbeat every
:data:`HEARTBEAT_S` lets the page tell within 5 s that the gateway is gone. Messages (``state``):
``idle``, ``granted`` (``name`` masked per ``screen.names``, ``method``, ``show_s``),
``intercom`` (allowed, but the relay did not confirm the opening), ``unknown`` (with the other
ways in), ``spoof``, ``refused`` (``method``, ``why``: a pass's refusal, ``unknown`` or
``locked`` for a card or PIN), ``adjust`` (``problems``), ``challenge`` (``action``,
``seconds_left``: from the liveness check), ``closed``.

An enrolment body is read part by part within limits: the image at most
:data:`~edge.face_access.photos.MAX_PHOTO_BYTES` (413 beyond it, read no further), other fields at
most 1 KB of UTF-8, at most 16 parts; a malformed body is a 400. The photo itself is checked by
its header before it is decoded (:mod:`edge.face_access.photos`).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

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
MAX_QUERY_CHARS = 100
HEARTBEAT_S: Final = 1.5  # the page calls the gateway offline after 4 s without a message
SCREEN_QUEUE: Final = 16
_CLOSED: dict[str, Any] = {"state": "closed"}
_IDLE: dict[str, Any] = {"state": "idle"}
# Chinese for the errors the API gives, by code (the English message follows it on the page)
_ZH: Final = {
    "CE421": "无法登记",
    "CE425": "该编号已登记：如需替换，请勾选“替换”",  # noqa: RUF001 (Chinese punctuation)
    "CE426": "此人脸与已登记的其他人相同",
    "CE420": "人脸库无法打开",
    "CE400": "模型缺失",
}


def mask_name(name: str, mode: str = "masked") -> str | None:
    """The name as the gate screen shows it.

    ``masked`` (the default): each word keeps its first character and, from three characters
    on, its last; every other character becomes ``*`` — 张伟 → 张*, 张小伟 → 张*伟,
    欧阳娜娜 → 欧**娜, "Barack Obama" → "B****k O***a"; a one-character word stays. ``full``:
    the name as enrolled. ``none``: no name."""
    if mode == "none" or not name.strip():
        return None
    if mode == "full":
        return name

    def word(w: str) -> str:
        if len(w) <= 1:
            return w
        if len(w) == 2:
            return w[0] + "*"
        return w[0] + "*" * (len(w) - 2) + w[-1]

    return " ".join(word(w) for w in name.split())


class ScreenFeed:
    """Live messages to the open gate screens: nothing is kept, so nothing is replayed.

    Each subscriber has a bounded queue (:data:`SCREEN_QUEUE`, ``drop_oldest``: a slow screen
    skips to the newest message); each message carries the monotonic time it was published,
    so a writer can drop what has gone stale."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._subscribers: set[asyncio.Queue[tuple[float, dict[str, Any]]]] = set()
        self.closed = False

    def subscribe(self) -> asyncio.Queue[tuple[float, dict[str, Any]]]:
        q: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue(maxsize=SCREEN_QUEUE)
        if self.closed:
            q.put_nowait((self._now(), _CLOSED))
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[float, dict[str, Any]]]) -> None:
        self._subscribers.discard(q)

    @property
    def screens(self) -> int:
        return len(self._subscribers)

    def publish(self, state: dict[str, Any]) -> None:
        item = (self._now(), state)
        for q in self._subscribers:
            if q.full():  # a slow screen skips to the newest state
                q.get_nowait()
            q.put_nowait(item)

    def close(self) -> None:
        self.closed = True
        self.publish(_CLOSED)


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _sse(state: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(state, ensure_ascii=False)}\n\n".encode()


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


def _error(
    status: int, en: str, zh: str, code: str | None = None, hint: str | None = None, **more: Any
) -> web.Response:
    body: dict[str, Any] = {"error": en, "zh": zh, "code": code, "hint": hint, **more}
    return web.json_response(body, status=status)


def _flag(fields: dict[str, str], name: str) -> bool:
    return fields.get(name, "").lower() in ("1", "on", "true", "yes")


def face_routes(app: FaceAccessApp) -> list[web.RouteDef]:
    from edge.face_access.service import (
        EnrollmentError,
        PersonExists,
        SameFace,
        make_consent,
        make_home,
    )

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

    def terminal(request: web.Request) -> None:
        """The events stream is the terminal's: loopback (when allowed) or a screen token."""
        if config.screen.loopback and _is_loopback(request.remote):
            return
        given = request.query.get("token", "")
        scheme, _, header = request.headers.get("Authorization", "").partition(" ")
        if not given and scheme.lower() == "bearer":
            given = header
        ok = False
        if TOKEN_PATTERN.fullmatch(given):
            for token in config.screen.tokens.values():  # every one compared: no early exit
                ok |= hmac.compare_digest(
                    given.encode("ascii"), token.get_secret_value().encode("ascii")
                )
        if not ok:
            raise web.HTTPUnauthorized(
                text="this stream is for the gate terminal: open the screen with its token "
                "(screen#token=...; screen.tokens in the site file)",
                headers={"WWW-Authenticate": 'Bearer realm="cityedge gate screen"'},
            )

    def problem(err: EdgeError, status: int = 400, **more: Any) -> web.Response:
        return _error(
            status, err.message, _ZH.get(err.code, "操作失败"), err.code, err.hint, **more
        )

    async def screen(_request: web.Request) -> web.Response:
        return web.Response(text=_page("screen.html"), content_type="text/html", charset="utf-8")

    async def enroll_page(_request: web.Request) -> web.Response:
        return web.Response(text=_page("enroll.html"), content_type="text/html", charset="utf-8")

    async def events(request: web.Request) -> web.StreamResponse:
        terminal(request)
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await resp.prepare(request)
        q = app.screen.subscribe()
        max_age = config.screen.show_s
        try:
            await resp.write(b"retry: 1000\n\n")  # reconnect within a second of a restart
            await resp.write(_sse(_IDLE))  # a screen that connects sees no earlier decision
            while True:
                try:
                    published, state = await asyncio.wait_for(q.get(), HEARTBEAT_S)
                except TimeoutError:
                    await resp.write(_sse({"at_ms": round(time.time() * 1000)}, "heartbeat"))
                    continue
                if state is _CLOSED:
                    await resp.write(_sse(state))
                    break
                if time.monotonic() - published > max_age:
                    continue  # gone stale in the queue: never shown late
                await resp.write(_sse(state))
        except ConnectionResetError:
            pass
        finally:
            app.screen.unsubscribe(q)
        return resp

    async def people(request: web.Request) -> web.Response:
        authorised(request)
        query = request.query.get("q", "")[:MAX_QUERY_CHARS]
        model = app.service.embedding_model
        rows = await app.call(app.service.people, query)
        return web.json_response(
            {
                "model": model,
                "query": query,
                "people": [p.summary(model) for p in rows],
            }
        )

    async def enroll(request: web.Request) -> web.Response:
        authorised(request)
        if not request.content_type.startswith("multipart/"):
            return _error(
                400,
                "send multipart/form-data with id, name, consent and (optionally) image",
                "表单格式有误",
            )
        try:
            fields, image = await _enrol_form(request)
        except _BadBody as err:
            zh = "照片太大" if err.status == 413 else "表单格式有误"
            return _error(err.status, str(err), zh)
        missing = [f for f in ("id", "name") if not fields.get(f)]
        if missing:
            return _error(400, f"missing {', '.join(missing)}", "请填写编号和姓名")
        if image is None and not _flag(fields, "no_face"):
            return _error(
                400,
                "missing image: send a photo, or no_face=on for a person who uses a card or PIN",
                "缺少照片：请上传照片，或勾选“不登记人脸（仅刷卡/密码）”",  # noqa: RUF001
            )
        days = fields.get("keep_image_days") or "0"
        if not (days.isascii() and days.isdigit()) or len(days) > 5:
            return _error(400, "keep_image_days must be a whole number", "照片保留天数须为整数")
        now = app.ctx.clock.time()
        try:
            consent = make_consent(
                fields.get("consent_by") or "self",
                minor=_flag(fields, "minor"),
                guardian=fields.get("guardian"),
                reference=fields.get("consent_ref", ""),
                now=now,
            )
            home = make_home(
                fields.get("building", ""), fields.get("unit", ""), fields.get("room", "")
            )
            done = await app.call(
                app.service.enroll,
                fields["id"],
                fields["name"],
                image,
                now,
                int(days),
                consent=consent,
                home=home,
                replace=_flag(fields, "replace"),
                allow_same_face=_flag(fields, "allow_same_face"),
            )
        except SameFace as err:
            matches = [{"id": p, "distance": round(d, 3)} for p, d in err.matches]
            return problem(err, 409, same_face=matches)
        except PersonExists as err:
            return problem(err, 409)
        except EnrollmentError as err:
            if "consent" in err.message or "guardian" in err.message:
                zh = "须记录本人的单独同意（未满14岁须监护人同意）"  # noqa: RUF001
                return _error(400, err.message, zh, err.code, err.hint)
            return problem(err)
        except EdgeError as err:
            return problem(err)
        await app.reload()
        return web.json_response(
            {
                "id": done.person,
                "replaced": done.replaced,
                "face": done.face_px is not None,
                "image_kept_until": done.image_kept_until,
                "face_px": None if done.face_px is None else round(done.face_px),
                "same_face": [{"id": p, "distance": round(d, 3)} for p, d in done.same_face],
            },
            status=201,
        )

    async def delete(request: web.Request) -> web.Response:
        authorised(request)
        person = request.match_info["person"]
        gone = await app.call(app.service.delete, person, app.ctx.clock.time())
        await app.reload()
        if not gone:
            return _error(404, f"no person {person!r}", "没有这个编号", "CE422")
        return web.json_response({"id": person, "deleted": True})

    return [
        web.get(f"{base}/screen", screen),
        web.get(f"{base}/events", events),
        web.get(f"{base}/enroll", enroll_page),
        web.get(f"{base}/api/people", people),
        web.post(f"{base}/api/people", enroll),
        web.delete(f"{base}/api/people/{{person}}", delete),
    ]
