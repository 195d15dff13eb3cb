"""The operator's page: routes, sign-in, the JSON API and the live stream.

Routes (every one but the sign-in page, its assets and ``/healthz`` needs a signed-in session;
without one a page is a 303 to ``/login`` and an API call or the stream is a 401 — no name and
no data is shown or streamed before sign-in)::

    GET  /login                 the sign-in form (Chinese and English)
    POST /login                 name, password -> session cookie, 303 to /
    POST /logout                ends the session (CSRF token in X-CSRF-Token or the form)
    GET  /                      the page (plain HTML/JS/CSS, package data, no CDN)
    GET  /static/{file}         its script and style sheet
    GET  /events                Server-Sent Events: "changed" with the sections to fetch again
    GET  /api/me                the operator's name and CSRF token
    GET  /api/overview          counts: gateways online/offline, open alarms, dead letters, gaps
    GET  /api/gateways          ?state=online|offline&q=text&offset=&limit=
    GET  /api/alarms/open       open alarms, most urgent first
    GET  /api/alarms/history    ?site=&gateway=&limit=
    GET  /api/dead-letters      ?limit=
    GET  /api/gaps              ?limit=
    GET  /api/points            ?site=&gateway= : devices' points seen lately
    GET  /api/series            ?site=&gateway=&device=&point=&minutes=&until= (ISO 8601)
    GET  /healthz               {"ok": ...}: the store answers (no data)

The page is read-only: it has no action that changes anything, and its database connection
refuses writes (:mod:`cloud_bridge.citybrain.store.operator_common`).

CSRF: the cookie is ``SameSite=Strict`` and ``HttpOnly`` (``Secure`` and the ``__Host-``
prefix with TLS); every POST must come from the page's own origin (``Origin``, else
``Sec-Fetch-Site``), and a POST after sign-in also carries the session's CSRF token. Every
response forbids framing and inline script (Content-Security-Policy) and caching of data.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final

from aiohttp import web

from cloud_bridge.citybrain.operator.auth import (
    MAX_PASSWORD,
    NAME_PATTERN,
    Accounts,
    FailureLimiter,
    Session,
    Sessions,
)
from cloud_bridge.citybrain.operator.feed import Feed
from cloud_bridge.citybrain.store import StoreError
from cloud_bridge.citybrain.store.operator_common import OperatorReads, StateFilter, to_json

log = logging.getLogger(__name__)

KEEPALIVE_S: Final = 15.0
MAX_FORM_BYTES: Final = 4096
MAX_WINDOW_MIN: Final = 31 * 24 * 60
STATIC: Final = {"operator.js": "text/javascript", "operator.css": "text/css"}
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class PageOptions:
    tls: bool = False
    query_timeout_s: float = 10.0


def _asset(name: str) -> str:
    return (
        resources.files("cloud_bridge.citybrain.operator")
        .joinpath("web", name)
        .read_text(encoding="utf-8")
    )


def _cookie_name(tls: bool) -> str:
    # __Host-: only over HTTPS, for this host and path / alone (RFC 6265bis 4.1.3.2)
    return "__Host-cityedge-operator" if tls else "cityedge-operator"


def _problem(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _ident(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not _IDENT.match(value):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name}: 1-64 letters, digits, '_', '.', '-'"}),
            content_type="application/json",
        )
    return value


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not lo <= int(raw) <= hi:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name}: a whole number from {lo} to {hi}"}),
            content_type="application/json",
        )
    return int(raw)


def same_origin(request: web.Request) -> bool:
    """Whether a POST comes from this page's own origin (RFC 6454 Origin, else Fetch
    Metadata's Sec-Fetch-Site); a client that sends neither (not a browser) is not a CSRF
    vector; an opaque origin without Fetch Metadata is refused."""
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if origin is not None and origin != "null":
        return origin == f"{request.scheme}://{request.host}"
    if site is not None:  # an opaque origin ("null": a sandbox, some referrer policies)
        return site in ("same-origin", "none")
    return origin is None


def make_app(
    reads: OperatorReads,
    feed: Feed,
    accounts: Accounts,
    sessions: Sessions,
    limiter: FailureLimiter,
    options: PageOptions = PageOptions(),
) -> web.Application:
    cookie = _cookie_name(options.tls)

    @web.middleware
    async def headers(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            resp = exc
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        if not request.path.startswith("/static/"):
            resp.headers.setdefault("Cache-Control", "no-store")
        if isinstance(resp, web.HTTPException):
            raise resp
        return resp

    app = web.Application(middlewares=[headers], client_max_size=MAX_FORM_BYTES)

    def session_of(request: web.Request) -> Session | None:
        return sessions.get(request.cookies.get(cookie))

    def signed_in(request: web.Request) -> Session:
        """The request's session; 401 (API, stream) without one."""
        session = session_of(request)
        if session is None:
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "sign in first", "login": "/login"}),
                content_type="application/json",
            )
        return session

    async def answer(query: Awaitable[Any]) -> web.Response:
        try:
            async with asyncio.timeout(options.query_timeout_s):
                data = await query
        except (StoreError, TimeoutError) as err:
            log.warning("operator page: a query failed: %s", err or "timed out")
            return _problem(503, "the database does not answer; try again")
        return web.json_response(
            {"server_time": datetime.now(UTC).isoformat(), "data": data},
            dumps=lambda v: json.dumps(v, ensure_ascii=False),
        )

    def login_page(message: str = "", status: int = 200, **hdrs: str) -> web.Response:
        note = f'<p id="message" role="alert">{html.escape(message)}</p>' if message else ""
        return web.Response(
            text=_asset("login.html").replace("<!--message-->", note),
            content_type="text/html",
            charset="utf-8",
            status=status,
            headers=hdrs or None,
        )

    async def get_login(request: web.Request) -> web.Response:
        if session_of(request) is not None:
            raise web.HTTPSeeOther("/")
        return login_page()

    async def post_login(request: web.Request) -> web.Response:
        if not same_origin(request):
            return _problem(403, "cross-site sign-in refused")
        client = request.remote or "unknown"
        try:
            form = await request.post()
        except (ValueError, web.HTTPRequestEntityTooLarge):
            return login_page("表单无效 · The form could not be read", 400)
        name, password = form.get("name"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return login_page("请输入名称和密码 · Enter your name and password", 400)
        name = name.strip()
        keys = [f"addr:{client}"] + ([f"name:{name}"] if NAME_PATTERN.match(name) else [])
        wait = limiter.retry_after(*keys)
        if wait > 0:
            seconds = max(1, int(wait + 0.999))
            log.warning("operator page: sign-in from %s limited (%d s)", client, seconds)
            return login_page(
                f"尝试次数过多 · 请 {seconds} 秒后再试 · Too many attempts: try again in {seconds} s",
                429,
                **{"Retry-After": str(seconds)},
            )
        ok = (
            NAME_PATTERN.match(name) is not None
            and len(password.encode()) <= MAX_PASSWORD
            and await accounts.verify(name, password)
        )
        if not ok:
            limiter.failed(*keys)
            log.warning("operator page: failed sign-in from %s", client)
            return login_page("名称或密码错误 · Wrong name or password", 401)
        token, _session = sessions.create(name)
        log.info("operator page: %s signed in from %s", name, client)
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(
            cookie,
            token,
            path="/",
            httponly=True,
            secure=options.tls,
            samesite="Strict",
            max_age=int(sessions.max_age_s),
        )
        raise resp

    async def post_logout(request: web.Request) -> web.Response:
        session = signed_in(request)
        given = request.headers.get("X-CSRF-Token")
        if given is None:
            try:
                field = (await request.post()).get("csrf")
            except ValueError:
                field = None
            given = field if isinstance(field, str) else ""
        if not same_origin(request) or not hmac.compare_digest(
            given.encode(), session.csrf.encode()
        ):
            return _problem(403, "missing or wrong CSRF token")
        sessions.end(request.cookies.get(cookie))
        feed.wake_all()  # its open streams end now
        log.info("operator page: %s signed out", session.name)
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(cookie, path="/", secure=options.tls, samesite="Strict")
        raise resp

    async def index(request: web.Request) -> web.Response:
        if session_of(request) is None:
            raise web.HTTPSeeOther("/login")
        return web.Response(text=_asset("index.html"), content_type="text/html", charset="utf-8")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(
            text=_asset(name),
            content_type=STATIC[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def healthz(_request: web.Request) -> web.Response:
        ok = feed.healthy
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def me(request: web.Request) -> web.Response:
        session = signed_in(request)

        async def data() -> dict[str, Any]:
            return {"name": session.name, "csrf": session.csrf}

        return await answer(data())

    async def overview(request: web.Request) -> web.Response:
        signed_in(request)

        async def data() -> Any:
            return to_json(await reads.overview())

        return await answer(data())

    async def gateways(request: web.Request) -> web.Response:
        signed_in(request)
        states: dict[str, StateFilter] = {"": None, "online": "online", "offline": "offline"}
        if request.query.get("state", "") not in states:
            return _problem(400, "state: online or offline")
        state = states[request.query.get("state", "")]
        search = request.query.get("q", "")[:64]
        offset = _int(request, "offset", 0, 0, 10**8)
        limit = _int(request, "limit", 100, 1, 500)

        async def data() -> Any:
            page = await reads.gateways(state=state, search=search, offset=offset, limit=limit)
            return {"total": page.total, "offset": page.offset, "rows": to_json(page.rows)}

        return await answer(data())

    async def open_alarms(request: web.Request) -> web.Response:
        signed_in(request)
        limit = _int(request, "limit", 500, 1, 1000)

        async def data() -> Any:
            return to_json(await reads.open_alarms(limit=limit))

        return await answer(data())

    async def alarm_history(request: web.Request) -> web.Response:
        signed_in(request)
        limit = _int(request, "limit", 100, 1, 1000)
        site = gateway = None
        if request.query.get("site") or request.query.get("gateway"):
            site, gateway = _ident(request, "site"), _ident(request, "gateway")

        async def data() -> Any:
            return to_json(await reads.alarm_history(site=site, gateway=gateway, limit=limit))

        return await answer(data())

    async def dead_letters(request: web.Request) -> web.Response:
        signed_in(request)
        limit = _int(request, "limit", 100, 1, 1000)

        async def data() -> Any:
            total, rows = await reads.dead_letters(limit=limit)
            return {"total": total, "rows": to_json(rows)}

        return await answer(data())

    async def gaps(request: web.Request) -> web.Response:
        signed_in(request)
        limit = _int(request, "limit", 200, 1, 1000)

        async def data() -> Any:
            return to_json(await reads.gaps(limit=limit))

        return await answer(data())

    async def points(request: web.Request) -> web.Response:
        signed_in(request)
        site, gateway = _ident(request, "site"), _ident(request, "gateway")

        async def data() -> Any:
            return to_json(await reads.points(site, gateway))

        return await answer(data())

    async def series(request: web.Request) -> web.Response:
        signed_in(request)
        site, gateway = _ident(request, "site"), _ident(request, "gateway")
        device, point = _ident(request, "device"), _ident(request, "point")
        minutes = _int(request, "minutes", 60, 1, MAX_WINDOW_MIN)
        buckets = _int(request, "buckets", 300, 1, 1000)
        until = datetime.now(UTC)
        if request.query.get("until"):
            try:
                until = datetime.fromisoformat(request.query["until"][:40])
            except ValueError:
                return _problem(400, "until: an ISO 8601 time, e.g. 2026-11-24T08:00:00+00:00")
            if until.tzinfo is None:
                return _problem(400, "until: give the UTC offset, e.g. +00:00")
        since = until - timedelta(minutes=minutes)

        async def data() -> Any:
            return to_json(await reads.series(site, gateway, device, point, since, until, buckets))

        return await answer(data())

    async def events(request: web.Request) -> web.StreamResponse:
        session = signed_in(request)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        listener = feed.listen()
        try:
            await resp.write(b"retry: 2000\nevent: hello\ndata: {}\n\n")
            while True:
                news = await listener.next(KEEPALIVE_S)
                if listener.closed:
                    break
                if not sessions.alive(session):
                    await resp.write(b"event: signed-out\ndata: {}\n\n")
                    break
                if news:
                    data = json.dumps({"sections": sorted(news)})
                    await resp.write(f"event: changed\ndata: {data}\n\n".encode())
                else:
                    await resp.write(b": keepalive\n\n")
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            feed.leave(listener)
        return resp

    app.add_routes(
        [
            web.get("/login", get_login),
            web.post("/login", post_login),
            web.post("/logout", post_logout),
            web.get("/", index),
            web.get("/static/{name}", static),
            web.get("/healthz", healthz),
            web.get("/events", events),
            web.get("/api/me", me),
            web.get("/api/overview", overview),
            web.get("/api/gateways", gateways),
            web.get("/api/alarms/open", open_alarms),
            web.get("/api/alarms/history", alarm_history),
            web.get("/api/dead-letters", dead_letters),
            web.get("/api/gaps", gaps),
            web.get("/api/points", points),
            web.get("/api/series", series),
        ]
    )
    return app
