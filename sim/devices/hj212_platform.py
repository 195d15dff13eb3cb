"""An environment bureau's HJ 212 platform, for tests and demos
(``cityedge simulate hj212-platform --port N [--control-port P]``).

It accepts stations' TCP connections, reads frames (:class:`protocols.hj212.FrameReader`),
checks them — CRC and length (bad frames are counted, and answered QnRtn 9 when their QN can be
read), PW and MN when configured (QnRtn 3, 4) — joins split packets, keeps the messages, and
answers every frame that asks for it with a data answer (9014, same QN).

Control API (JSON):

- ``GET  /state``    counts, stations connected, the last messages (decoded) and command answers
- ``POST /fault``    ``{"drop_answers": 2}`` (the next 2 frames get no answer),
  ``{"answer_delay_s": 1.5}``
- ``POST /command``  ``{"mn": "RIVER01", "cn": 1062, "cp": {"RtdInterval": "60"}}`` sends a
  request to that station (Flag 5, a new QN); its answers appear in ``/state``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from protocols import hj212
from protocols.hj212 import BadFrame, Cp, FrameReader, Packet

log = logging.getLogger(__name__)
_QN = re.compile(rb"QN=(\d{17})")


def packet_json(p: Packet) -> dict[str, Any]:
    return {
        "qn": p.qn,
        "st": p.st,
        "cn": p.cn,
        "mn": p.mn,
        "flag": p.flag,
        "data_time": p.cp.get("DataTime"),
        "values": p.cp.pollutants(),
        "cp": dict(p.cp.items()),
    }


@dataclass
class Platform:
    pw: str | None = None
    mns: frozenset[str] = frozenset()
    history: int = 10_000
    drop_answers: int = 0
    answer_delay_s: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.messages: deque[Packet] = deque(maxlen=self.history)
        self.answers: deque[Packet] = deque(maxlen=self.history)  # stations' answers to commands
        self.frames_by_qn: Counter[str] = Counter()
        self._seen: dict[tuple[str, str | None, int | None], None] = {}
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._reassembler = hj212.Reassembler()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.counts["connections"] += 1
        frames = FrameReader()
        try:
            while data := await reader.read(4096):
                frames.feed(data)
                for event in frames.events():
                    await self._event(event, writer)
        except (ConnectionError, OSError) as err:
            log.info("station %s: %s", peer, err)
        finally:
            for mn, w in list(self._writers.items()):
                if w is writer:
                    del self._writers[mn]
            writer.close()

    async def _event(self, event: Packet | BadFrame, writer: asyncio.StreamWriter) -> None:
        if isinstance(event, BadFrame):
            self.counts["bad_frames"] += 1
            m = _QN.search(event.skipped)
            if m and event.error.qn_rtn == 9:
                fake = Packet(st=91, cn=0, pw=self.pw or "0", mn="0", qn=m.group(1).decode())
                await self._send(writer, hj212.request_answer(fake, 9))
            log.warning("bad frame (%s): %r", event.error, event.skipped[:60])
            return
        p = event
        self.counts["frames"] += 1
        self._writers[p.mn] = writer
        if p.qn:
            self.frames_by_qn[p.qn] += 1
        if self.pw is not None and p.pw != self.pw:
            self.counts["refused"] += 1
            await self._send(writer, hj212.request_answer(p, 3))
            return
        if self.mns and p.mn not in self.mns:
            self.counts["refused"] += 1
            await self._send(writer, hj212.request_answer(p, 4))
            return
        if p.st == hj212.St.SYSTEM or (p.cn in (1011, 1061) and not p.wants_ack):
            self.answers.append(p)  # a station answering one of our commands
            return
        key = (p.mn, p.qn, p.pno)
        repeat = p.qn is not None and key in self._seen
        if p.qn is not None:
            self._seen[key] = None
            while len(self._seen) > self.history:
                self._seen.pop(next(iter(self._seen)))
        whole = None if repeat else self._reassembler.add(p)  # a resend is answered, not kept twice
        if whole is not None:
            self.messages.append(whole)
            self.counts[f"cn{whole.cn}"] += 1
        if p.wants_ack:
            if self.drop_answers > 0:
                self.drop_answers -= 1
                self.counts["answers_dropped"] += 1
                return
            if self.answer_delay_s:
                await asyncio.sleep(self.answer_delay_s)
            await self._send(writer, hj212.data_answer(p))

    async def _send(self, writer: asyncio.StreamWriter, p: Packet) -> None:
        writer.write(p.encode())
        await writer.drain()

    async def command(self, mn: str, cn: int, cp: dict[str, str]) -> Packet:
        writer = self._writers.get(mn)
        if writer is None:
            raise KeyError(mn)
        p = Packet(
            st=hj212.St.SYSTEM,
            cn=cn,
            pw=self.pw or "123456",
            mn=mn,
            qn=hj212.new_qn(datetime.now()),
            flag=hj212.make_flag(ack=True),
            cp=Cp.of(**cp),
        )
        await self._send(writer, p)
        return p

    # -- control API -------------------------------------------------------------------------

    def control_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/state", self._state)
        app.router.add_post("/fault", self._fault)
        app.router.add_post("/command", self._command)
        return app

    async def _state(self, request: web.Request) -> web.Response:
        last = int(request.query.get("last", "200"))
        return web.json_response(
            {
                "counts": dict(self.counts),
                "stations": sorted(self._writers),
                "resent_qns": sorted(q for q, n in self.frames_by_qn.items() if n > 1),
                "messages": [packet_json(p) for p in list(self.messages)[-last:]],
                "answers": [packet_json(p) for p in list(self.answers)[-last:]],
            }
        )

    async def _fault(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        self.drop_answers = int(body.get("drop_answers", self.drop_answers))
        self.answer_delay_s = float(body.get("answer_delay_s", self.answer_delay_s))
        return web.json_response(
            {"drop_answers": self.drop_answers, "answer_delay_s": self.answer_delay_s}
        )

    async def _command(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        try:
            p = await self.command(
                str(body["mn"]),
                int(body["cn"]),
                {str(k): str(v) for k, v in body.get("cp", {}).items()},
            )
        except KeyError:
            return web.json_response(
                {"error": f"station {body.get('mn')!r} is not connected"}, status=404
            )
        return web.json_response({"qn": p.qn})


async def serve(
    platform: Platform,
    host: str,
    port: int,
    control_port: int | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Accept stations on ``host:port`` until cancelled."""
    server = await asyncio.start_server(platform.handle, host, port)
    runner: web.AppRunner | None = None
    if control_port is not None:
        runner = web.AppRunner(platform.control_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, control_port).start()
    log.info(
        "HJ 212 platform on %s:%d%s",
        host,
        port,
        f", control on :{control_port}" if control_port else "",
    )
    if ready is not None:
        ready.set()
    try:
        async with server:
            await server.serve_forever()
    finally:
        if runner is not None:
            await runner.cleanup()
