"""Actuation: apps act on devices through the source that owns them.

An app calls ``await ctx.actuators.write(device, point, value)``. The source that provides the
device does the write on its own connection — in turn with its polls, one request on the wire at
a time — then reads the point back and returns what the device now holds. Apps never open
connections, and a write that the device did not take is an error, not a silent success.

``await ctx.actuators.write_many(device, {point: value, ...})`` writes several points in one
request, so the device takes them together or not at all (a Modbus signal controller's plan:
one fc 16 over adjacent holding registers). Sources that can do that implement
:class:`MultiWriter`; for others it is an :class:`ActuationError`.

Writes are counted in ``cityedge_writes_total{device,point,result}`` (``ok`` / ``failed``;
several points in one request: ``point`` is ``a+b``, or ``a+N`` for more), declared here
(:class:`ActuatorMetrics`).

Errors: :class:`ActuationError` (a :class:`~edge.errors.PermanentError`: unknown device, a
read-only point, a value the point cannot hold) and :class:`~edge.errors.DeviceError` (no reply,
an exception code, or a read-back that differs from what was written).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter

from edge.errors import PermanentError
from edge.metrics import GatewayMetrics
from protocols.modbus import Value

log = logging.getLogger(__name__)


class ActuationError(PermanentError):
    code = "CE210"


@runtime_checkable
class Writer(Protocol):
    """A source's ability: write to the devices it owns (the gateway routes apps' writes to
    it). Checked with ``isinstance`` when the gateway is built."""

    async def write(self, device: str, point: str, value: Value) -> Value:
        """Write ``value`` to ``point`` of ``device``; return the value read back."""
        ...


@runtime_checkable
class MultiWriter(Protocol):
    """A source's ability: write several points of a device in one request."""

    async def write_many(self, device: str, values: Mapping[str, Value]) -> dict[str, Value]:
        """Write all ``values`` in one request; return them as read back."""
        ...


class ActuatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.writes = Counter(
            "cityedge_writes",
            "Writes to devices by apps",
            ["device", "point", "result"],
            registry=registry,
        )


class Actuators:
    """Routes writes to the source that owns each device."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._writers: dict[str, Writer] = {}
        self._writes = metrics.own(ActuatorMetrics).writes

    def register(self, device: str, writer: Writer) -> None:
        self._writers[device] = writer

    @property
    def devices(self) -> frozenset[str]:
        return frozenset(self._writers)

    async def write(self, device: str, point: str, value: Value) -> Value:
        writer = self._writers.get(device)
        if writer is None:
            raise ActuationError(
                f"no source can write to device {device!r}",
                hint="the device must belong to a source that supports writes (e.g. modbus)",
            )
        try:
            result = await writer.write(device, point, value)
        except Exception:
            self._writes.labels(device, point, "failed").inc()
            raise
        self._writes.labels(device, point, "ok").inc()
        log.info("device %s: wrote %s=%r (read back %r)", device, point, value, result)
        return result

    async def write_many(self, device: str, values: Mapping[str, Value]) -> dict[str, Value]:
        """Write several points of ``device`` in one request (all or nothing), read back."""
        writer = self._writers.get(device)
        if not isinstance(writer, MultiWriter):
            raise ActuationError(
                f"no source can write several points of device {device!r} in one request",
                hint="the device must belong to a source that supports it (e.g. modbus)",
            )
        label = "+".join(values) if len(values) <= 2 else f"{next(iter(values))}+{len(values) - 1}"
        try:
            result = await writer.write_many(device, values)
        except Exception:
            self._writes.labels(device, label, "failed").inc()
            raise
        self._writes.labels(device, label, "ok").inc()
        log.debug("device %s: wrote %d points (%s)", device, len(values), ", ".join(values))
        return result
