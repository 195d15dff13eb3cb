"""Bin fill and hygiene: model latency, frames per second per app, gateway CPU on a still scene.

- latency of each model per inference (one thread, as the apps run them);
- frames per second each app's worker sustains on 640x480 frames (the demo cameras' size):
  bin_fill on the generated day at one bin, hygiene on the factory clip with the worker in the
  clean zone (the expensive case: person, face and both classifiers) and on the empty floor;
- CPU and memory of the real gateway process running both apps on still 640x480 videos looping
  at the cameras' rate (bins 10 fps, floor 5 fps, a worker standing in the zone), motion gating
  on (default: a key frame every 5 s) and off.
"""

from __future__ import annotations

import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from rich.console import Console

from bench.common import measure_gateway, stamp
from edge.bin_fill.app import roi_crops
from edge.hygiene.crops import crop, face_square, head_box
from edge.hygiene.pipeline import HygienePipeline
from edge.vision.imageops import point_in_polygon
from edge.vision.manifest import ModelStore
from edge.vision.session import ModelSession
from sim.localsite import Proc, free_port
from sim.scenes import hygiene as scene
from sim.scenes.bins import ROI, DayPlan, day_frames
from sim.scenes.synth import encode_video

REPEATS = 60
WARMUP_S = 20.0
MEASURE_S = 30.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def model_latency(store: ModelStore, clip: list[np.ndarray]) -> dict[str, list[float]]:
    pipeline = HygienePipeline(store)
    pipeline.warm()
    frame = clip[len(clip) // 2]
    person = pipeline.people.detect(frame)[0]
    rgb = np.ascontiguousarray(frame[:, :, ::-1])
    face = pipeline.face_of(rgb, person)
    assert face is not None
    face_in = crop(frame, face_square(face.box), 224)[:, :, ::-1].astype(np.float32)[None]
    head_in = crop(frame, head_box(face.box), 64).astype(np.float32)[None]
    bins = ModelSession(store, "bin-fill")
    bins.warm()
    day = next(day_frames(DayPlan(seconds=0.1)))[0]
    roi = roi_crops(day, [ROI])
    assert roi is not None
    return {
        "centernet-person (640x480 → 512x512)": timed(
            lambda: pipeline.people.detect(frame), REPEATS
        ),
        "MTCNN on the person's upper box": timed(lambda: pipeline.face_of(rgb, person), REPEATS),
        "face-mask (224x224)": timed(lambda: pipeline.mask.run(face_in), REPEATS),
        "hair-cover (64x64)": timed(lambda: pipeline.cover.run(head_in), REPEATS * 5),
        "bin-fill (64x64)": timed(lambda: bins.run(roi), REPEATS * 5),
    }


def app_fps(store: ModelStore, clip: list[np.ndarray]) -> dict[str, float]:
    bins = ModelSession(store, "bin-fill", threads=1)
    bins.warm()
    days = [f for f, _ in day_frames(DayPlan(seconds=6, fps=10))]

    def bin_frame(i: int) -> None:
        batch = roi_crops(days[i % len(days)], [ROI])
        assert batch is not None
        bins.run(batch)

    pipeline = HygienePipeline(store)
    pipeline.warm()
    zone = np.array(scene.CLEAN_ZONE, np.float64)

    def wanted(box: np.ndarray) -> bool:
        return point_in_polygon((box[0] + box[2]) / 2, box[3] - 1, zone)

    in_zone = clip[25:45]
    empty = [scene.factory_floor()] * 5
    out = {}
    for name, fn, n in (
        ("bin_fill (one bin)", bin_frame, 200),
        ("hygiene, worker in the zone", lambda i: pipeline.analyse(in_zone[i % 20], wanted), 40),
        ("hygiene, empty floor", lambda i: pipeline.analyse(empty[i % 5], wanted), 40),
    ):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        out[name] = n / (time.perf_counter() - t0)
    return out


def still_videos(work: Path, clip: list[np.ndarray]) -> None:
    day = next(day_frames(DayPlan(seconds=0.1, start_fill=0.5, peak_fill=0.5)))[0]
    encode_video(str(work / "bin.avi"), [day] * 50, 10, (640, 480))
    encode_video(str(work / "floor.avi"), [clip[35]] * 25, 5, (640, 480))


def gateway_usage(work: Path, motion: bool) -> dict[str, float]:
    procs: list[Proc] = []
    try:
        http = free_port()
        site = work / "site.yaml"
        zone = [list(p) for p in scene.CLEAN_ZONE]
        m = str(motion).lower()
        site.write_text(
            f"""
site: bench
gateway: gw
http: {{port: {http}}}
sources:
  - {{type: camera, name: bcam, camera: bin-cam, url: bin.avi, fps: 10, loop: true, motion: {{enabled: {m}}}}}
  - {{type: camera, name: fcam, camera: floor-cam, url: floor.avi, fps: 5, loop: true, motion: {{enabled: {m}}}}}
apps:
  - {{type: bin_fill, name: bins, bins: [{{id: b1, camera: bin-cam, roi: {list(ROI)}}}]}}
  - {{type: hygiene, name: hygiene, zones: [{{name: z, camera: floor-cam, polygon: {zone}}}], evidence: {{folder: ev}}}}
""",
            encoding="utf-8",
        )
        return measure_gateway(procs, work, site, http, WARMUP_S, MEASURE_S, 60)
    finally:
        for p in reversed(procs):
            p.stop()


def run(console: Console) -> str:
    store = ModelStore()
    clip = list(scene.factory_frames(scene.worker_cutout(store), scene.CLIP, 5.0))
    console.print("model latency ...")
    lat = model_latency(store, clip)
    console.print("frames per second per app ...")
    fps = app_fps(store, clip)
    with TemporaryDirectory(prefix="bench-waste-food-") as tmp:
        work = Path(tmp)
        still_videos(work, clip)
        console.print("gateway on still scenes, motion gating on ...")
        gated = gateway_usage(work, motion=True)
        console.print("... and off")
        ungated = gateway_usage(work, motion=False)
    rows = "\n".join(
        f"| {name} | {pct(v, 50):.2f} ms | {pct(v, 95):.2f} ms |" for name, v in lat.items()
    )
    fps_rows = "\n".join(f"| {name} | {v:.1f} |" for name, v in fps.items())
    return f"""## Bin fill and hygiene (issue 9)

{stamp()}

Model latency per inference, one ONNX Runtime thread (the apps' setting), {REPEATS}+ runs:

| model | p50 | p95 |
|---|---|---|
{rows}

Frames per second one app's worker sustains on 640x480 frames (its one thread; the camera
source decodes in another):

| app | frames/s |
|---|---|
{fps_rows}

The gateway process running both apps on still 640x480 scenes (bin camera at 10 fps, factory
floor at 5 fps with a worker standing in the clean zone), {MEASURE_S:.0f} s after
{WARMUP_S:.0f} s of warm-up; CPU in % of one core:

| motion gating | CPU | RSS | peak RSS |
|---|---|---|---|
| on (default, a key frame every 5 s) | {gated["cpu"]:.1f}% | {gated["rss"]:.0f} MB | {gated["peak"]:.0f} MB |
| off (every frame analysed) | {ungated["cpu"]:.1f}% | {ungated["rss"]:.0f} MB | {ungated["peak"]:.0f} MB |

A frame the hygiene worker is still busy with when the next arrives is dropped by its frames
channel and counted (`cityedge_channel_dropped_total`); at the rates above it keeps up.
"""
