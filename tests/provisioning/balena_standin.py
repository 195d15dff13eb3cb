"""A local stand-in for the four balena API endpoints ``provisioning.fleet`` uses.

This is the one named mock at the edge: the balena cloud API cannot be reached from the test
machines. It answers like the real API for: ``GET /actor/v1/whoami``, ``GET /v7/application``
(filtered by slug), ``POST /api-key/v1/`` and ``POST /device/register``; anything else is a 404,
and a wrong token gets a 401 (as the real API does).
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "good-token"
FLEETS = {"cityedge/riverside-gateways": 42}


class BalenaStandIn:
    def __init__(self) -> None:
        self.registered: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                path = urllib.parse.unquote(self.path)
                owner.requests.append((self.command, path.split("?")[0]))
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                auth = self.headers.get("Authorization", "")
                if path.startswith("/actor/v1/whoami"):
                    if auth != f"Bearer {TOKEN}":
                        self._reply(401, "Unauthorized")
                        return
                    self._reply(
                        200,
                        {
                            "id": 7,
                            "actorType": "user",
                            "actorTypeId": 3,
                            "username": "tech",
                            "email": "t@example.org",
                        },
                    )
                elif path.startswith("/v7/application") and self.command == "GET":
                    m = re.search(r"slug eq '([^']+)'", path)
                    fid = FLEETS.get(m.group(1)) if m else None
                    arch = {
                        "slug": "raspberrypi4-64",
                        "is_of__cpu_architecture": [{"slug": "aarch64"}],
                    }
                    self._reply(
                        200, {"d": [{"id": fid, "is_for__device_type": [arch]}] if fid else []}
                    )
                elif path == "/api-key/v1/" and self.command == "POST":
                    self._reply(200, "provisioning-key-1")
                elif path == "/device/register" and self.command == "POST":
                    if auth != "Bearer provisioning-key-1" or not isinstance(body, dict):
                        self._reply(401, "Unauthorized")
                        return
                    owner.registered.append(body)
                    self._reply(
                        201,
                        {
                            "id": 100 + len(owner.registered),
                            "uuid": body["uuid"],
                            "api_key": "device-key",
                        },
                    )
                else:
                    self._reply(404, "Not Found")

            do_GET = do_POST = do_PATCH = _handle  # noqa: N815 - http.server's names

            def log_message(self, *_a: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
