"""An app context for vision-app tests: virtual clock, events collected, bounded channels."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from edge.channel import Channel, Overflow
from edge.clock import VirtualClock
from edge.plugin import AppContext
from edge.readings import ReadingBatch
from edge.vision.frames import Frame
from protocols import envelope as env
from tests.edge import contexts

E = TypeVar("E", bound=env.EnvelopeModel)


@dataclass
class AppHarness:
    ctx: AppContext
    clock: VirtualClock
    events: list[env.EnvelopeModel] = field(default_factory=list)

    @classmethod
    def make(cls, tmp_path: Path, name: str) -> AppHarness:
        clock = VirtualClock()
        built = contexts.app(
            name,
            clock=clock,
            base_dir=tmp_path,
            inbox=Channel(f"app:{name}", 16),
            frames=Channel(f"frames:{name}", 4, Overflow.BLOCK),
        )
        return cls(built.ctx, clock, built.events)

    def of(self, cls: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, cls)]

    async def frame(self, image: np.ndarray, t: float, seq: int, camera: str = "cam-1") -> None:
        await self.ctx.frames.put(Frame("cam", camera, seq, t, 0.0, image, 1.0))

    async def reading(self, device: str, point: str, value: float, t: float) -> None:
        from edge.readings import Reading

        await self.ctx.inbox.put(ReadingBatch("bus", device, t, (Reading(point, value),)))

    async def settle(self, until: Callable[[], bool], timeout_s: float = 60.0) -> None:
        """Wait (real time) until ``until()`` is true: the app works in its worker thread."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not until():
            if loop.time() > deadline:
                raise AssertionError("the app did not get there in time")
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self.ctx.frames.close()
        self.ctx.inbox.close()
