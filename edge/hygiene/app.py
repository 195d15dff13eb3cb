"""App ``hygiene``: people in a food factory's clean zones without mask or hair cover.

Per frame of a watched camera (motion-gated by the camera source; frames that arrive while the
app is busy are dropped and counted by the frames channel), in the app's one worker thread
(:class:`~edge.hygiene.pipeline.HygienePipeline`): people → those whose anchor point (feet by
default) lies in a clean zone polygon → their face → mask and hair-cover probabilities.

On the event loop, an IoU tracker (:class:`~edge.vision.tracker.IouTracker`) keeps one id per
person across frames, and a :class:`~edge.hygiene.state.PersonState` per track decides: a
violation is a person non-compliant for ``violation_after_s`` — reported once per person, not
per frame, and again only after they were compliant for ``reset_after_s``.

A violation becomes a ``hygiene`` envelope with an evidence crop of the person: faces blurred
(every face the detector finds in the crop, and the reported person's face box), JPEG, kept in
``evidence.folder`` for ``evidence.retention_days`` (at most ``evidence.max_files``), and sent
inline unless ``evidence.inline`` is off.
"""

from __future__ import annotations

import base64
import logging

import numpy as np

from edge.hygiene.config import HygieneConfig, ZoneConfig
from edge.hygiene.evidence import Crop, EvidenceStore, evidence_crop
from edge.hygiene.pipeline import HygienePipeline, PersonView
from edge.hygiene.state import PersonState, Rules, Verdict
from edge.plugin import AppContext, Plugin
from edge.vision.frames import Frame
from edge.vision.imageops import point_in_polygon
from edge.vision.tracker import IouTracker
from edge.vision.worker import VisionWorker, models_store
from protocols import envelope as env

log = logging.getLogger(__name__)
PURGE_INTERVAL_S = 3600.0


class HygieneApp(Plugin):
    def __init__(self, config: HygieneConfig, ctx: AppContext) -> None:
        self.config = config
        self.ctx = ctx
        self.name = config.name
        self.worker = VisionWorker(config.name)
        self.store = models_store(config.models_dir, ctx.check.base_dir)
        self.pipeline: HygienePipeline | None = None
        self.evidence = EvidenceStore(
            config.evidence_path(ctx.check.base_dir),
            config.evidence.retention_days,
            config.evidence.max_files,
        )
        self.zones: dict[str, list[tuple[ZoneConfig, np.ndarray]]] = {}
        for z in config.zones:
            self.zones.setdefault(z.camera, []).append((z, np.array(z.polygon, np.float64)))
        self.trackers: dict[str, IouTracker] = {}
        self.people: dict[tuple[str, int], PersonState] = {}
        self.models: dict[str, str] = {}
        self.frames_seen = 0
        self.violations = 0

    # -- geometry ----------------------------------------------------------------------------
    def zone_of(self, camera: str, box: np.ndarray) -> ZoneConfig | None:
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        x = (x1 + x2) / 2
        y = y2 - 1 if self.config.anchor == "bottom" else (y1 + y2) / 2
        for zone, polygon in self.zones.get(camera, []):
            if point_in_polygon(x, y, polygon):
                return zone
        return None

    # -- lifecycle ---------------------------------------------------------------------------
    def _load(self) -> HygienePipeline:
        c = self.config
        pipeline = HygienePipeline(
            self.store,
            threads=c.threads,
            min_person_score=c.min_person_score,
            min_face_px=c.min_face_px,
        )
        pipeline.warm()
        return pipeline

    async def run(self) -> None:
        try:
            self.pipeline = await self.worker.call(self._load)
        except BaseException:
            await self.worker.close()
            raise
        self.models = self.pipeline.model_versions
        log.info("hygiene %s: models %s", self.name, ", ".join(self.models.values()))
        await self.worker.serve(self._process_frames, self._drain_inbox, self._purge)

    async def _drain_inbox(self) -> None:
        """Readings reach every app; this one has no use for them."""
        async for _batch in self.ctx.inbox:
            pass

    async def _purge(self) -> None:
        while True:
            await self.worker.call(self.evidence.purge, self.ctx.clock.time())
            await self.ctx.clock.sleep(PURGE_INTERVAL_S)

    # -- frames ------------------------------------------------------------------------------
    def _analyse(self, frame: Frame) -> list[PersonView]:
        assert self.pipeline is not None
        return self.pipeline.analyse(
            frame.image, wanted=lambda box: self.zone_of(frame.camera, box) is not None
        )

    async def _process_frames(self) -> None:
        async for frame in self.ctx.frames:
            views = await self.worker.call(self._analyse, frame)
            self.frames_seen += 1
            await self.handle(frame, views)

    def _rules(self, zone: ZoneConfig) -> Rules:
        c = self.config
        return Rules(
            require_mask=zone.require_mask,
            require_hair_cover=zone.require_hair_cover,
            threshold=c.threshold,
            smoothing_s=c.smoothing_s,
            violation_after_s=c.violation_after_s,
            reset_after_s=c.reset_after_s,
        )

    async def handle(self, frame: Frame, views: list[PersonView]) -> list[Verdict]:
        tracker = self.trackers.setdefault(
            frame.camera, IouTracker(timeout_s=self.config.track_timeout_s)
        )
        tracks = tracker.update([v.box for v in views], frame.time)
        live = {(frame.camera, t.id) for t in tracker.tracks.values()}
        for key in [k for k in self.people if k[0] == frame.camera and k not in live]:
            del self.people[key]
        verdicts: list[Verdict] = []
        for view, track in zip(views, tracks, strict=True):
            zone = self.zone_of(frame.camera, view.box)
            if zone is None or view.mask is None or view.cover is None:
                continue
            key = (frame.camera, track.id)
            state = self.people.setdefault(key, PersonState(self._rules(zone)))
            verdict = state.observe(frame.time, view.mask, view.cover)
            if verdict is not None:
                verdicts.append(verdict)
                await self._report(frame, zone, track.id, view, views, verdict)
        return verdicts

    def _evidence(self, frame: Frame, view: PersonView, views: list[PersonView]) -> Crop:
        assert self.pipeline is not None
        faces = [v.face.box for v in views if v.face is not None]
        x1, y1, x2, y2 = (int(v) for v in view.box[:4])
        region = np.ascontiguousarray(frame.image[max(0, y1) : y2, max(0, x1) : x2][:, :, ::-1])
        if region.size:
            for f in self.pipeline.faces.detect(region):
                faces.append(f.box[:4] + np.array([max(0, x1), max(0, y1)] * 2))
        ev = self.config.evidence
        return evidence_crop(
            frame.image, view.box, faces, blur=ev.blur_faces, max_side=ev.max_side_px
        )

    async def _report(
        self,
        frame: Frame,
        zone: ZoneConfig,
        track: int,
        view: PersonView,
        views: list[PersonView],
        verdict: Verdict,
    ) -> None:
        crop = await self.worker.call(self._evidence, frame, view, views)
        evidence_id = f"{frame.camera}-{round(frame.time * 1000)}-{track}"
        await self.worker.call(self.evidence.save, evidence_id, crop.jpeg)
        self.violations += 1
        payload = env.HygienePayload(
            camera=frame.camera,
            zone=zone.name,
            track=track,
            violations=[env.HygieneViolation(v) for v in verdict.violations],
            since=env.utc_datetime(verdict.since),
            duration_s=round(verdict.duration_s, 2),
            mask=None if verdict.mask is None else round(verdict.mask, 4),
            hair_cover=None if verdict.cover is None else round(verdict.cover, 4),
            person_score=round(min(1.0, view.score), 4),
            evidence=env.Evidence(
                id=evidence_id,
                sha256=crop.sha256,
                width=crop.width,
                height=crop.height,
                faces_blurred=len(crop.blurred),
                jpeg_base64=base64.b64encode(crop.jpeg).decode()
                if self.config.evidence.inline
                else None,
            ),
            models=self.models,
        )
        log.warning(
            "hygiene %s: camera %s zone %s person %d: %s for %.1f s (evidence %s)",
            self.name,
            frame.camera,
            zone.name,
            track,
            ", ".join(verdict.violations),
            verdict.duration_s,
            evidence_id,
        )
        emitter = self.ctx.emitter
        await emitter.send(emitter.event(env.HygieneEnvelope, frame.camera, frame.time, payload))
