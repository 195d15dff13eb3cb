"""Hygiene end to end: a factory clip — a worker (a real person cut out of a registry photo)
walks into the clean zone wearing a hair cover and a mask, takes the mask off and stays — played
by the real camera source into the real gateway process. The city brain must get exactly one
violation, "no_mask", with an evidence crop in which no face can be found any more."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from hil import Subscriber
from vision_site import start_camera_site

from edge.hygiene.config import HygieneConfig
from edge.vision.face_detector import MtcnnDetector
from edge.vision.manifest import ModelStore
from models.build import card_range
from protocols import envelope as env
from sim.localsite import Broker, Proc
from sim.scenes.hygiene import CLEAN_ZONE, CLIP, write_factory_clip

FPS = 5.0
APP = f"""  - type: hygiene
    name: hygiene
    zones:
      - {{name: clean-1, camera: cam-1, polygon: {[list(p) for p in CLEAN_ZONE]}}}
    violation_after_s: 3
    evidence: {{folder: evidence, retention_days: 7}}
"""


def test_the_cover_margin_holds_for_every_model_within_the_card() -> None:
    """The worker wears a cap throughout: every hair-cover model within its card's tolerance
    scores the clip's heads above the app's threshold (default 0.5)."""
    threshold = HygieneConfig.model_fields["threshold"].default
    assert card_range("hair-cover", "clip.cover_low")[0] > threshold


def test_a_worker_who_removes_the_mask_in_the_clean_zone_is_one_violation(
    tmp_path: Path,
    mosquitto: Broker,
    subscriber_factory: Callable[[int], Subscriber],
    procs: list[Proc],  # after the broker: the gateway stops (and flushes) before it
) -> None:
    store = ModelStore()
    write_factory_clip(tmp_path / "factory.avi", store, CLIP, FPS)
    sub = subscriber_factory(mosquitto.port)
    gateway, _ = start_camera_site(tmp_path, procs, mosquitto, "factory.avi", APP, fps=FPS)
    sub.wait_for(lambda: "end of factory.avi" in gateway.tail(200), 120, "the end of the clip")
    sub.wait_for(lambda: bool(sub.of("hygiene")), 10, "a hygiene event")
    got = [m.envelope for m in sub.of("hygiene")]
    print("\nviolations:", *(e.payload.model_dump(exclude={"evidence"}) for e in got), sep="\n  ")
    assert len(got) == 1, "one person, one violation"
    event = got[0]
    assert isinstance(event, env.HygieneEnvelope)
    p = event.payload
    assert p.violations == [env.HygieneViolation.NO_MASK]
    assert (p.camera, p.zone) == ("cam-1", "clean-1")
    assert p.mask is not None and p.mask < 0.5
    assert p.hair_cover is not None and p.hair_cover >= 0.5
    assert p.models["hair-cover"] == store.entry("hair-cover").identity  # the file in use
    assert p.duration_s >= 3.0
    # the evidence: the JPEG in the event is the file kept on the gateway, and faces are blurred
    ev = p.evidence
    assert ev.jpeg_base64 is not None and ev.faces_blurred >= 1
    jpeg = base64.b64decode(ev.jpeg_base64)
    assert hashlib.sha256(jpeg).hexdigest() == ev.sha256
    kept = tmp_path / "evidence" / f"{ev.id}.jpg"
    assert kept.read_bytes() == jpeg
    crop = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None
    assert crop.shape[:2] == (ev.height, ev.width)
    faces = MtcnnDetector(store, min_face_px=20).detect(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
    assert not [f for f in faces if f.score > 0.9], "a face is still recognisable in the evidence"
