"""A source's context for tests: the readings channel and the envelopes it sent, kept in lists."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from edge.channel import Channel
from edge.clock import Clock
from edge.metrics import GatewayMetrics
from edge.plugin import SourceContext
from edge.readings import ReadingBatch
from protocols import envelope as env
from tests.edge import contexts


@dataclass
class Captured:
    """What a source under test produced."""

    ctx: SourceContext
    metrics: GatewayMetrics
    readings: Channel[ReadingBatch]
    events: list[env.EnvelopeModel] = field(default_factory=list)

    def batches(self) -> list[ReadingBatch]:
        out = []
        while (b := self.readings.get_nowait()) is not None:
            out.append(b)
        return out

    async def wait_batches(self, n: int, timeout_s: float = 10.0) -> None:
        """Wait until ``n`` batches are queued (or the time is up; the caller asserts)."""
        for _ in range(int(timeout_s / 0.05)):
            if self.readings.depth >= n:
                return
            await asyncio.sleep(0.05)

    def availability(self) -> list[env.AvailabilityEnvelope]:
        return [e for e in self.events if isinstance(e, env.AvailabilityEnvelope)]


def source_context(name: str = "bus", clock: Clock | None = None, capacity: int = 100) -> Captured:
    readings: Channel[ReadingBatch] = Channel("readings", capacity)
    built = contexts.source(name, readings=readings, clock=clock)
    return Captured(built.ctx, built.metrics, readings, built.events)
