"""Configuration of the ``hygiene`` app (pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.config.base import Catalog, Loc, PluginConfig, StrictModel
from edge.config.problems import did_you_mean
from protocols.envelope import Ident


class ZoneConfig(StrictModel):
    name: Ident = Field(description="Zone name (reported with each violation)")
    camera: Ident = Field(description="Camera whose view the polygon is drawn on")
    polygon: list[tuple[float, float]] = Field(
        min_length=3, description="Corners of the clean zone in the camera view, x, y pixels"
    )
    require_mask: bool = Field(default=True, description="A mask is required in this zone")
    require_hair_cover: bool = Field(default=True, description="A hair cover is required")

    @field_validator("polygon")
    @classmethod
    def _area(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        area = 0.0
        for (x1, y1), (x2, y2) in zip(v, v[1:] + v[:1], strict=True):
            area += x1 * y2 - x2 * y1
        if abs(area) < 1.0:
            raise ValueError("the polygon has no area (are the corners in a line?)")
        return v


class EvidenceConfig(StrictModel):
    folder: Path = Field(
        default=Path("evidence"), description="Where crops are kept (relative to the site file)"
    )
    blur_faces: bool = Field(default=True, description="Blur faces in evidence crops")
    inline: bool = Field(
        default=True, description="Send the JPEG in the event (else only its id and sha256)"
    )
    retention_days: float = Field(
        default=30.0, gt=0, le=365, description="Erase crops older than this"
    )
    max_files: int = Field(default=1000, ge=1, description="Keep at most this many crops")
    max_side_px: int = Field(default=320, ge=64, le=1920, description="Longest side of a crop")


class HygieneConfig(PluginConfig):
    """Mask and hair-cover compliance of people in clean zones; violations with evidence."""

    type: Literal["hygiene"] = Field(description="Plug-in type")
    zones: list[ZoneConfig] = Field(min_length=1, description="Clean zones")
    anchor: Literal["bottom", "centre"] = Field(
        default="bottom",
        description="Point of a person's box that must be in the zone: feet (bottom) or centre",
    )
    violation_after_s: float = Field(
        default=3.0, ge=0, description="Seconds without mask or cover before it is a violation"
    )
    reset_after_s: float = Field(
        default=5.0, ge=0, description="Seconds compliant again before a person can violate anew"
    )
    smoothing_s: float = Field(
        default=1.5, gt=0, description="Classifier outputs are the median over this window"
    )
    threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Probability under which mask or cover is missing"
    )
    min_person_score: float = Field(
        default=0.3, gt=0, lt=1, description="Person detector confidence to consider someone"
    )
    min_face_px: int = Field(default=32, ge=16, le=400, description="Smallest face judged")
    track_timeout_s: float = Field(
        default=3.0, gt=0, description="A person unseen this long gets a new track id"
    )
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description="Evidence crops")
    models_dir: Path | None = Field(
        default=None,
        description="Built models folder (default: $CITYEDGE_MODELS_DIR or models/build)",
    )
    threads: int = Field(default=1, ge=1, le=8, description="Inference threads per model")

    @model_validator(mode="after")
    def _names(self) -> HygieneConfig:
        names = [z.name for z in self.zones]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"zone names used twice: {', '.join(twice)}")
        return self

    def wants_frames(self, camera: str) -> bool:
        return any(z.camera == camera for z in self.zones)

    def evidence_path(self, base_dir: Path) -> Path:
        f = self.evidence.folder
        return f if f.is_absolute() else base_dir / f

    def check(self, catalog: Catalog) -> list[tuple[Loc, str]]:
        return [
            (
                ("zones", i, "camera"),
                f"no source provides camera {z.camera!r}{did_you_mean(z.camera, catalog.devices)}",
            )
            for i, z in enumerate(self.zones)
            if z.camera not in catalog.devices
        ]
