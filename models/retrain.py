"""``make retrain`` = ``python -m models.retrain``: train our models again and say what changed.

The models we train (``convert: train`` in ``models/manifest.yaml``) are committed files
(``models/trained/``) with their measurement (``models/metrics/``); ``make models`` only copies
and verifies them. This command trains them again from their recipes (:mod:`models.train`),
into a separate models folder (default ``models/retrained/``, git-ignored), measures each new
file exactly as the committed one was measured, and prints per model: how long training took,
on which torch CPU kernels, the sha256 before and after, and every metric with a tolerance in
the manifest, committed → new, within the tolerance or not.

The folder is a complete built models folder (the other models copied from ``models/build/``,
its own ``manifest.json`` naming the new files), so the whole suite can run on the retrained
files: ``make test MODELS_DIR=models/retrained`` (the folder's absolute path goes into
``CITYEDGE_MODELS_DIR``). A summary is written to ``<folder>/retrain.json``.

``--replace`` then makes the new files the committed ones — the ONNX file, its measurement, its
sha256 and a bumped version in ``models/manifest.yaml``, and the card's measured block — but
only for files within every tolerance (``--force`` takes one outside, for a deliberate recipe
change). Torch's portable kernels stand in for another CPU: ``ATEN_CPU_CAPABILITY=default``.

It needs the base build (``make models``: the other models and the test images; ``make
retrain`` runs it first). Exit codes: 0 every retrained file is within its tolerances (or
identical); 1 one is outside (nothing replaced without ``--force``), or the base build is
missing or differs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.vision.manifest import (
    MANIFEST_JSON,
    Manifest,
    ModelEntry,
    ModelError,
    ModelStore,
    sha256_file,
)
from models.build import (
    HERE,
    MANIFEST_YAML,
    METRICS,
    TRAINED,
    BuildError,
    Drift,
    compare,
    describe_tolerance,
    load_manifest,
    read_metrics,
    write_manifest,
    write_metrics,
)


@dataclass
class Retrained:
    entry: ModelEntry
    sha256: str
    metrics: dict[str, float]
    drift: list[Drift]
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def same_file(self) -> bool:
        return self.sha256 == self.entry.sha256

    @property
    def within(self) -> bool:
        return self.same_file or all(d.within for d in self.drift)


def cpu_kernels() -> str:
    """The torch CPU kernels in use (AVX512, AVX2 or DEFAULT, the portable ones)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def base_store(manifest: Manifest, build: Path, retrained: set[str]) -> ModelStore:
    """The base build (``make models``), checked: every model that is not retrained (they go
    into the retrained folder; the recipes run some, e.g. MTCNN) and the test images."""
    store = ModelStore.of(manifest, build)
    for entry in manifest.models:
        if entry.name not in retrained:
            store.path(entry.name)
    for asset in manifest.assets:
        store.asset(asset.file)
    return store


def retrain(
    entry: ModelEntry,
    out: Path,
    store: ModelStore,
    log: Callable[[str], None],
    models_dir: Path = HERE,
    init_seed: int | None = None,
) -> Retrained:
    """Train ``entry`` into ``out/onnx``, measure it, compare with the committed measurement."""
    from models.train import recipes

    path = out / "onnx" / entry.file
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    t0 = time.monotonic()
    report = recipes.train(entry, partial, log, store, init_seed)
    seconds = time.monotonic() - t0
    os.replace(partial, path)
    sha = sha256_file(path)
    metrics = recipes.evaluate(entry, path, store)
    write_metrics(out / "metrics" / f"{entry.name}.json", sha, metrics)
    committed = models_dir / "metrics" / f"{entry.name}.json"
    pinned = read_metrics(committed)[1] if committed.is_file() else {}  # none yet: all outside
    return Retrained(
        entry, sha, metrics, compare(pinned, metrics, entry.tolerance), seconds, report
    )


def describe(r: Retrained) -> list[str]:
    e = r.entry
    rep = r.report
    lines = [
        f"{e.name}: trained in {r.seconds:.0f} s ({rep.get('generate_s', 0):.0f} s data, "
        f"{rep.get('train_s', 0):.0f} s training; torch CPU kernels {cpu_kernels()})",
        f"  sha256 {e.sha256} (committed)",
        f"      -> {r.sha256} ({'the same file' if r.same_file else 'a different file'})",
    ]
    if r.drift and all(math.isnan(d.pinned) for d in r.drift):
        lines.append("  (no committed measurement to compare with: every metric is outside)")
    lines += [f"  {d.line()}" for d in r.drift]
    if r.same_file:
        lines.append("  verdict: identical to the committed file")
    elif r.within:
        lines.append("  verdict: a different file, every metric within its tolerance")
    else:
        bad = ", ".join(d.metric for d in r.drift if not d.within)
        lines.append(f"  verdict: OUTSIDE the tolerance ({bad})")
    return lines


def assemble(manifest: Manifest, build: Path, out: Path, done: list[Retrained]) -> Manifest:
    """Make ``out`` a complete models folder: the other models and test images from the base
    build, and a ``manifest.json`` that names the retrained files."""
    new = {r.entry.name: r.sha256 for r in done}
    for entry in manifest.models:
        if entry.name in new:
            continue
        shutil.copyfile(build / "onnx" / entry.file, out / "onnx" / entry.file)
        measured = build / "metrics" / f"{entry.name}.json"
        if measured.is_file():
            shutil.copyfile(measured, out / "metrics" / f"{entry.name}.json")
    shutil.copytree(build / "assets", out / "assets", dirs_exist_ok=True)
    swapped = manifest.model_copy(
        update={
            "models": [
                m.model_copy(update={"sha256": new[m.name]}) if m.name in new else m
                for m in manifest.models
            ]
        }
    )
    write_manifest(swapped, out)
    ModelStore(out)  # parses; each file is checked when used
    return swapped


def replace(r: Retrained, out: Path, models_dir: Path = HERE) -> str:
    """Make the retrained file the committed one (file, measurement, sha256 and version in the
    manifest, the card's measured block); returns the new version."""
    from models import cards

    e = r.entry
    version = bump(e.version)
    manifest_yaml = models_dir / MANIFEST_YAML.name
    text = manifest_yaml.read_text(encoding="utf-8")
    manifest_yaml.write_text(pin(text, e.name, r.sha256, version), encoding="utf-8")
    shutil.copyfile(out / "onnx" / e.file, models_dir / TRAINED.name / e.file)
    write_metrics(models_dir / METRICS.name / f"{e.name}.json", r.sha256, r.metrics)
    cards.update(load_manifest(manifest_yaml).model(e.name), models_dir)
    return version


def bump(version: str) -> str:
    if not version.isdigit():
        raise BuildError(f"version {version!r} is not a number: bump it by hand")
    return str(int(version) + 1)


def pin(manifest_text: str, name: str, sha256: str, version: str) -> str:
    """``manifest.yaml`` with the model's ``sha256`` and ``version`` replaced (comments and
    layout kept: only the two lines in that model's entry change)."""
    start = re.search(rf"^  - name: {re.escape(name)}\n", manifest_text, re.M)
    if start is None:
        raise BuildError(f"no '- name: {name}' entry in the manifest")
    following = re.search(r"^  - name: |^\S", manifest_text[start.end() :], re.M)
    end = start.end() + following.start() if following else len(manifest_text)
    entry = manifest_text[start.start() : end]
    entry, n_sha = re.subn(r"^(    sha256: )[0-9a-f]{64}$", rf"\g<1>{sha256}", entry, flags=re.M)
    entry, n_ver = re.subn(r'^(    version: )"[^"]*"$', rf'\g<1>"{version}"', entry, flags=re.M)
    if (n_sha, n_ver) != (1, 1):
        raise BuildError(f"entry {name}: expected one 'sha256:' and one 'version:' line")
    return manifest_text[: start.start()] + entry + manifest_text[end:]


def summary(done: list[Retrained], seed_offset: int = 0) -> dict[str, Any]:
    import numpy
    import torch

    return {
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cpu_kernels": cpu_kernels(),
        "seed_offset": seed_offset,
        "machine": platform.machine(),
        "models": {
            r.entry.name: {
                "committed_sha256": r.entry.sha256,
                "sha256": r.sha256,
                "seconds": round(r.seconds, 1),
                "train": r.report,
                "within": r.within,
                "drift": {
                    d.metric: {
                        "committed": d.pinned,
                        "new": d.got,
                        "tolerance": describe_tolerance(d.tolerance),
                    }
                    for d in r.drift
                },
            }
            for r in done
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.retrain", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "retrained", help="folder of the retrained build"
    )
    parser.add_argument("--build", type=Path, default=HERE / "build", help="base built folder")
    parser.add_argument(
        "--model", action="append", default=[], help="retrain only this model (repeatable)"
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="make each retrained file within its tolerances the committed one (file, "
        "metrics, manifest sha256 and version, card)",
    )
    parser.add_argument(
        "--force", action="store_true", help="with --replace: also a file outside a tolerance"
    )
    parser.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="add this to the recipe's seed of weight init and batch order (not of the data): "
        "how far trainings land apart, what the tolerances must cover (the cards used 1000, "
        "2000, 3000); never with --replace",
    )
    args = parser.parse_args(argv)
    manifest = load_manifest()
    trained = [m for m in manifest.models if m.train is not None]
    unknown = sorted(set(args.model) - {m.name for m in trained})
    if unknown:
        known = ", ".join(m.name for m in trained)
        print(
            f"make retrain: no trained model {', '.join(unknown)} (known: {known})", file=sys.stderr
        )
        return 1
    if args.seed_offset and args.replace:
        print(
            "make retrain: --seed-offset is to measure the spread, not to --replace",
            file=sys.stderr,
        )
        return 1
    chosen = [m for m in trained if not args.model or m.name in args.model]
    try:
        store = base_store(manifest, args.build, {m.name for m in chosen})
        out: Path = args.out.resolve()
        for sub in ("onnx", "metrics"):
            shutil.rmtree(out / sub, ignore_errors=True)
            (out / sub).mkdir(parents=True)
        (out / MANIFEST_JSON).unlink(missing_ok=True)
        done: list[Retrained] = []
        for entry in chosen:
            print(f"retraining {entry.name} (recipe {entry.train.recipe if entry.train else ''})")
            seed = entry.train.seed + args.seed_offset if entry.train else None
            r = retrain(entry, out, store, print, init_seed=seed if args.seed_offset else None)
            done.append(r)
            print("\n".join(describe(r)), flush=True)
        assemble(manifest, args.build, out, done)
        (out / "retrain.json").write_text(
            json.dumps(summary(done, args.seed_offset), indent=2, sort_keys=True) + "\n",
            encoding="utf-8",
        )
    except (BuildError, ModelError) as err:
        print(f"make retrain: {err}", file=sys.stderr)
        return 1
    print(f"\nretrained models folder: {out}")
    print(f"run the suite on it:     make test MODELS_DIR={out}")
    outside = [r for r in done if not r.within]
    if args.replace:
        for r in done:
            if r.same_file:
                continue
            if not r.within and not args.force:
                print(f"{r.entry.name}: not replaced (outside its tolerance; --force takes it)")
                continue
            try:
                version = replace(r, out)
            except (BuildError, ValueError, OSError) as err:
                print(f"make retrain: {r.entry.name} not replaced: {err}", file=sys.stderr)
                return 1
            print(f"{r.entry.name}: now committed as version {version}, sha256 {r.sha256[:12]}")
        if any(not r.same_file for r in done):
            print("review: git diff models/ ; then 'make models' copies the new files")
    return 1 if outside and not (args.replace and args.force) else 0


if __name__ == "__main__":
    sys.exit(main())
