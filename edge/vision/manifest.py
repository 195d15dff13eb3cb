"""The model manifest and the store of built models.

``models/manifest.yaml`` says, for every model the gateway runs: its name and version, the ONNX
file and its sha256, where it comes from (registry package, version, archive sha256, the member
inside it and that member's sha256), how it was converted, its license, its input spec and
labels, and its model card. ``make models`` (``python -m models.build``) fetches, converts and
verifies, then writes ``manifest.json`` beside the ONNX files, so a built models folder carries
its own manifest and can be copied to a gateway as it is.

:class:`ModelStore` is how the gateway finds models: it reads that ``manifest.json`` and hands
out a file only after its sha256 matched the manifest — a gateway never runs a model it cannot
identify. A model's *identity* (``name@version+sha12``) goes into every event that a model
decided, and into every stored face template, so a model change is visible, not silent.

Only pydantic and the standard library here: config checks run without the ``vision`` extra.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from edge.errors import PermanentError

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

MANIFEST_JSON = "manifest.json"
MODELS_DIR_ENV = "CITYEDGE_MODELS_DIR"


class ModelError(PermanentError):
    """A model is missing, unidentified (checksum differs) or its manifest is wrong."""

    code = "CE400"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PackageSource(_Strict):
    """One registry package the build fetches with the registry's own client."""

    registry: Literal["pypi", "npm"] = Field(description="pypi: pip download; npm: npm pack")
    name: str = Field(description="Package name in the registry")
    version: str = Field(description="Exact version")
    archive: str = Field(description="File name the client writes (sdist or npm tarball)")
    sha256: Sha256 = Field(description="sha256 of that archive; the build stops on a mismatch")
    license: str = Field(description="License the package declares")


class Member(_Strict):
    """A file inside a fetched package."""

    package: str = Field(description="Key of the package in 'packages'")
    path: str = Field(description="Path of the file inside the archive")
    sha256: Sha256 = Field(description="sha256 of the file; the build stops on a mismatch")


class InputSpec(_Strict):
    """What a model's first input wants (the caller prepares it; see each model's card)."""

    name: str = Field(description="Input tensor name")
    shape: list[int | None] = Field(description="Shape; null for a dynamic dimension")
    dtype: Literal["float32", "uint8"] = Field(description="Element type")
    layout: Literal["NHWC", "NCHW"] = Field(description="Axis order of image inputs")
    color: Literal["RGB", "BGR"] = Field(description="Channel order")
    mean: float = Field(description="Subtracted from each 0-255 pixel value (0 if in the graph)")
    scale: float = Field(description="Multiplies (pixel - mean) (1 if done in the graph)")
    note: str = Field(default="", description="Anything else a caller must know")


class TrainSpec(_Strict):
    """How a model we train is made. The trained file itself is committed (``models/trained/``):
    ``make models`` copies and verifies it, only ``make retrain`` trains."""

    recipe: Literal["bin-fill", "hair-cover"] = Field(
        description="Training recipe in models/train/ (data generator, network, schedule)"
    )
    seed: int = Field(ge=0, description="Seed of data generation, weight init and batch order")


class OneSided(_Strict):
    """A tolerance on one side only, for a metric that bounds what tests rely on (the lowest
    fill read on a full bin, say): moving the other way cannot break them."""

    below: float | None = Field(
        default=None, ge=0, description="How far under the committed value it may fall (unset: any)"
    )
    above: float | None = Field(
        default=None, ge=0, description="How far over the committed value it may rise (unset: any)"
    )

    @model_validator(mode="after")
    def _one_side(self) -> OneSided:
        if self.below is None and self.above is None:
            raise ValueError("give 'below' or 'above' (a number for both sides)")
        return self


Tolerance = Annotated[float, Field(ge=0)] | OneSided


def tolerance_range(tol: Tolerance) -> tuple[float, float]:
    """(how far below, how far above) the committed value a metric may move; inf: any."""
    if isinstance(tol, OneSided):
        inf = float("inf")
        return (inf if tol.below is None else tol.below, inf if tol.above is None else tol.above)
    return (tol, tol)


class ModelEntry(_Strict):
    name: str = Field(description="Model name used in configs and events")
    version: str = Field(description="Our version of the built file (bump on any change)")
    task: str = Field(description="What it does, e.g. face-detection, face-embedding, liveness")
    file: str = Field(description="ONNX file name in the built models folder")
    sha256: Sha256 = Field(description="sha256 of the built ONNX file")
    convert: Literal[
        "copy", "faceapi-resnet", "tflite", "tfjs-centernet", "tfjs-graph", "keras-h5", "train"
    ] = Field(description="How the build makes the file from its sources ('train': trains it)")
    sources: list[Member] = Field(
        default_factory=list, description="Files the conversion reads (none when trained)"
    )
    train: TrainSpec | None = Field(
        default=None, description="For convert 'train': the recipe and its seed"
    )
    tolerance: dict[str, Tolerance] = Field(
        default_factory=dict,
        description="Measured metrics (models/metrics/<name>.json) that a retrained file, or this "
        "file measured on another machine, must reproduce: each within this absolute difference "
        "of the committed value, or within {below: x} / {above: x} of it on one side",
    )
    license: str = Field(description="License of the weights")
    input: InputSpec = Field(description="First input")
    outputs: list[str] = Field(description="Output names, in order")
    labels: list[str] = Field(default_factory=list, description="Class labels, if it classifies")
    card: str = Field(description="Model card, relative to models/")

    @model_validator(mode="after")
    def _sources_or_recipe(self) -> ModelEntry:
        if self.convert == "train" and self.train is None:
            raise ValueError("a model with convert 'train' needs a 'train' recipe")
        if self.convert != "train" and not self.sources:
            raise ValueError(f"convert {self.convert!r} needs at least one source file")
        return self

    @property
    def identity(self) -> str:
        """``name@version+sha12``: what events and templates record."""
        return f"{self.name}@{self.version}+{self.sha256[:12]}"


class AssetEntry(_Strict):
    """A real image shipped in a registry package, used by smoke tests and benchmarks."""

    file: str = Field(description="File name in the built assets folder")
    source: Member = Field(description="Where it comes from")
    identity: str | None = Field(
        default=None, description="Who is pictured, when the package says so"
    )
    note: str = Field(default="", description="What is in it")


class Manifest(_Strict):
    schema_version: Literal[1] = Field(description="Version of this manifest format")
    packages: dict[str, PackageSource] = Field(description="Registry packages, by key")
    models: list[ModelEntry] = Field(description="Models the build produces")
    assets: list[AssetEntry] = Field(default_factory=list, description="Real test images")

    def model(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.models)
        raise ModelError(f"no model {name!r} in the manifest", hint=f"known models: {known}")

    def check_references(self) -> list[str]:
        """Cross-references the schema cannot see: members name known packages, names unique."""
        problems: list[str] = []
        members = [(f"models[{m.name}]", s) for m in self.models for s in m.sources]
        members += [(f"assets[{a.file}]", a.source) for a in self.assets]
        for where, member in members:
            if member.package not in self.packages:
                problems.append(f"{where}: unknown package {member.package!r}")
        names = [m.name for m in self.models]
        files = [m.file for m in self.models] + [a.file for a in self.assets]
        for label, values in (("model name", names), ("file", files)):
            problems.extend(
                f"{label} {v!r} is used twice" for v in sorted(set(values)) if values.count(v) > 1
            )
        return problems


def parse_manifest(data: object, where: str) -> Manifest:
    """Validate manifest data; :class:`ModelError` lists every problem with its path."""
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        lines = [
            f"{where}: {'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}"
            for e in err.errors()
        ]
        raise ModelError("\n".join(lines), hint="fix models/manifest.yaml") from err
    problems = manifest.check_references()
    if problems:
        raise ModelError(
            "\n".join(f"{where}: {p}" for p in problems), hint="fix models/manifest.yaml"
        )
    return manifest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_models_dir() -> Path:
    """``$CITYEDGE_MODELS_DIR``, else ``models/build`` of this checkout (where ``make models`` puts them)."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models" / "build"


class ModelStore:
    """Built models in one folder, each handed out only after its checksum matched."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_models_dir()
        path = self.directory / MANIFEST_JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(
                f"no built models in {self.directory} ({MANIFEST_JSON} is missing)",
                hint=f"run 'make models', or set {MODELS_DIR_ENV} to a built models folder",
            ) from None
        except json.JSONDecodeError as err:
            raise ModelError(f"{path} is not valid JSON: {err}", hint="run 'make models'") from err
        self.manifest = parse_manifest(data, str(path))
        self._verified: dict[str, Path] = {}

    @classmethod
    def of(cls, manifest: Manifest, directory: Path) -> ModelStore:
        """A store over a build folder that has no ``manifest.json`` yet (the build uses it to
        run models it has just built and verified, e.g. to make training data)."""
        store = cls.__new__(cls)
        store.directory = directory
        store.manifest = manifest
        store._verified = {}
        return store

    def entry(self, name: str) -> ModelEntry:
        return self.manifest.model(name)

    def path(self, name: str) -> Path:
        """The model's file, after checking it exists and its sha256 matches the manifest."""
        if name in self._verified:
            return self._verified[name]
        entry = self.entry(name)
        path = self.directory / "onnx" / entry.file
        if not path.is_file():
            raise ModelError(f"model {name}: {path} is missing", hint="run 'make models'")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ModelError(
                f"model {name}: {path} has sha256 {digest[:16]}..., "
                f"the manifest says {entry.sha256[:16]}...",
                hint="the file was changed or is from another build: run 'make models'",
            )
        self._verified[name] = path
        return path

    def asset(self, file: str) -> Path:
        """A real test image from the build, checked against its sha256."""
        for a in self.manifest.assets:
            if a.file == file:
                path = self.directory / "assets" / a.file
                if not path.is_file() or sha256_file(path) != a.source.sha256:
                    raise ModelError(
                        f"asset {file} is missing or changed", hint="run 'make models'"
                    )
                return path
        raise ModelError(f"no asset {file!r} in the manifest", hint="see models/manifest.yaml")
