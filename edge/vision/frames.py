"""Frames: the item a camera source emits, as readings are what a Modbus source emits.

A :class:`Frame` travels from a source to the apps that asked for its camera (see
:meth:`edge.config.base.PluginConfig.wants_frames`) through bounded channels with the
``drop_newest`` policy: an app that is busy keeps the frame it works on and the ones that arrive
meanwhile are counted as dropped (``cityedge_channel_dropped_total{channel="frames:<app>"}``).

The pixel array is never copied on the way and never leaves the gateway: events carry what an
app decided, not images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    source: str  # the camera source plug-in
    camera: str  # the device id of the camera (as in the site's catalog)
    seq: int  # frame number from this camera since the source started
    time: float  # wall-clock Unix seconds when it was captured (injected clock)
    captured_mono: float  # monotonic seconds when captured, for latency measurements
    image: np.ndarray  # H x W x 3, uint8, BGR (OpenCV's order)
    motion: float  # fraction of the scene that changed since the background (0..1)
    keyframe: bool = False  # sent although nothing moved (periodic, so apps see the scene)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
