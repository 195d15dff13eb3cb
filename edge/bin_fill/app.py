"""App ``bin_fill``: how full each bin is, from a camera above it and/or a level sensor.

Per frame of a watched camera (motion-gated by the camera source: a still bin is seen once per
key frame), each bin's region of interest is cropped, resized to 64x64 and given to the
``bin-fill`` model (see models/cards/bin-fill.md), which returns a fill fraction and an overflow
probability. Readings of a bin's level sensor (any device/point that reports a fraction or a
percentage — the ultrasonic bin node among them) arrive through the inbox like all readings.
:class:`~edge.bin_fill.state.BinState` smooths and combines both and decides the events:

- ``bin`` envelopes: ``needs_collection`` once when a bin crosses its threshold, ``emptied``
  once when it has been emptied;
- ``alarm`` envelopes (rule ``overflow``): raised once when rubbish stays over the rim, cleared
  once when it is gone;
- a ``collection`` envelope with the list of bins to collect whenever it changes, and every
  ``collection_interval_s``; the same list at ``GET /bins/<app>/collection``;
- every ``report_interval_s`` each bin's fill as ``telemetry`` (points ``fill``,
  ``fill_camera``, ``fill_sensor`` in percent, ``overflow`` as a probability).
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
from aiohttp import web

from edge.bin_fill.config import BinConfig, BinFillConfig
from edge.bin_fill.state import BinState, Change, Thresholds
from edge.plugin import AppContext, Plugin, ServesRoutes
from edge.readings import Reading, ReadingBatch
from edge.vision.frames import Frame
from edge.vision.session import ModelSession
from edge.vision.worker import VisionWorker, models_store
from protocols import envelope as env

log = logging.getLogger(__name__)
MODEL = "bin-fill"
SIZE = 64


def roi_crops(image: np.ndarray, rois: list[tuple[int, int, int, int]]) -> np.ndarray | None:
    """The regions of interest resized to 64x64, as one batch (None if one is outside)."""
    h, w = image.shape[:2]
    out = np.empty((len(rois), SIZE, SIZE, 3), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(rois):
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 - x1 < 8 or y2 - y1 < 8:
            return None
        out[k] = cv2.resize(image[y1:y2, x1:x2], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return out


class BinFillApp(Plugin, ServesRoutes):
    def __init__(self, config: BinFillConfig, ctx: AppContext) -> None:
        self.config = config
        self.ctx = ctx
        self.name = config.name
        self.worker = VisionWorker(config.name)
        self.store = models_store(config.models_dir, ctx.check.base_dir)
        self.session: ModelSession | None = None
        c = config
        self.states: dict[str, BinState] = {}
        for b in c.bins:
            th = Thresholds(
                collect_at=b.collect_at or c.collect_at,
                emptied_below=c.emptied_below,
                rearm_at=c.rearm_at,
                overflow_at=c.overflow_at,
                overflow_clear=c.overflow_clear,
                overflow_for_s=c.overflow_for_s,
                window_s=c.window_s,
                max_age_s=c.sensor_max_age_s,
                camera_weight=c.camera_weight,
                sensor_weight=c.sensor_weight,
            )
            self.states[b.id] = BinState(th)
        self.by_camera: dict[str, list[BinConfig]] = {}
        for b in c.bins:
            if b.camera is not None:
                self.by_camera.setdefault(b.camera, []).append(b)
        self.by_sensor = {(b.sensor.device, b.sensor.point): b for b in c.bins if b.sensor}
        self._analysed: dict[str, float] = {}
        self._warned: set[str] = set()
        self.frames_seen = 0
        self.routes = [web.get(f"/bins/{self.name}/collection", self._http_collection)]

    @property
    def models(self) -> dict[str, str]:
        return {MODEL: self.session.identity} if self.session is not None else {}

    # -- lifecycle ---------------------------------------------------------------------------
    def _load(self) -> ModelSession:
        session = ModelSession(self.store, MODEL, threads=self.config.threads)
        session.warm()
        return session

    async def run(self) -> None:
        if self.by_camera:
            try:
                self.session = await self.worker.call(self._load)
            except BaseException:
                await self.worker.close()
                raise
            log.info("bin fill %s: model %s", self.name, self.session.identity)
        await self.worker.serve(self._process_frames, self._drain_inbox, self._periodic)

    # -- inputs ------------------------------------------------------------------------------
    async def _drain_inbox(self) -> None:
        """Readings reach every app; this one takes the level sensors' fill readings."""
        async for batch in self.ctx.inbox:
            for r in batch.readings:
                b = self.by_sensor.get((batch.device, r.point))
                if b is None or b.sensor is None or isinstance(r.value, bool):
                    continue
                fill = float(r.value) / (100.0 if b.sensor.unit == "percent" else 1.0)
                if not 0.0 <= fill <= 1.2:
                    log.warning(
                        "bin %s: sensor %s.%s reports %s, outside 0..%s; ignored",
                        b.id,
                        batch.device,
                        r.point,
                        r.value,
                        "100" if b.sensor.unit == "percent" else "1",
                    )
                    continue
                changes = self.states[b.id].observe_sensor(batch.time, fill)
                await self._report(b, changes, camera=None)

    def _analyse(self, frame: Frame, bins: list[BinConfig]) -> np.ndarray | None:
        assert self.session is not None
        batch = roi_crops(frame.image, [b.roi for b in bins if b.roi is not None])
        if batch is None:
            return None
        return self.session.run(batch)[0]

    async def _process_frames(self) -> None:
        gap = self.config.min_interval_s
        async for frame in self.ctx.frames:
            bins = self.by_camera.get(frame.camera, [])
            if not bins or frame.time - self._analysed.get(frame.camera, -1e18) < gap:
                continue
            self._analysed[frame.camera] = frame.time
            out = await self.worker.call(self._analyse, frame, bins)
            self.frames_seen += 1
            if out is None:
                if frame.camera not in self._warned:
                    self._warned.add(frame.camera)
                    log.error(
                        "camera %s: a bin's roi lies outside the %dx%d frame; fix 'roi'",
                        frame.camera,
                        frame.width,
                        frame.height,
                    )
                continue
            for b, (fill, overflow) in zip(bins, out, strict=True):
                changes = self.states[b.id].observe_camera(frame.time, float(fill), float(overflow))
                await self._report(b, changes, camera=frame.camera)

    # -- outputs -----------------------------------------------------------------------------
    async def _report(self, b: BinConfig, changes: list[Change], camera: str | None) -> None:
        emitter = self.ctx.emitter
        state = self.states[b.id]
        list_changed = False
        for ch in changes:
            if ch.event in ("needs_collection", "emptied"):
                payload = env.BinPayload(
                    event=env.BinEvent(ch.event),
                    fill=round(ch.fill, 4),
                    fill_camera=_round(state.camera_fill(ch.time)),
                    fill_sensor=_round(state.sensor_fill(ch.time)),
                    threshold=ch.threshold,
                    overflow=_round(state.overflow(ch.time)),
                    camera=b.camera,
                    models=self.models,
                )
                log.info("bin %s: %s at %.0f%% full", b.id, ch.event, ch.fill * 100)
                await emitter.send(emitter.event(env.BinEnvelope, b.id, ch.time, payload))
                list_changed = True
            else:
                raised = ch.event == "overflow_raised"
                alarm = env.AlarmPayload(
                    rule=f"{self.name}.overflow",
                    point="overflow",
                    state=env.AlarmState.RAISED if raised else env.AlarmState.CLEARED,
                    severity=env.Severity.MAJOR,
                    value=round(ch.fill, 4),
                    limit=ch.threshold,
                    direction="above",
                    since=env.utc_datetime(state.overflow_since or ch.time),
                )
                log.warning("bin %s: overflow %s", b.id, "raised" if raised else "cleared")
                await emitter.send(emitter.alarm(b.id, ch.time, alarm))
                list_changed = True
        if list_changed:
            await self._send_collection("change")

    def collection(self) -> list[env.CollectionItem]:
        items = [
            env.CollectionItem(
                bin=bin_id,
                fill=round(min(1.0, s.fill or 0.0), 4),
                since=env.utc_datetime(s.needs_since or 0.0),
                overflowing=s.overflowing,
            )
            for bin_id, s in self.states.items()
            if s.needs_collection or s.overflowing
        ]
        return sorted(items, key=lambda i: (-int(i.overflowing), -i.fill, i.bin))

    async def _send_collection(self, reason: str) -> None:
        payload = env.CollectionPayload(
            bins=self.collection(),
            watched=len(self.states),
            reason="change" if reason == "change" else "periodic",
        )
        emitter = self.ctx.emitter
        now = self.ctx.clock.time()
        await emitter.send(emitter.event(env.CollectionEnvelope, self.ctx.gateway, now, payload))

    async def _periodic(self) -> None:
        clock = self.ctx.clock
        c = self.config
        next_report = clock.monotonic() + c.report_interval_s
        next_list = clock.monotonic() + c.collection_interval_s
        while True:
            await clock.sleep(max(0.0, min(next_report, next_list) - clock.monotonic()))
            now_m = clock.monotonic()
            if now_m >= next_report:
                next_report += c.report_interval_s
                await self._send_levels()
            if now_m >= next_list:
                next_list += c.collection_interval_s
                await self._send_collection("periodic")

    async def _send_levels(self) -> None:
        now = self.ctx.clock.time()
        emitter = self.ctx.emitter
        for bin_id, s in self.states.items():
            values: list[Reading] = []
            for point, v, unit in (
                ("fill", s.fused(now), "%"),
                ("fill_camera", s.camera_fill(now), "%"),
                ("fill_sensor", s.sensor_fill(now), "%"),
            ):
                if v is not None:
                    values.append(Reading(point, round(v * 100, 1), unit))
            over = s.overflow(now)
            if over is not None:
                values.append(Reading("overflow", round(over, 3)))
            if values:
                batch = ReadingBatch(self.name, bin_id, now, tuple(values))
                await emitter.send(emitter.telemetry(batch))

    async def _http_collection(self, _request: web.Request) -> web.Response:
        body: dict[str, Any] = {
            "app": self.name,
            "watched": len(self.states),
            "bins": [i.model_dump(mode="json") for i in self.collection()],
        }
        return web.json_response(body)


def _round(v: float | None) -> float | None:
    return None if v is None else round(min(1.0, v), 4)
