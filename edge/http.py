"""The gateway's local HTTP endpoint: ``/healthz`` and ``/metrics``.

- ``GET /healthz``  JSON with the state of every plug-in and device. ``status`` is ``ok``;
  ``degraded`` while the gateway works only in part, with one line per cause in ``reasons`` (a
  plug-in crashed and is starting again, an outbox's disk is full); or ``failed`` once a plug-in
  has failed for good. 200 unless failed, 503 then: restarting the gateway would not cure a
  degraded one. ``notices`` says what people should know though all works now (an outbox found
  damaged at start and set aside). A device being unavailable does not make the gateway
  unhealthy (that is news for the city brain, not a reason to restart the gateway).
- ``GET /metrics``  Prometheus text format (see :mod:`edge.metrics`).

Plug-ins add routes (the gate screen, the enrolment API) by having ``routes``
(:class:`~edge.plugin.ServesRoutes`); the gateway collects them when it builds the plug-ins.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from edge.config.site import HttpConfig

if TYPE_CHECKING:
    from edge.gateway import Gateway

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 2.0


class HttpEndpoint:
    def __init__(self, config: HttpConfig, gateway: Gateway) -> None:
        self.config = config
        self.gateway = gateway
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_routes(self.gateway.routes)
        return app

    async def healthz(self, _request: web.Request) -> web.Response:
        gw = self.gateway
        plugins = {
            name: {
                "role": st.role,
                "state": st.state.value,
                "restarts": st.restarts,
                "last_error": st.last_error,
            }
            for name, st in gw.supervisor.status.items()
        }
        healthy = gw.supervisor.healthy()
        reasons, notices = gw.health()
        body = {
            "status": "failed" if not healthy else "degraded" if reasons else "ok",
            "reasons": reasons,
            "notices": notices,
            "site": gw.config.site,
            "gateway": gw.config.gateway,
            "plugins": plugins,
            "devices": gw.device_health(),
        }
        return web.json_response(body, status=200 if healthy else 503)

    async def metrics(self, _request: web.Request) -> web.Response:
        resp = web.Response(body=self.gateway.metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def run(self) -> None:
        # a stop waits at most this for requests in progress (a gate screen's websocket would
        # otherwise hold it for aiohttp's default 60 s)
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else self.config.port
            log.info(
                "http endpoint on http://%s:%s (/healthz, /metrics)", self.config.host, self.port
            )
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
