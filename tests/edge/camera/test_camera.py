"""The camera source on real video files: motion gating, keyframes, drop-newest counting,
looping, and clear errors."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge.camera.config import CameraSourceConfig
from edge.camera.source import CameraError, CameraSource
from edge.channel import Channel, Overflow
from edge.config.base import CheckContext
from edge.vision.frames import Frame
from tests.edge import contexts


def write_video(path: Path, xs: list[int | None], size: tuple[int, int] = (320, 240)) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, size)
    assert w.isOpened()
    for x in xs:
        img = np.full((size[1], size[0], 3), 90, np.uint8)
        if x is not None:
            img[60:180, x : x + 60] = 230
        w.write(img)
    w.release()


def drain(frames: Channel[Frame]) -> list[Frame]:
    out = []
    while (f := frames.get_nowait()) is not None:
        out.append(f)
    return out


def make(tmp_path: Path, frames: Channel[Frame], **overrides: object) -> CameraSource:
    cfg = {"type": "camera", "name": "cam", "camera": "door-cam", "url": "v.avi", "fps": 500}
    cfg.update(overrides)
    ctx = contexts.source("cam", base_dir=tmp_path, frames=frames).ctx
    return CameraSource(CameraSourceConfig.model_validate(cfg), ctx)


async def test_still_frames_are_skipped_and_motion_passes(tmp_path: Path) -> None:
    # 10 still, 8 moving, 12 still again
    write_video(tmp_path / "v.avi", [None] * 10 + list(range(20, 260, 30)) + [None] * 12)
    frames: Channel[Frame] = Channel("frames", 100)
    source = make(tmp_path, frames)
    await asyncio.wait_for(source.run(), 30)  # a file ends the source cleanly
    got = drain(frames)
    assert source.seq == 30
    motion = [f for f in got if not f.keyframe]
    # the first frame (no background yet), the 8 moving ones and the one where the block leaves
    assert 8 <= len(motion) <= 11, [(f.seq, round(f.motion, 3)) for f in got]
    assert {f.seq for f in motion} >= set(range(11, 19))
    assert source.counts["static"] >= 18
    assert source.counts["emitted"] == len(got)
    f = got[0]
    assert (f.camera, f.source, f.width, f.height) == ("door-cam", "cam", 320, 240)
    assert str(f.image.dtype) == "uint8"
    text = source.ctx.metrics.render().decode()
    assert 'cityedge_frames_total{camera="door-cam",outcome="static",source="cam"}' in text


async def test_a_still_scene_still_sends_keyframes(tmp_path: Path) -> None:
    write_video(tmp_path / "v.avi", [None] * 30)
    frames: Channel[Frame] = Channel("frames", 100)
    source = make(tmp_path, frames, fps=50, motion={"keyframe_interval_s": 0.2})
    await asyncio.wait_for(source.run(), 30)
    got = drain(frames)
    keyframes = [f for f in got if f.keyframe]
    # 30 frames at 50 fps = 0.6 s: the first frame (motion 1.0) then a keyframe every 0.2 s
    assert 1 <= len(keyframes) <= 4, [f.seq for f in got]
    assert not got[0].keyframe and got[0].motion == 1.0


async def test_a_full_frames_channel_drops_newest_and_counts(tmp_path: Path) -> None:
    write_video(tmp_path / "v.avi", list(range(0, 260, 13)))  # always moving
    frames: Channel[Frame] = Channel("frames", 1, Overflow.DROP_NEWEST)
    source = make(tmp_path, frames)
    await asyncio.wait_for(source.run(), 30)
    kept = frames.get_nowait()
    assert kept is not None and kept.seq == 1  # the oldest stays, newer ones are dropped
    assert frames.dropped == source.counts["dropped"] == source.seq - 1


async def test_motion_gating_can_be_off(tmp_path: Path) -> None:
    write_video(tmp_path / "v.avi", [None] * 5)
    frames: Channel[Frame] = Channel("frames", 100)
    source = make(tmp_path, frames, motion={"enabled": False})
    await asyncio.wait_for(source.run(), 30)
    assert frames.depth == 5


async def test_loop_restarts_the_file(tmp_path: Path) -> None:
    write_video(tmp_path / "v.avi", [10, 60, 110])
    frames: Channel[Frame] = Channel("frames", 100)
    source = make(tmp_path, frames, loop=True, motion={"enabled": False})
    task = asyncio.create_task(source.run())
    for _ in range(3000):
        if source.seq >= 7:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source._cap is None  # released on the way out


async def test_a_missing_file_is_a_camera_error(tmp_path: Path) -> None:
    source = make(tmp_path, Channel("frames", 1), url="nothing-here.avi")
    with pytest.raises(CameraError, match=r"cannot open nothing-here\.avi") as info:
        await source.run()
    assert info.value.code == "CE410" and info.value.hint


def test_config_checks() -> None:
    base = {"type": "camera", "name": "c", "camera": "cam"}
    with pytest.raises(ValidationError, match="device number"):
        CameraSourceConfig.model_validate({**base, "url": "usb:front"})
    with pytest.raises(ValidationError, match="give a file path"):
        CameraSourceConfig.model_validate({**base, "url": " "})
    with pytest.raises(ValidationError, match="fps"):
        CameraSourceConfig.model_validate({**base, "url": "a.avi", "fps": 0})
    kinds = {
        u: CameraSourceConfig.model_validate({**base, "url": u}).kind
        for u in ("usb:0", "rtsp://cam/1", "a.avi")
    }
    assert kinds == {"usb:0": "usb", "rtsp://cam/1": "rtsp", "a.avi": "file"}
    missing = CameraSourceConfig.model_validate({**base, "url": "none.avi"}).catalog(
        CheckContext(Path("/tmp"))
    )
    assert missing.devices == {"cam": {}}
    assert "no video file at /tmp/none.avi" in missing.problems[0][1]


class SlowCapture:
    """Stands in for ``cv2.VideoCapture`` (same ``read``/``release``/``set``): a read takes a
    while, and releasing during a read is what crashed OpenCV with a segmentation fault."""

    def __init__(self) -> None:
        self.reading = False
        self.released_during_read = False
        self.released = False
        self.reads = 0
        self.second_read = threading.Event()
        self.released_event = threading.Event()

    def read(self) -> tuple[bool, np.ndarray]:
        self.reading = True
        try:
            self.reads += 1
            if self.reads == 2:
                self.second_read.set()
            time.sleep(0.3)
            return True, np.full((240, 320, 3), 90, np.uint8)
        finally:
            self.reading = False

    def release(self) -> None:
        self.released_during_read = self.reading
        self.released = True
        self.released_event.set()

    def set(self, *_args: object) -> bool:
        return True


async def test_a_cancel_during_a_read_releases_the_capture_after_the_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = SlowCapture()
    frames: Channel[Frame] = Channel("frames", 100)
    source = make(tmp_path, frames, url="rtsp://camera.invalid/stream")
    monkeypatch.setattr(source, "_open", lambda: cap)
    task = asyncio.create_task(source.run())
    assert await asyncio.to_thread(cap.second_read.wait, 10)  # a read is in progress
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(cap.released_event.wait, 10)
    assert not cap.released_during_read
