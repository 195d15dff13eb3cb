"""Source ``coap``: CoAP sensors read by GET polling or by Observe (RFC 7641), with aiocoap.

- **Payloads**: SenML JSON (Content-Format 110) or CBOR (112) resolved per RFC 8428
  (:mod:`protocols.senml`), a flat JSON object (50), or a text number (0); ``format: auto``
  goes by the response's Content-Format.
- **Block-wise** transfer (RFC 7959) of large representations is done by aiocoap: the source
  sees the whole payload.
- **Deadlines and retries**: every request has ``timeout_s`` (aiocoap's confirmable
  retransmissions happen inside it); a timed-out request is sent anew ``retries`` times.
- **Observe**: the first response must arrive within ``timeout_s``; then each notification
  within ``max_silence_s``, otherwise the poll counts as failed and the observation is
  registered again after ``poll_interval_s``.
- **Schedule and availability** are the shared poller's (:mod:`edge.polling`), as for Modbus:
  staggered slots, missed ones skipped, one "unavailable" after ``unavailable_after`` failed
  polls, one "recovered". No circuit breaker: each device is its own peer, so a silent one
  costs no other device any time.
- **Bad payloads** (not the format, too large — over 1 MiB —, nested too deep, numbers beyond
  the float range) fail that poll: counted in ``cityedge_poll_errors_total``, logged the first
  time and every 100th, and the device is polled on. A value that is not finite after
  ``scale``, or an integer beyond 64 bits that a float cannot hold, is a bad reading of that
  point only (counted as ``decode``, logged once per point until it is good again).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiocoap
from aiocoap import error as coap_error
from aiocoap.numbers.constants import TransportTuning

from edge.availability import Availability
from edge.coap.config import CoapDeviceConfig, CoapSourceConfig
from edge.errors import DeviceError
from edge.plugin import Plugin, SourceContext, TracksDevices
from edge.polling import PolledDevice, Poller
from edge.readings import Reading
from protocols import senml
from protocols.errors import DecodeError
from protocols.limits import check_json_depth, check_size, shown

log = logging.getLogger(__name__)

_ACCEPT = {
    "senml+json": senml.CF_SENML_JSON,
    "senml+cbor": senml.CF_SENML_CBOR,
    "json": senml.CF_JSON,
    "text": senml.CF_TEXT,
}
_FORMAT_OF_CF = {v: k for k, v in _ACCEPT.items()}
_NOT_IDENT = re.compile(r"[^A-Za-z0-9_.-]")
MAX_PAYLOAD_BYTES = senml.MAX_PACK_BYTES
_JSON_DEPTH = 4  # a flat object of name: value (a little more, so the error names the shape)
_INT64 = 2**63


class DeadlineTuning(TransportTuning):  # type: ignore[misc]
    """Confirmable retransmissions that end within a request's deadline.

    With aiocoap's defaults (RFC 7252 4.8: ACK_TIMEOUT 2 s, MAX_RETRANSMIT 4) an unanswered
    request keeps retransmitting for MAX_TRANSMIT_WAIT, 93 s, and since a client has one
    exchange in flight per server (NSTART 1) every later request to that device queues behind
    it: a device that comes back would stay "unavailable" for a minute and a half. Scaling
    ACK_TIMEOUT so that MAX_TRANSMIT_WAIT ends within the deadline keeps the queue empty."""

    MAX_RETRANSMIT = 2

    def __init__(self, deadline_s: float) -> None:
        # MAX_TRANSMIT_WAIT = ACK_TIMEOUT * (2 ** (MAX_RETRANSMIT + 1) - 1) * ACK_RANDOM_FACTOR,
        # made 0.8 of the deadline so the exchange is over before the next attempt is sent
        span = (2 ** (self.MAX_RETRANSMIT + 1) - 1) * self.ACK_RANDOM_FACTOR
        self.ACK_TIMEOUT = 0.8 * deadline_s / span


@dataclass(kw_only=True)
class _Device(PolledDevice):
    config: CoapDeviceConfig
    missing: set[str] = field(default_factory=set)
    bad_points: set[str] = field(default_factory=set)
    bad_payloads: int = 0


def point_name(record_name: str) -> str:
    """A gateway point name for a SenML record name: its last segment after ':' or '/',
    with characters topics cannot hold replaced by '_'."""
    last = re.split(r"[:/]", record_name.rstrip(":/"))[-1] or record_name
    return _NOT_IDENT.sub("_", last)[:64] or "value"


def _number(v: object) -> bool | int | float | None:
    """A JSON value as a reading: booleans, integers that fit 64 bits, finite floats (a larger
    integer becomes a float when one holds it); None for anything else."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        if -_INT64 <= v < _INT64:
            return v
        try:
            v = float(v)
        except OverflowError:
            return None
    if isinstance(v, float) and math.isfinite(v):
        return v
    return None


def values_of(
    payload: bytes, fmt: str, now: float
) -> dict[str, tuple[bool | int | float, str | None]]:
    """``{name: (value, unit)}`` for every numeric or boolean value in a payload of ``fmt``;
    names are SenML record names (resolved) or JSON keys; text gives one value named ''.
    Raises :class:`DecodeError` (and nothing else, whatever the bytes) naming the format."""
    check_size(payload, MAX_PAYLOAD_BYTES, "the payload")
    if fmt in ("senml+json", "senml+cbor"):
        records = (
            senml.decode_json(payload, now)
            if fmt == "senml+json"
            else senml.decode_cbor(payload, now)
        )
        out: dict[str, tuple[bool | int | float, str | None]] = {}
        for r in records:
            if isinstance(r.value, bool | int | float):
                out[r.name] = (r.value, r.unit)
        return out
    if fmt == "json":
        check_json_depth(payload, _JSON_DEPTH, "the JSON payload")
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as err:
            raise DecodeError(f"payload is not JSON: {str(err)[:120]}") from err
        if not isinstance(doc, dict):
            raise DecodeError("a JSON payload must be an object of name: value")
        return {k: (value, None) for k, v in doc.items() if (value := _number(v)) is not None}
    try:
        text = payload.decode("utf-8").strip()
        number = float(text.split()[0])
    except (UnicodeDecodeError, ValueError, IndexError) as err:
        raise DecodeError(f"text payload {shown(payload)} is not a number") from err
    if not math.isfinite(number):
        raise DecodeError(f"text payload {shown(text)} is not a finite number")
    whole = number.is_integer() and "." not in text and abs(number) < _INT64
    return {"": (int(number) if whole else number, None)}


def _match(values: Mapping[str, tuple[bool | int | float, str | None]], key: str) -> str | None:
    if key in values:
        return key
    for name in values:
        if name.endswith(key) and name[-len(key) - 1] in ":/._-":
            return name
    return None


class CoapSource(Plugin, TracksDevices):
    def __init__(self, config: CoapSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self.ctx = ctx
        self.name = config.name
        now = ctx.clock.time()
        self.devices = [
            _Device(
                name=d.name,
                poll_interval_s=d.poll_interval_s,
                who=f"device {d.name} ({d.uri})",
                availability=Availability(config.unavailable_after, now),
                config=d,
            )
            for d in config.devices
        ]
        self.poller = Poller(ctx, self.devices, self._read)
        self._coap: aiocoap.Context | None = None
        self._tuning = DeadlineTuning(config.timeout_s)

    def device_health(self) -> dict[str, str]:
        return {d.config.name: d.availability.health.value for d in self.devices}

    async def open(self) -> aiocoap.Context:
        if self._coap is None:
            self._coap = await aiocoap.Context.create_client_context()
        return self._coap

    async def close(self) -> None:
        if self._coap is not None:
            await self._coap.shutdown()
            self._coap = None

    async def run(self) -> None:
        await self.open()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.poller.run([d for d in self.devices if not d.config.observe]))
                for dev in self.devices:
                    if dev.config.observe:
                        tg.create_task(self._observe_loop(dev), name=f"coap-{dev.config.name}")
        finally:
            await self.close()

    # -- one request -------------------------------------------------------------------------

    def _message(self, dev: _Device, observe: bool) -> aiocoap.Message:
        kw: dict[str, Any] = {
            "code": aiocoap.GET,
            "uri": dev.config.uri,
            "transport_tuning": self._tuning,
        }
        if dev.config.format != "auto":
            kw["accept"] = _ACCEPT[dev.config.format]
        if observe:
            kw["observe"] = 0
        return aiocoap.Message(**kw)

    def _check(self, dev: _Device, response: aiocoap.Message) -> None:
        if not response.code.is_successful():
            hint = (
                "check the resource path in 'uri'"
                if response.code == aiocoap.NOT_FOUND
                else "the device refused the request; check its documentation for the format"
                if response.code in (aiocoap.NOT_ACCEPTABLE, aiocoap.UNSUPPORTED_CONTENT_FORMAT)
                else "check the device"
            )
            raise DeviceError(f"{dev.config.uri} answered {response.code}", hint=hint)

    async def get(self, dev: _Device) -> aiocoap.Message:
        """One GET with its deadline, sent anew ``retries`` times after a timeout."""
        coap = await self.open()
        attempts = self.config.retries + 1
        for _ in range(attempts):
            request = coap.request(self._message(dev, observe=False))
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    response: aiocoap.Message = await request.response
            except (TimeoutError, coap_error.TimeoutError):
                continue  # our deadline, or aiocoap's retransmissions ran out just before it
            except coap_error.Error as err:
                raise DeviceError(
                    f"no answer from {dev.config.uri}: {err}",
                    hint="check the device's address, port and network",
                ) from err
            self._check(dev, response)
            return response
        raise DeviceError(
            f"no reply from {dev.config.uri} within {self.config.timeout_s} s "
            f"({attempts} requests)",
            hint="check the device is powered and reachable (UDP 5683), and the uri",
        )

    async def poll_once(self, dev: _Device) -> None:
        await self.poller.poll_once(dev)

    async def _read(self, dev: _Device) -> list[Reading]:
        return self._decode(dev, await self.get(dev), self.ctx.clock.time())

    async def handle(self, dev: _Device, response: aiocoap.Message) -> None:
        """Decode one notification and emit its readings."""
        wall = self.ctx.clock.time()
        try:
            readings = self._decode(dev, response, wall)
        except DeviceError as err:
            await self.poller.failed(dev, err)
            return
        await self.poller.delivered(dev, readings, wall)

    def _decode(self, dev: _Device, response: aiocoap.Message, wall: float) -> list[Reading]:
        """The readings of one response; :class:`DeviceError` when its payload is not usable."""
        fmt: str = dev.config.format
        if fmt == "auto":
            cf = response.opt.content_format
            fmt = _FORMAT_OF_CF.get(int(cf) if cf is not None else senml.CF_TEXT, "")
            if not fmt:
                raise DeviceError(
                    f"{dev.config.uri} sent Content-Format {cf}, which is not SenML, JSON or text",
                    hint="set 'format' to what the device sends",
                )
        try:
            values = values_of(response.payload, fmt, wall)
        except DecodeError as err:
            dev.bad_payloads += 1
            if dev.bad_payloads == 1 or dev.bad_payloads % 100 == 0:
                log.warning(
                    "device %s: bad %s payload (%d so far): %s",
                    dev.config.name,
                    fmt,
                    dev.bad_payloads,
                    err,
                )
            hint = f"the device does not send {fmt}; check 'format'"
            raise DeviceError(f"{dev.config.uri}: {err}", hint=hint) from err
        return self._readings(dev, values)

    def _readings(
        self, dev: _Device, values: Mapping[str, tuple[bool | int | float, str | None]]
    ) -> list[Reading]:
        if not dev.config.points:
            return [Reading(point_name(k), v, u) for k, (v, u) in values.items()]
        out = []
        for p in dev.config.points:
            key = "" if dev.config.format == "text" else (p.key or p.name)
            found = _match(values, key) if key else ("" if "" in values else None)
            if found is None:
                if p.name not in dev.missing:
                    dev.missing.add(p.name)
                    log.warning(
                        "device %s: the payload has no %r for point %s",
                        dev.config.name,
                        key,
                        p.name,
                    )
                continue
            dev.missing.discard(p.name)
            value, unit = values[found]
            if p.scale != 1 and not isinstance(value, bool):
                value = value * p.scale
                if not math.isfinite(value):  # 1e308 x 10: a bad reading of this point
                    self.ctx.metrics.poll_errors.labels(self.name, dev.config.name, "decode").inc()
                    if p.name not in dev.bad_points:
                        dev.bad_points.add(p.name)
                        log.warning(
                            "device %s point %s: %s x %s is not finite; reading skipped",
                            dev.config.name,
                            p.name,
                            values[found][0],
                            p.scale,
                        )
                    continue
            if p.name in dev.bad_points:
                dev.bad_points.discard(p.name)
                log.info("device %s point %s: good values again", dev.config.name, p.name)
            out.append(Reading(p.name, value, p.unit or unit))
        return out

    # -- observe -----------------------------------------------------------------------------

    async def _observe_loop(self, dev: _Device) -> None:
        while True:
            try:
                async for response in self.observe(dev):
                    await self.handle(dev, response)
            except DeviceError as err:
                await self.poller.failed(dev, err)
            await self.ctx.clock.sleep(dev.config.poll_interval_s)

    async def observe(self, dev: _Device) -> AsyncIterator[aiocoap.Message]:
        """The first response, then notifications; ends with :class:`DeviceError` when the
        device stops sending them (the caller registers again)."""
        coap = await self.open()
        request = coap.request(self._message(dev, observe=True))
        try:
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    first: aiocoap.Message = await request.response
            except (TimeoutError, coap_error.TimeoutError):
                raise DeviceError(
                    f"no reply from {dev.config.uri} within {self.config.timeout_s} s",
                    hint="check the device is powered and reachable (UDP 5683), and the uri",
                ) from None
            except coap_error.Error as err:
                raise DeviceError(f"no answer from {dev.config.uri}: {err}") from err
            self._check(dev, first)
            yield first
            if request.observation is None or request.observation.cancelled:
                raise DeviceError(
                    f"{dev.config.uri} does not support Observe", hint="set observe: false"
                )
            notifications = aiter(request.observation)
            while True:
                try:
                    async with asyncio.timeout(dev.config.max_silence_s):
                        note: aiocoap.Message = await anext(notifications)
                except TimeoutError:
                    raise DeviceError(
                        f"{dev.config.uri}: no notification for {dev.config.max_silence_s} s",
                        hint="the device may have restarted; the observation is registered again",
                    ) from None
                except StopAsyncIteration:
                    raise DeviceError(f"{dev.config.uri} ended the observation") from None
                except coap_error.Error as err:
                    raise DeviceError(f"{dev.config.uri}: observation failed: {err}") from err
                self._check(dev, note)
                yield note
        finally:
            if request.observation is not None and not request.observation.cancelled:
                request.observation.cancel()
