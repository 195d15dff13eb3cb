"""Device profiles shipped as data: a register map plus how a simulator should behave.

A profile is a YAML file named ``<name>.yaml`` in this folder (shipped) or in a site's
``profiles_dirs``; site folders are searched first, so a site can override a shipped profile.
A few register maps are contracts kept as data in :mod:`protocols` (the signal controller's);
they are offered here as built-in profiles under their own names, without a YAML copy.
The ``sim`` block of a point drives ``cityedge simulate``: values wander around ``nominal``
within ``minimum``..``maximum``, with noise and a slow cycle, as the real quantity would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

from pydantic import Field, model_validator

from edge.config.base import StrictModel
from edge.config.problems import load_model
from edge.modbus.config import ModbusPointConfig
from protocols.envelope import Ident

SHIPPED_DIR = Path(__file__).parent


class SimBehaviour(StrictModel):
    nominal: float = Field(description="Typical value")
    minimum: float = Field(description="Lowest plausible value; the simulation stays above it")
    maximum: float = Field(description="Highest plausible value; the simulation stays below it")
    noise: float = Field(default=0.0, ge=0, description="Standard deviation of each step's noise")
    cycle_amplitude: float = Field(default=0.0, ge=0, description="Amplitude of the slow cycle")
    cycle_period_s: float = Field(
        default=600.0, gt=0, description="Period of the slow cycle, seconds"
    )
    reversion: float = Field(
        default=0.05, ge=0, le=1, description="Pull back towards nominal per second (0..1)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> SimBehaviour:
        if not self.minimum <= self.nominal <= self.maximum:
            raise ValueError("need minimum <= nominal <= maximum")
        return self


class ProfilePoint(ModbusPointConfig):
    sim: SimBehaviour | None = Field(default=None, description="How a simulator produces values")


class DeviceProfile(StrictModel):
    name: Ident = Field(description="Profile name (the file is <name>.yaml)")
    description: str = Field(description="What the device is")
    kind: str = Field(description="Kind of device, e.g. water_quality, air_quality")
    notes: list[str] = Field(default_factory=list, description="Provenance and caveats of the map")
    points: list[ProfilePoint] = Field(min_length=1, description="The register map")


def signal_controller_profile() -> DeviceProfile:
    """The signal controller's register map (:mod:`protocols.signal_controller`) as a profile."""
    from protocols import signal_controller as sc

    return DeviceProfile(
        name=sc.PROFILE_NAME,
        description=sc.PROFILE_DESCRIPTION,
        kind="traffic_signal",
        notes=["Defined in protocols/signal_controller.py; the gateway drives it (issue 8)."],
        points=[
            ProfilePoint(
                name=p.name,
                address=p.address,
                table=p.table,
                dtype=p.dtype,
                scale=p.scale,
                unit=p.unit,
                description=p.description,
            )
            for p in sc.POINTS
        ],
    )


BUILTIN: dict[str, Callable[[], DeviceProfile]] = {"signal-controller": signal_controller_profile}


class ProfileLibrary:
    """Finds profiles in site folders first, then the shipped ones, then the built-in maps."""

    def __init__(self, dirs: Iterable[Path] = ()) -> None:
        self.dirs = (*tuple(dirs), SHIPPED_DIR)

    def names(self) -> list[str]:
        files = {p.stem for d in self.dirs if d.is_dir() for p in d.glob("*.yaml")}
        return sorted(files | set(BUILTIN))

    def path_of(self, name: str) -> Path:
        for d in self.dirs:
            candidate = d / f"{name}.yaml"
            if candidate.is_file():
                return candidate
        raise KeyError(name)

    def load(self, name: str) -> DeviceProfile:
        """The profile ``name``; ``KeyError`` if absent, ``ValueError`` listing its problems."""
        try:
            return _load(self.path_of(name))
        except KeyError:
            if name in BUILTIN:
                return _builtin(name)
            raise


@cache
def _builtin(name: str) -> DeviceProfile:
    return BUILTIN[name]()


@cache
def _load(path: Path) -> DeviceProfile:
    profile = load_model(path, DeviceProfile)
    if profile.name != path.stem:
        raise ValueError(f"{path}: profile name {profile.name!r} must match the file name")
    return profile
