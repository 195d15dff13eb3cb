"""A CoAP air-quality sensor (``cityedge simulate coap-air --port N``), served with aiocoap.

Values come from the ``air-station`` profile's simulated behaviour (the same drift as the
Modbus simulator). Resources:

- ``/air`` — every quantity, observable (a notification per ``period_s``); Content-Format by
  the request's Accept: SenML JSON (110, the default), SenML CBOR (112) or a plain JSON
  object (50); anything else is 4.06 Not Acceptable.
- ``/air/<point>`` — one quantity as text (``35.2``).
- ``/air/history`` — the last ``history`` samples as one SenML JSON pack, several kilobytes:
  clients must use block-wise transfer (RFC 7959).
- ``/.well-known/core`` — the resource list (RFC 6690).

An aiocoap server keeps each request's message and a timer for EXCHANGE_LIFETIME (~247 s) to
answer duplicates; at benchmark rates that is hundreds of megabytes. The simulator keeps only
the last ``dedup_window`` exchanges instead (:func:`bound_deduplication`): enough on loopback,
where duplicates arrive within seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import types
from collections import OrderedDict, deque
from typing import Any

import aiocoap
from aiocoap import resource
from aiocoap.messagemanager import MessageManager

from edge.clock import Clock, SystemClock
from edge.profiles import ProfileLibrary
from protocols import senml
from sim.devices.modbus_device import Drift

log = logging.getLogger(__name__)

POINTS = ("pm2_5", "pm10", "no2", "so2", "o3", "co", "temperature", "humidity")


class AirSensor:
    """Simulated values, sampled every ``period_s`` by :meth:`tick`."""

    def __init__(
        self, name: str = "air-1", seed: int = 1, clock: Clock | None = None, history: int = 120
    ) -> None:
        self.name = name
        self.clock = clock or SystemClock()
        profile = ProfileLibrary().load("air-station")
        rng = random.Random(seed)
        self.drifts = {
            p.name: Drift(p.spec(), p.sim, random.Random(rng.random()))
            for p in profile.points
            if p.name in POINTS and p.sim is not None
        }
        self.units = {p.name: p.unit for p in profile.points}
        self.t0 = self.clock.monotonic()
        self.current: dict[str, float] = {}
        self.history: deque[tuple[float, dict[str, float]]] = deque(maxlen=history)
        self.tick()

    def tick(self) -> None:
        t = self.clock.monotonic() - self.t0
        self.current = {k: float(d.at(t)) for k, d in self.drifts.items()}
        self.history.append((self.clock.time(), dict(self.current)))

    def records(self) -> list[senml.Record]:
        return [
            senml.Record(f"{self.name}:{k}", v, self.units.get(k)) for k, v in self.current.items()
        ]

    def history_records(self) -> list[senml.Record]:
        return [
            senml.Record(f"{self.name}:{k}", v, self.units.get(k), t)
            for t, values in self.history
            for k, v in values.items()
        ]


def _render(records: list[senml.Record], accept: int | None, base: str) -> aiocoap.Message:
    if accept in (None, senml.CF_SENML_JSON):
        return aiocoap.Message(
            payload=senml.encode_json(records, base), content_format=senml.CF_SENML_JSON
        )
    if accept == senml.CF_SENML_CBOR:
        return aiocoap.Message(
            payload=senml.encode_cbor(records, base), content_format=senml.CF_SENML_CBOR
        )
    if accept == senml.CF_JSON:
        flat = {r.name[len(base) :]: r.value for r in records}
        return aiocoap.Message(payload=json.dumps(flat).encode(), content_format=senml.CF_JSON)
    return aiocoap.Message(code=aiocoap.NOT_ACCEPTABLE)


class AirResource(resource.ObservableResource):  # type: ignore[misc]
    def __init__(self, sensor: AirSensor) -> None:
        super().__init__()
        self.sensor = sensor
        self.requests = 0

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        self.requests += 1
        accept = request.opt.accept
        return _render(
            self.sensor.records(),
            int(accept) if accept is not None else None,
            f"{self.sensor.name}:",
        )


class PointResource(resource.Resource):  # type: ignore[misc]
    def __init__(self, sensor: AirSensor, point: str) -> None:
        super().__init__()
        self.sensor, self.point = sensor, point

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        value = self.sensor.current[self.point]
        return aiocoap.Message(payload=f"{value:g}".encode(), content_format=senml.CF_TEXT)


class HistoryResource(resource.Resource):  # type: ignore[misc]
    def __init__(self, sensor: AirSensor) -> None:
        super().__init__()
        self.sensor = sensor

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        payload = senml.encode_json(self.sensor.history_records(), f"{self.sensor.name}:")
        return aiocoap.Message(payload=payload, content_format=senml.CF_SENML_JSON)


class _Recent(OrderedDict[Any, Any]):
    """The deduplication cache, cut to the newest ``cap`` exchanges."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def __setitem__(self, key: Any, value: Any) -> None:
        new = key not in self
        super().__setitem__(key, value)
        if new:
            while len(self) > self.cap:
                self.popitem(last=False)


def _bounded_dedup(self: MessageManager, message: aiocoap.Message) -> bool:
    """aiocoap's ``_deduplicate_message`` without the per-message EXCHANGE_LIFETIME timer."""
    key = (message.remote, message.mid)
    recent: _Recent = self._recent_messages
    if key in recent:
        if message.mtype is aiocoap.CON and recent[key] is not None:
            self._send_initially(recent[key])
        return True
    recent[key] = None
    return False


def bound_deduplication(context: aiocoap.Context, window: int) -> None:
    """Keep at most ``window`` recent exchanges per transport (see the module docstring)."""
    for interface in context.request_interfaces:
        mm = getattr(interface, "token_interface", None)
        if isinstance(mm, MessageManager):
            mm._recent_messages = _Recent(window)
            mm._deduplicate_message = types.MethodType(_bounded_dedup, mm)


def build_site(sensor: AirSensor) -> tuple[resource.Site, AirResource]:
    site = resource.Site()
    air = AirResource(sensor)
    site.add_resource(
        [".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader)
    )
    site.add_resource(["air"], air)
    site.add_resource(["air", "history"], HistoryResource(sensor))
    for p in sensor.current:
        site.add_resource(["air", p], PointResource(sensor, p))
    return site, air


async def start_server(
    host: str, port: int, sensor: AirSensor, dedup_window: int = 4096
) -> tuple[aiocoap.Context, AirResource]:
    """The server context (deduplication bounded) and the observable ``/air`` resource."""
    site, air = build_site(sensor)
    context = await aiocoap.Context.create_server_context(site, bind=(host, port))
    bound_deduplication(context, dedup_window)
    return context, air


async def serve(
    host: str,
    port: int,
    sensor: AirSensor | None = None,
    period_s: float = 1.0,
    dedup_window: int = 4096,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve the sensor until cancelled; notify observers every ``period_s``."""
    sensor = sensor or AirSensor()
    context, air = await start_server(host, port, sensor, dedup_window)
    log.info("simulating CoAP air sensor %s on coap://%s:%d/air", sensor.name, host, port)
    if ready is not None:
        ready.set()
    try:
        while True:
            await asyncio.sleep(period_s)
            sensor.tick()
            air.updated_state()
    finally:
        await context.shutdown()
