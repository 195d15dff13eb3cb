"""The in-memory hold of a sink while its broker is away.

Two classes, each in arrival order: *events* (alarms, availability, anything not telemetry) and
*telemetry*. Events are taken first. When the hold is full, the oldest telemetry goes first;
events are dropped (oldest first) only when no telemetry is left. Every drop is counted.

This is not durable: a restart loses what is held. The durable outbox (SQLite) replaces it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from protocols.envelope import TELEMETRY_KINDS, EnvelopeModel


class PendingBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.events: deque[EnvelopeModel] = deque()
        self.telemetry: deque[EnvelopeModel] = deque()
        self.dropped = {"telemetry": 0, "event": 0}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self.events) + len(self.telemetry)

    def _queue(self, item: EnvelopeModel) -> deque[EnvelopeModel]:
        return self.telemetry if item.kind in TELEMETRY_KINDS else self.events

    def _trim(self) -> None:
        while len(self) > self.capacity:
            if self.telemetry:
                self.telemetry.popleft()
                self.dropped["telemetry"] += 1
            else:
                self.events.popleft()
                self.dropped["event"] += 1

    def add(self, item: EnvelopeModel) -> None:
        self._queue(item).append(item)
        self._trim()
        self._ready.set()

    def requeue(self, items: Iterable[EnvelopeModel]) -> None:
        """Put unacknowledged items back at the front, keeping their order."""
        for item in sorted(items, key=lambda e: e.id, reverse=True):
            self._queue(item).appendleft(item)
        self._trim()
        if len(self):
            self._ready.set()

    def take(self) -> EnvelopeModel | None:
        if self.events:
            return self.events.popleft()
        if self.telemetry:
            return self.telemetry.popleft()
        self._ready.clear()
        return None

    async def wait(self) -> None:
        """Wait until something is held."""
        if not len(self):
            self._ready.clear()
            await self._ready.wait()
