"""Bin fill end to end: a generated day at one bin (it fills, the truck empties it) played by
the real camera source into the real gateway process; the city brain (a subscriber on
mosquitto) must get exactly one "needs collection" and one "emptied" event, in that order, and
the collection list must follow them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hil import Subscriber, http_json
from vision_site import start_camera_site

from edge.vision.manifest import ModelStore
from models.build import card_range
from models.train.recipes import day_plan
from protocols import envelope as env
from sim.localsite import Broker, Proc
from sim.scenes.bins import ROI, write_day_video

# Thresholds outside what every bin-fill model within its card's tolerance reads on this day
# (checked below): full bin >= day.full_min, empty bin <= day.empty_max, no overflow.
COLLECT_AT, EMPTIED_BELOW, OVERFLOW_AT = 0.55, 0.25, 0.6
APP = f"""  - type: bin_fill
    name: bins
    bins:
      - {{id: bin-12, camera: cam-1, roi: [{", ".join(str(v) for v in ROI)}]}}
    collect_at: {COLLECT_AT}
    emptied_below: {EMPTIED_BELOW}
    overflow_at: {OVERFLOW_AT}
    window_s: 1.5
    overflow_for_s: 2
    report_interval_s: 5
"""


def test_the_margins_hold_for_every_model_within_the_card() -> None:
    assert card_range("bin-fill", "day.full_min")[0] > COLLECT_AT
    assert card_range("bin-fill", "day.empty_max")[1] < EMPTIED_BELOW
    assert card_range("bin-fill", "day.overflow_max")[1] < OVERFLOW_AT


def test_a_bin_that_fills_and_is_emptied_gives_one_event_each(
    tmp_path: Path,
    mosquitto: Broker,
    subscriber_factory: Callable[[int], Subscriber],
    procs: list[Proc],  # after the broker: the gateway stops (and flushes) before it
) -> None:
    plan = day_plan()  # the day the card's day.* metrics measure
    frames = write_day_video(tmp_path / "bin.avi", plan)
    sub = subscriber_factory(mosquitto.port)
    gateway, http = start_camera_site(
        tmp_path, procs, mosquitto, "bin.avi", APP, fps=plan.fps, keyframe_s=0.3
    )
    sub.wait_for(lambda: "end of bin.avi" in gateway.tail(200), 120, "the end of the video")
    time.sleep(1.0)  # the last frames' events
    events = [m.envelope for m in sub.of("bin", "bin-12")]
    kinds = [e.payload.event for e in events if isinstance(e, env.BinEnvelope)]
    print(f"\n{frames} frames; bin events:", *(e.payload for e in events), sep="\n  ")
    assert kinds == [env.BinEvent.NEEDS_COLLECTION, env.BinEvent.EMPTIED]
    full, emptied = (e.payload for e in events if isinstance(e, env.BinEnvelope))
    assert full.fill >= COLLECT_AT and full.fill_camera is not None and full.fill_sensor is None
    assert emptied.fill < EMPTIED_BELOW
    # the file that decided is the one in use (CITYEDGE_MODELS_DIR swaps in a retrained folder)
    assert emptied.models["bin-fill"] == ModelStore().entry("bin-fill").identity
    assert events[0].time < events[1].time
    # the truck's list: the bin appears when it needs collection and goes when emptied
    lists = [
        m.envelope.payload
        for m in sub.of("collection")
        if isinstance(m.envelope, env.CollectionEnvelope)
    ]
    changes = [[i.bin for i in p.bins] for p in lists if p.reason == "change"]
    assert changes == [["bin-12"], []], changes
    assert http_json(f"http://127.0.0.1:{http}/bins/bins/collection")["bins"] == []
    assert not sub.of("alarm"), "no overflow in this day"
    levels = [m.envelope for m in sub.of("telemetry", "bin-12")]
    assert levels, "fill levels are reported as telemetry"
