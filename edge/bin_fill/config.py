"""Configuration of the ``bin_fill`` app (pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.config.base import Catalog, Loc, PluginConfig, StrictModel
from edge.config.problems import did_you_mean
from protocols.envelope import Ident


class LevelSensorConfig(StrictModel):
    """A device point that reports the bin's fill (e.g. the ultrasonic bin node)."""

    device: Ident = Field(description="Device whose readings carry the fill level")
    point: Ident = Field(default="fill", description="Point with the fill level")
    unit: Literal["fraction", "percent"] = Field(
        default="percent", description="fraction: 0..1; percent: 0..100"
    )


class BinConfig(StrictModel):
    id: Ident = Field(description="Bin id (the device id of its events)")
    camera: Ident | None = Field(default=None, description="Camera that sees the bin from above")
    roi: tuple[int, int, int, int] | None = Field(
        default=None,
        description="Region of the camera view around the bin: x1, y1, x2, y2 pixels; draw it "
        "around the rim with 10-30% margin, as the model was trained",
    )
    sensor: LevelSensorConfig | None = Field(
        default=None, description="Level sensor of this bin, combined with the camera"
    )
    collect_at: float | None = Field(
        default=None, gt=0, le=1, description="Collection threshold for this bin (default: app's)"
    )

    @model_validator(mode="after")
    def _source(self) -> BinConfig:
        if self.camera is None and self.sensor is None:
            raise ValueError("a bin needs a 'camera' (with 'roi') or a 'sensor', or both")
        if self.camera is not None and self.roi is None:
            raise ValueError("a bin watched by a camera needs its 'roi' (x1, y1, x2, y2)")
        if self.roi is not None:
            x1, y1, x2, y2 = self.roi
            if x1 < 0 or y1 < 0 or x2 - x1 < 16 or y2 - y1 < 16:
                raise ValueError(f"roi {self.roi}: x1, y1 >= 0 and at least 16x16 pixels")
        return self


class BinFillConfig(PluginConfig):
    """Fill level of bins from cameras and level sensors; collection events and list."""

    type: Literal["bin_fill"] = Field(description="Plug-in type")
    bins: list[BinConfig] = Field(min_length=1, description="Bins to watch")
    collect_at: float = Field(
        default=0.8, gt=0, le=1, description="Fill fraction at which a bin needs collection"
    )
    emptied_below: float = Field(
        default=0.25, gt=0, lt=1, description="A bin that was full falls below this: emptied"
    )
    rearm_at: float = Field(
        default=0.5, gt=0, le=1, description="Fill a bin must have reached to count an emptying"
    )
    overflow_at: float = Field(
        default=0.6, gt=0, le=1, description="Overflow probability that raises the alarm"
    )
    overflow_clear: float = Field(
        default=0.3, ge=0, lt=1, description="Overflow probability under which it clears"
    )
    overflow_for_s: float = Field(
        default=30.0, ge=0, description="How long overflow must last before the alarm"
    )
    window_s: float = Field(
        default=120.0, gt=0, description="Camera estimates are the median over this window"
    )
    sensor_max_age_s: float = Field(
        default=3600.0, gt=0, description="A sensor reading older than this is not used"
    )
    camera_weight: float = Field(
        default=1.0, ge=0, description="Weight of the camera estimate in the combined fill"
    )
    sensor_weight: float = Field(
        default=1.0, ge=0, description="Weight of the sensor reading in the combined fill"
    )
    min_interval_s: float = Field(
        default=0.0,
        ge=0,
        description="Analyse a camera at most this often (0: every frame the camera sends)",
    )
    report_interval_s: float = Field(
        default=300.0, gt=0, description="Send each bin's fill as telemetry this often"
    )
    collection_interval_s: float = Field(
        default=3600.0, gt=0, description="Send the collection list at least this often"
    )
    models_dir: Path | None = Field(
        default=None,
        description="Built models folder (default: $CITYEDGE_MODELS_DIR or models/build)",
    )
    threads: int = Field(default=1, ge=1, le=8, description="Inference threads")

    @model_validator(mode="after")
    def _order(self) -> BinFillConfig:
        if not self.emptied_below < self.rearm_at <= self.collect_at:
            raise ValueError("expected emptied_below < rearm_at <= collect_at")
        if not self.overflow_clear < self.overflow_at:
            raise ValueError("expected overflow_clear < overflow_at")
        ids = [b.id for b in self.bins]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"bin ids used twice: {', '.join(twice)}")
        return self

    def wants_frames(self, camera: str) -> bool:
        return any(b.camera == camera for b in self.bins)

    def check(self, catalog: Catalog) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        for i, b in enumerate(self.bins):
            if b.camera is not None and b.camera not in catalog.devices:
                hint = did_you_mean(b.camera, catalog.devices)
                problems.append(
                    (("bins", i, "camera"), f"no source provides camera {b.camera!r}{hint}")
                )
            if b.sensor is None:
                continue
            points = catalog.devices.get(b.sensor.device)
            if points is None:
                problems.append(
                    (
                        ("bins", i, "sensor", "device"),
                        catalog.no_device(b.sensor.device),
                    )
                )
            elif (
                b.sensor.device not in catalog.incomplete
                and points
                and b.sensor.point not in points
            ):
                problems.append(
                    (
                        ("bins", i, "sensor", "point"),
                        catalog.no_point(b.sensor.device, b.sensor.point),
                    )
                )
        return problems
