"""Source ``camera``: frames from OpenCV (file, RTSP, USB), off the event loop, motion-gated.

Per frame, one worker-thread call reads (and decodes) the frame, resizes it if asked, and scores
motion against the running background — the event loop only receives finished
:class:`~edge.vision.frames.Frame` s. Then:

- frames in which nothing moves are not sent (``cityedge_frames_total{outcome="static"}``),
  except one every ``keyframe_interval_s`` so apps still see the scene;
- frames are put into the gateway's frames channel, whose ``drop_newest`` policy refuses and
  counts what a busy pipeline cannot take (``cityedge_channel_dropped_total``);
- live sources (RTSP, USB) are read as fast as they deliver — reading late lets a stream's
  buffer fill with stale frames — and frames beyond ``fps`` are skipped
  (``outcome="rate"``); files play at ``fps`` on the injected clock, as a camera would.

All OpenCV calls on a capture run in the source's one worker thread, in order: a read still in
progress when the source is cancelled finishes before the capture is released (releasing it from
another thread in the middle of a read crashed the process with a segmentation fault).

A stream or USB camera that fails to open or stops delivering raises :class:`CameraError` (a
transient error: the supervisor reopens it with backoff). A file that ends stops the source
cleanly unless ``loop`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import cv2
import numpy as np
from prometheus_client import CollectorRegistry, Counter

from edge.camera.config import CameraSourceConfig
from edge.errors import TransientError
from edge.plugin import Plugin, SourceContext
from edge.vision.frames import Frame
from edge.vision.motion import MotionGate

log = logging.getLogger(__name__)

T = TypeVar("T")


class CameraError(TransientError):
    code = "CE410"


class CameraMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames = Counter(
            "cityedge_frames",
            "Camera frames by outcome",
            ["source", "camera", "outcome"],
            registry=registry,
        )


class CameraSource(Plugin):
    def __init__(self, config: CameraSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self.ctx = ctx
        self.name = config.name
        m = config.motion
        self.gate = MotionGate(m.pixel_threshold, m.min_area, m.background_alpha)
        self._cap: Any = None
        self.seq = 0
        self.counts = {"emitted": 0, "static": 0, "rate": 0, "dropped": 0}
        self._counter = ctx.metrics.own(CameraMetrics).frames
        self._io: ThreadPoolExecutor | None = None

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        """``fn()`` in this source's one worker thread, after whatever runs there already."""
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix=f"camera-{self.name}")
        return await asyncio.get_running_loop().run_in_executor(self._io, fn)

    # -- blocking parts, run in a worker thread ---------------------------------------------
    def _open(self) -> Any:
        c = self.config
        if c.kind == "usb":
            cap = cv2.VideoCapture(int(c.url[4:]), cv2.CAP_V4L2)
            if c.width and c.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, c.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, c.height)
        elif c.kind == "rtsp":
            cap = cv2.VideoCapture(
                c.url,
                cv2.CAP_FFMPEG,
                [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                    int(c.open_timeout_s * 1000),
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                    int(c.read_timeout_s * 1000),
                ],
            )
        else:
            cap = cv2.VideoCapture(str(c.file_path(self.ctx.check.base_dir)))
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"camera {c.camera}: cannot open {c.url}",
                hint="check the address, credentials and network (RTSP), the device node and "
                "its permissions (USB), or the file path and codec (file)",
            )
        return cap

    def _grab(self) -> tuple[np.ndarray | None, float, float]:
        """Read one frame (None at the end of a file), its motion score and when it was read."""
        ok, image = self._cap.read()
        read_at = time.monotonic()
        if not ok or image is None:
            return None, 0.0, read_at
        c = self.config
        if c.width and c.height and (image.shape[1], image.shape[0]) != (c.width, c.height):
            image = cv2.resize(image, (c.width, c.height), interpolation=cv2.INTER_AREA)
        score = self.gate.score(image) if c.motion.enabled else 1.0
        return image, score, read_at

    def _rewind(self) -> None:
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    # -- the loop ----------------------------------------------------------------------------
    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self._counter.labels(self.name, self.config.camera, outcome).inc()

    async def run(self) -> None:
        c = self.config
        clock = self.ctx.clock
        try:
            async with asyncio.timeout(c.open_timeout_s):
                self._cap = await self._in_thread(self._open)
        except TimeoutError:
            if self._io is not None:  # the open goes on in the thread; the thread then ends
                self._io.shutdown(wait=False)
                self._io = None
            raise CameraError(
                f"camera {c.camera}: opening {c.url} took longer than {c.open_timeout_s} s",
                hint="check that the camera answers",
            ) from None
        live = c.kind != "file"
        period = 1.0 / c.fps
        next_due = clock.monotonic()
        last_sent = -float("inf")
        log.info("camera %s: reading %s (%s) at %.1f fps", c.camera, c.url, c.kind, c.fps)
        try:
            while True:
                try:
                    async with asyncio.timeout(c.read_timeout_s if live else None):
                        image, score, read_at = await self._in_thread(self._grab)
                except TimeoutError:
                    raise CameraError(
                        f"camera {c.camera}: no frame within {c.read_timeout_s} s",
                        hint="the stream stalled; the source reconnects",
                    ) from None
                now = clock.monotonic()
                if image is None:
                    if live:
                        raise CameraError(
                            f"camera {c.camera}: the stream ended", hint="reconnecting"
                        )
                    if c.loop:
                        await self._in_thread(self._rewind)
                        continue
                    log.info("camera %s: end of %s after %d frames", c.camera, c.url, self.seq)
                    return
                if live and now < next_due:
                    self._count("rate")
                    continue
                next_due = max(next_due + period, now) if live else next_due + period
                self.seq += 1
                moves = self.gate.moves(score)
                keyframe = not moves and now - last_sent >= c.motion.keyframe_interval_s
                if moves or keyframe:
                    frame = Frame(
                        self.name, c.camera, self.seq, clock.time(), read_at, image, score, keyframe
                    )
                    if await self.ctx.frames.put(frame):
                        self._count("emitted")
                        last_sent = now
                    else:
                        self._count("dropped")
                else:
                    self._count("static")
                if not live:
                    await clock.sleep(next_due - clock.monotonic())
        finally:
            cap, self._cap = self._cap, None
            io, self._io = self._io, None
            if io is not None:
                if cap is not None:  # queued behind a read still in progress, never beside it
                    io.submit(cap.release)
                io.shutdown(wait=False)
