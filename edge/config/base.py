"""Pieces every configuration model shares.

Rules for every model: ``extra="forbid"`` (a typo is an error, not a silent default), a
``description`` on every field (a test walks all models to keep it so), units in field names
(``poll_interval_s``, ``timeout_ms``), secrets as :class:`pydantic.SecretStr` so dumps and logs
show ``**********``.

A plug-in's model subclasses :class:`PluginConfig` and adds ``type: Literal["..."]``. Cross-
component checks (does the device a rule names exist?) are a second, read-only pass over the
whole site: :meth:`PluginConfig.catalog` says what a source provides and
:meth:`PluginConfig.check` looks at the whole :class:`Catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edge.config.problems import did_you_mean
from edge.supervisor import RestartPolicy
from protocols.envelope import Ident

Loc = tuple[str | int, ...]


class StrictModel(BaseModel):
    # .inf and .nan are YAML floats: no setting means them (a timeout of .inf never ends)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RestartConfig(StrictModel):
    policy: RestartPolicy = Field(
        default=RestartPolicy.ON_FAILURE,
        description="When the supervisor restarts this plug-in: always, on_failure or never",
    )
    backoff_initial_s: float = Field(
        default=1.0, gt=0, le=3600, description="First wait before a restart, in seconds"
    )
    backoff_max_s: float = Field(
        default=60.0, gt=0, le=86400, description="Longest wait between restarts, in seconds"
    )


@dataclass(frozen=True)
class PointInfo:
    """What the rest of the site may know about a point without talking to the device."""

    unit: str | None = None
    writable: bool = False


@dataclass
class SourceCatalog:
    """What one source provides (see :meth:`PluginConfig.catalog`)."""

    devices: dict[str, dict[str, PointInfo]] = field(default_factory=dict)
    problems: list[tuple[Loc, str]] = field(default_factory=list)
    incomplete: set[str] = field(default_factory=set)


@dataclass
class Catalog:
    """Devices and points the site's sources provide, for cross-component checks."""

    devices: dict[str, dict[str, PointInfo]] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # device -> source name
    # devices whose point list is unknown because of another problem (e.g. a missing profile):
    # checks skip their points so one mistake is reported once
    incomplete: set[str] = field(default_factory=set)

    def no_device(self, device: str) -> str:
        """The problem to report when no source provides ``device``."""
        return f"no source provides device {device!r}{did_you_mean(device, self.devices)}"

    def no_point(self, device: str, point: str) -> str:
        """The problem to report when ``device`` (which a source provides) lacks ``point``."""
        points = self.devices[device]
        hint = did_you_mean(point, points) or f"; it has {', '.join(points)}"
        return f"device {device!r} has no point {point!r}{hint}"


@dataclass(frozen=True)
class CheckContext:
    """Read-only facts the second pass may use: where the site file is, shipped profiles."""

    base_dir: Path
    profiles_dirs: tuple[Path, ...] = ()


class PluginConfig(StrictModel):
    """Fields every source, app and sink has."""

    name: Ident = Field(description="Unique name of this plug-in within the site")
    restart: RestartConfig = Field(
        default_factory=RestartConfig, description="Restart policy under the supervisor"
    )

    def catalog(self, ctx: CheckContext) -> SourceCatalog:
        """Devices and points this plug-in provides, and problems found working them out."""
        return SourceCatalog()

    def check(self, catalog: Catalog) -> list[tuple[Loc, str]]:
        """Problems that need the rest of the site to see (loc relative to this plug-in)."""
        return []

    def wants_frames(self, camera: str) -> bool:
        """True if this app wants the frames of ``camera`` in its ``frames`` channel."""
        return False

    def wants_credentials(self, reader: str) -> bool:
        """True if this app wants the cards and PINs of ``reader`` in its ``credentials``."""
        return False

    def pages(self) -> list[str]:
        """Pages this plug-in serves to people (names on a screen, an enrolment form): the
        site check refuses to serve them in plain HTTP beyond this machine."""
        return []
