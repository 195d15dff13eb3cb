"""Configuration of the ``camera`` source (pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from edge.config.base import CheckContext, PluginConfig, SourceCatalog, StrictModel
from protocols.envelope import Ident


class MotionConfig(StrictModel):
    enabled: bool = Field(default=True, description="Skip frames in which nothing moves")
    pixel_threshold: float = Field(
        default=15.0, gt=0, le=255, description="Grey-level change that counts a pixel as moved"
    )
    min_area: float = Field(
        default=0.003, ge=0, le=1, description="Share of the scene that must move (0.003 = 0.3%)"
    )
    background_alpha: float = Field(
        default=0.05, gt=0, le=1, description="How fast the background learns a new still scene"
    )
    keyframe_interval_s: float = Field(
        default=5.0, gt=0, description="Send a frame this often even when nothing moves"
    )


class CameraSourceConfig(PluginConfig):
    """A camera read with OpenCV: a video file, an RTSP stream or a USB (V4L2) camera."""

    type: Literal["camera"] = Field(description="Plug-in type")
    camera: Ident = Field(description="Device id of the camera (apps name it in 'cameras')")
    url: str = Field(
        description="'rtsp://...' stream, 'usb:N' for /dev/videoN, or a video file path "
        "(relative to the site file)"
    )
    fps: float = Field(
        default=10.0, gt=0, le=1000, description="Frames per second taken (files play at this rate)"
    )
    loop: bool = Field(default=False, description="Files: start again at the end")
    width: int | None = Field(
        default=None, ge=16, le=8192, description="Resize frames to this width"
    )
    height: int | None = Field(
        default=None, ge=16, le=8192, description="Resize frames to this height"
    )
    open_timeout_s: float = Field(default=10.0, gt=0, description="Deadline to open the camera")
    read_timeout_s: float = Field(
        default=5.0, gt=0, description="Deadline for one frame from a stream or USB camera"
    )
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Motion gating")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give a file path, 'rtsp://host/path' or 'usb:N'")
        if v.startswith("usb:") and not v[4:].isdigit():
            raise ValueError(f"'usb:' needs a device number, e.g. 'usb:0' (got {v!r})")
        return v

    @property
    def kind(self) -> Literal["file", "rtsp", "usb"]:
        if self.url.startswith("usb:"):
            return "usb"
        if "://" in self.url:
            return "rtsp"
        return "file"

    def file_path(self, base_dir: Path) -> Path:
        p = Path(self.url.removeprefix("file:"))
        return p if p.is_absolute() else base_dir / p

    def catalog(self, ctx: CheckContext) -> SourceCatalog:
        found = SourceCatalog(devices={self.camera: {}})
        if self.kind == "file" and not self.file_path(ctx.base_dir).is_file():
            found.problems.append((("url",), f"no video file at {self.file_path(ctx.base_dir)}"))
        return found
