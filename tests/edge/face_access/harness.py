"""The face_access app under test: real models, a virtual clock, a fake gate behind the real
actuator path (shared by the app and web tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.actuators import Actuators
from edge.channel import Channel, Overflow
from edge.clock import VirtualClock
from edge.errors import DeviceError
from edge.face_access.app import FaceAccessApp
from edge.face_access.config import FaceAccessConfig
from edge.metrics import GatewayMetrics
from edge.readings import ReadingBatch
from edge.vision.frames import Frame
from edge.vision.manifest import ModelStore
from protocols import envelope as env
from tests.edge import contexts
from tests.edge.face_access.scenes import frame

OPEN_S = 2.0
TOKEN = "tok-3f9a1c0d7e2b4a6f8c5e"  # the API's bearer token in these tests


@dataclass
class FakeGate:
    """A gate controller that takes writes (as the Modbus source would, read-back included)."""

    writes: list[tuple[str, Any]] = field(default_factory=list)
    fail: bool = False

    async def write(self, device: str, point: str, value: Any) -> Any:
        if self.fail:
            raise DeviceError(f"device {device}: no reply")
        self.writes.append((point, value))
        return value


@dataclass
class Harness:
    app: FaceAccessApp
    clock: VirtualClock
    gate: FakeGate
    events: list[env.EnvelopeModel]
    frames: Channel[Frame]
    inbox: Channel[ReadingBatch]

    def access(self) -> list[env.AccessPayload]:
        return [e.payload for e in self.events if isinstance(e, env.AccessEnvelope)]

    async def feed(self, image: np.ndarray, seq: int = 1) -> None:
        before = self.app.frames_seen
        await self.frames.put(frame(image, seq))
        for _ in range(600):
            if self.app.frames_seen > before:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the app did not take the frame")


def config(tmp_path: Path, **overrides: Any) -> FaceAccessConfig:
    cfg: dict[str, Any] = {
        "type": "face_access",
        "name": "gate",
        "cameras": ["cam-1"],
        "gate": {"device": "gate-1", "open_s": OPEN_S},
        "secret": "a-long-gateway-secret-for-tests",
        "liveness": "record",
        "store_dir": str(tmp_path / "faces"),
        "admin_token": TOKEN,
    }
    cfg.update(overrides)
    return FaceAccessConfig.model_validate(cfg)


async def make_harness(
    tmp_path: Path, model_store: ModelStore, overrides: dict[str, Any]
) -> AsyncIterator[Harness]:
    clock = VirtualClock()
    metrics = GatewayMetrics()
    gate = FakeGate()
    actuators = Actuators(metrics)
    actuators.register("gate-1", gate)
    frames: Channel[Frame] = Channel("frames:gate", 1, Overflow.DROP_NEWEST)
    inbox: Channel[ReadingBatch] = Channel("app:gate", 10)
    built = contexts.app(
        "gate",
        clock=clock,
        metrics=metrics,
        base_dir=tmp_path,
        inbox=inbox,
        actuators=actuators,
        frames=frames,
    )
    ctx, events = built.ctx, built.events
    app = FaceAccessApp(config(tmp_path, **overrides), ctx)
    task = asyncio.create_task(app.run())
    await asyncio.wait_for(app.ready.wait(), 60)
    photo = model_store.asset("obama.jpg").read_bytes()
    await app.call(app.service.enroll, "p-obama", "奥巴马 Obama", photo, clock.time())
    await app.reload()
    yield Harness(app, clock, gate, events, frames, inbox)
    frames.close()
    inbox.close()
    await clock.advance(OPEN_S + 1)
    await asyncio.wait_for(task, 30)
