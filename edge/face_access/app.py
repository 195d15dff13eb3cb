"""App ``face_access``: recognise residents at a gate, open the relay, report the decision.

Per frame of a watched camera (motion-gated by the camera source, and skipped while the app is
busy — its frames channel drops newest): detect → quality → align → liveness → embed → 1:N match,
all in the app's own worker thread. Then, on the event loop:

- no face, or a face that fails the quality checks: nothing is decided (the gate screen asks the
  person to face the camera);
- a match within ``threshold`` that is live (or liveness is only recorded): **granted** — the
  relay is set through the spine's actuator path (the Modbus source writes and reads back), and
  cleared ``gate.open_s`` later. One opening per decision: while a gate cycle runs, another
  decision does not set the relay again (``relay: busy``), and a person decided about is
  ignored for ``cooldown_s`` (tailgating guard);
- otherwise **denied**: unknown face (reported at most every ``unknown_interval_s``) or not live.

Every decision becomes an ``access`` envelope (person id or "unknown", distance, threshold,
liveness, latency from frame capture to the relay command, model identities — never an image or
a template), an audit-log entry, and an update of the gate screen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

import cv2
from prometheus_client import CollectorRegistry, Gauge

from edge.errors import EdgeError
from edge.face_access.config import FaceAccessConfig
from edge.face_access.gallery import Gallery
from edge.face_access.pipeline import FaceAnalysis
from edge.face_access.service import FaceService
from edge.face_access.web import ScreenFeed, face_routes
from edge.plugin import AppContext, Plugin, ServesRoutes
from edge.vision.frames import Frame
from edge.vision.session import limit_blas_threads
from protocols import envelope as env

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
STORE_POLL_S = 1.0
Relay = Literal["opened", "not_opened", "busy", "failed"]


@dataclass(frozen=True)
class Decision:
    granted: bool
    person: str  # id or "unknown"
    score: float | None
    reason: str
    liveness: env.LivenessCheck


class FaceAccessMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.enrolled = Gauge(
            "cityedge_faces_enrolled",
            "People in a face store: current, or stale (enrolled with another model)",
            ["app", "status"],
            registry=registry,
        )


class FaceAccessApp(Plugin, ServesRoutes):
    def __init__(self, config: FaceAccessConfig, ctx: AppContext) -> None:
        self.config = config
        self.ctx = ctx
        self.name = config.name
        self.service = FaceService(config, ctx.site, ctx.gateway, ctx.check.base_dir)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"face-{config.name}")
        self.gallery = Gallery.empty()
        self.names: dict[str, str] = {}
        self.model_versions: dict[str, str] = {}
        self.ready = asyncio.Event()
        self.screen = ScreenFeed()
        self.routes = face_routes(self)
        self.enrolled_gauge = ctx.metrics.own(FaceAccessMetrics).enrolled
        self._last: dict[str, float] = {}  # person or "unknown" -> monotonic time of last decision
        self._gate_task: asyncio.Task[None] | None = None
        self._store_version = -1
        self.door_closed: bool | None = None
        self.decisions = 0
        self.frames_seen = 0

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking work (models, the store) in the app's one worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    # -- lifecycle ---------------------------------------------------------------------------
    def _load_models(self) -> dict[str, str]:
        limit_blas_threads(1)
        pipeline = self.service.pipeline  # loads, checks checksums and warms every model
        return pipeline.model_versions

    def _load_gallery(self) -> tuple[Gallery, dict[str, str], int, int]:
        version = self.service.store.data_version()
        gallery, names, stale = self.service.store.load(self.service.embedding_model)
        if stale:
            log.warning(
                "face store: %d people were enrolled with another embedding model and are NOT "
                "recognised until re-enrolled (%s); run 'cityedge faces reenroll' (uses retained "
                "images) or enrol them again",
                len(stale),
                ", ".join(sorted({p.model for p in stale})),
            )
        return gallery, names, len(stale), version

    async def reload(self) -> None:
        self.gallery, self.names, stale, self._store_version = await self.call(self._load_gallery)
        self.enrolled_gauge.labels(self.name, "current").set(len(self.names))
        self.enrolled_gauge.labels(self.name, "stale").set(stale)

    async def run(self) -> None:
        try:
            self.model_versions = await self.call(self._load_models)
            await self.reload()
            log.info(
                "face access %s: models %s; %d people enrolled",
                self.name,
                ", ".join(self.model_versions.values()),
                len(self.names),
            )
            self.ready.set()
            async with asyncio.TaskGroup() as tg:
                helpers = [tg.create_task(self._drain_inbox()), tg.create_task(self._watch_store())]
                await self._process_frames()
                for h in helpers:
                    h.cancel()
                if self._gate_task is not None:
                    await self._gate_task
        finally:
            self.screen.close()
            await asyncio.to_thread(self.executor.shutdown, wait=True)

    async def _drain_inbox(self) -> None:
        """Readings reach every app; this one only follows the gate's door contact."""
        async for batch in self.ctx.inbox:
            if batch.device == self.config.gate.device:
                door = batch.value_of("door_closed")
                if door is not None:
                    self.door_closed = bool(door.value)

    async def _watch_store(self) -> None:
        """Pick up enrolments and erasures by the CLI; erase expired retained images."""
        clock = self.ctx.clock
        while True:
            await clock.sleep(STORE_POLL_S)
            if await self.call(self.service.store.data_version) != self._store_version:
                await self.reload()
            purged = await self.call(self.service.purge_images, clock.time())
            if purged:
                log.info(
                    "face access %s: erased %d expired enrolment images", self.name, len(purged)
                )

    # -- frames ------------------------------------------------------------------------------
    def _analyse(self, frame: Frame) -> FaceAnalysis:
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        return self.service.pipeline.analyse(rgb, liveness=self.config.liveness != "off")

    async def _process_frames(self) -> None:
        async for frame in self.ctx.frames:
            try:
                analysis = await self.call(self._analyse, frame)
            except (ValueError, cv2.error) as err:
                log.warning("camera %s frame %d: cannot analyse: %s", frame.camera, frame.seq, err)
            else:
                await self.handle(frame, analysis)
            self.frames_seen += 1

    def decide(self, analysis: FaceAnalysis, gallery: Gallery) -> Decision | None:
        if analysis.embedding is None:
            return None
        c = self.config
        match = gallery.search(analysis.embedding)
        matched = match is not None and match.distance <= c.threshold
        score = match.distance if match is not None else None
        live: bool | None = None
        if analysis.liveness is not None:
            live = analysis.liveness < c.liveness_limit
        check = env.LivenessCheck(score=analysis.liveness, live=live, policy=c.liveness)
        person = match.person if matched and match is not None else "unknown"
        if not matched:
            return Decision(False, "unknown", score, "unknown face", check)
        if c.liveness == "enforce" and live is False:
            return Decision(False, person, score, "not live (replay or print suspected)", check)
        return Decision(True, person, score, "matched", check)

    async def handle(self, frame: Frame, analysis: FaceAnalysis) -> Decision | None:
        if analysis.face is None:
            return None
        if analysis.quality is not None and not analysis.quality.ok:
            self.screen.publish({"state": "adjust", "problems": list(analysis.quality.problems)})
            return None
        decision = self.decide(analysis, self.gallery)
        if decision is None:
            return None
        now = time.monotonic()
        key = decision.person
        quiet = self.config.unknown_interval_s if key == "unknown" else self.config.cooldown_s
        if now - self._last.get(key, -float("inf")) < quiet:
            return None
        self._last[key] = now
        relay: Relay = "not_opened"
        latency_ms = (time.monotonic() - frame.captured_mono) * 1000
        if decision.granted:
            if self._gate_task is not None and not self._gate_task.done():
                relay = "busy"
            else:
                latency_ms = (time.monotonic() - frame.captured_mono) * 1000
                relay = await self._open_gate()
        await self._report(frame, decision, relay, latency_ms)
        return decision

    async def _open_gate(self) -> Relay:
        g = self.config.gate
        try:
            await self.ctx.actuators.write(g.device, g.point, True)
        except EdgeError as err:
            log.error("gate %s: opening failed: %s", g.device, err.for_humans())
            return "failed"
        self._gate_task = asyncio.create_task(self._close_gate_later())
        return "opened"

    async def _close_gate_later(self) -> None:
        g = self.config.gate
        await self.ctx.clock.sleep(g.open_s)
        for attempt in range(3):  # a relay left open is worse than a retry
            try:
                await self.ctx.actuators.write(g.device, g.point, False)
                return
            except EdgeError as err:
                log.error(
                    "gate %s: closing failed (try %d): %s", g.device, attempt + 1, err.for_humans()
                )
                await self.ctx.clock.sleep(0.5)

    async def _report(self, frame: Frame, d: Decision, relay: Relay, latency_ms: float) -> None:
        self.decisions += 1
        payload = env.AccessPayload(
            decision=env.AccessDecision.GRANTED if d.granted else env.AccessDecision.DENIED,
            person=d.person,
            score=None if d.score is None else round(d.score, 4),
            threshold=self.config.threshold,
            reason=d.reason,
            liveness=d.liveness,
            latency_ms=round(max(latency_ms, 0.0), 2),
            camera=frame.camera,
            relay=relay,
            models=self.model_versions,
        )
        log.info(
            "gate %s: %s %s (distance %s, liveness %s, relay %s, %.0f ms)",
            self.config.gate.device,
            payload.decision.value,
            d.person,
            payload.score,
            "-" if d.liveness.score is None else f"{d.liveness.score:.3f}",
            relay,
            latency_ms,
        )
        self.screen.publish(
            {
                "state": "granted"
                if d.granted
                else ("spoof" if d.person != "unknown" else "unknown"),
                "person": d.person if d.granted else None,
                "name": self.names.get(d.person) if d.granted else None,
                "decided_at_ms": round(self.ctx.clock.time() * 1000),
                "seen_at_ms": round(frame.time * 1000),
            }
        )
        emitter = self.ctx.emitter
        await emitter.send(emitter.access(self.config.gate.device, frame.time, payload))
        detail: dict[str, Any] = {
            "decision": payload.decision.value,
            "score": payload.score,
            "live": d.liveness.live,
            "relay": relay,
            "camera": frame.camera,
        }
        await self.call(
            self.service.audit.append, "decision", d.person, detail, self.ctx.clock.time()
        )
