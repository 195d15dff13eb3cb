"""A card reader and keypad behind a Wiegand-to-RS-485 interface, simulated
(``cityedge simulate card-reader``): it sends the frames of :mod:`protocols.wiegand`, one per
line, to every client of its TCP port (a serial device server) or down a serial line
(``--serial``, e.g. one end of a ``socat`` pty pair).

Nothing is swiped by itself: the control API presents what a person would.

- ``POST /card``  ``{"card": "12:34567"}`` (or ``"facility"``, ``"number"``; ``"bits"``: 26|34)
- ``POST /keys``  ``{"keys": "480613#", "bits": 4|8, "gap_s": 0.1}``: one frame per key
- ``POST /line``  ``{"line": "..."}``: any line as is (noise, a bad parity bit, garbage)
- ``GET  /state`` clients connected and frames sent
"""

from __future__ import annotations

import asyncio
import logging
import os
import termios
import tty
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from protocols import wiegand

log = logging.getLogger(__name__)


@dataclass
class ReaderSim:
    clients: set[asyncio.StreamWriter] = field(default_factory=set)
    serial_fd: int | None = None
    sent: int = 0

    async def send(self, line: bytes) -> None:
        if self.serial_fd is not None:
            os.write(self.serial_fd, line)
        for w in list(self.clients):
            try:
                w.write(line)
                await asyncio.wait_for(w.drain(), 2)
            except (OSError, TimeoutError):
                self.clients.discard(w)
        self.sent += 1

    async def on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        log.info("client connected (%d)", len(self.clients))
        try:
            while await reader.read(256):  # the interface only talks; this waits for the end
                pass
        except OSError:
            pass
        finally:
            self.clients.discard(writer)
            writer.close()

    # -- control API -------------------------------------------------------------------------
    def control_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/card", self._card)
        app.router.add_post("/keys", self._keys)
        app.router.add_post("/line", self._line)
        app.router.add_get("/state", self._state)
        return app

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="send a JSON object") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="send a JSON object")
        return body

    async def _card(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        bits = body.get("bits", 26)
        try:
            if "card" in body:
                card = wiegand.parse_card(str(body["card"]))
                facility, number = card.facility, card.number
            else:
                facility, number = int(body["facility"]), int(body["number"])
            value = wiegand.encode_card(facility, number, bits)
        except (ValueError, KeyError, TypeError) as err:
            raise web.HTTPBadRequest(text=f"bad card: {err}") from None
        await self.send(wiegand.frame_line(bits, value))
        return web.json_response({"sent": 1})

    async def _keys(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        bits, gap = body.get("bits", 4), float(body.get("gap_s", 0.05))
        try:
            values = [wiegand.encode_key(k, bits) for k in str(body["keys"])]
        except (ValueError, KeyError) as err:
            raise web.HTTPBadRequest(text=f"bad keys: {err}") from None
        for value in values:
            await self.send(wiegand.frame_line(bits, value))
            await asyncio.sleep(gap)
        return web.json_response({"sent": len(values)})

    async def _line(self, request: web.Request) -> web.Response:
        """A line of the operator's choosing (noise, a bad frame); ``raw_hex``: bytes sent as
        they are, no line end added (binary noise, a line cut short, an over-long line)."""
        body = await self._json(request)
        if "raw_hex" in body:
            try:
                data = bytes.fromhex(str(body["raw_hex"]))
            except ValueError:
                raise web.HTTPBadRequest(text="raw_hex: hexadecimal digits, two per byte") from None
        else:
            data = str(body.get("line", "")).encode("utf-8", "replace") + b"\r\n"
        await self.send(data)
        return web.json_response({"sent": 1})

    async def _state(self, _request: web.Request) -> web.Response:
        return web.json_response({"clients": len(self.clients), "sent": self.sent})


def open_serial(device: str, baudrate: int) -> int:
    fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    speed = getattr(termios, f"B{baudrate}")
    attrs[4] = attrs[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


async def serve(
    host: str,
    port: int | None,
    control_port: int,
    serial: str | None = None,
    baudrate: int = 9600,
) -> None:
    sim = ReaderSim()
    if serial is not None:
        sim.serial_fd = open_serial(serial, baudrate)
    runner = web.AppRunner(sim.control_app(), access_log=None)
    await runner.setup()
    server = None
    try:
        if port is not None:
            server = await asyncio.start_server(sim.on_client, host, port)
        await web.TCPSite(runner, host, control_port).start()
        where = f"serial {serial}" if serial else f"{host}:{port}"
        log.info("simulating card-reader on %s (control API on port %d)", where, control_port)
        print(f"simulating card-reader on {where}; control API http://{host}:{control_port}")
        await asyncio.Event().wait()
    finally:
        if server is not None:
            server.close()
        for w in sim.clients:  # a stopped interface drops its connections
            w.close()
        await runner.cleanup()
        if sim.serial_fd is not None:
            os.close(sim.serial_fd)
