"""The import-linter contracts in ``pyproject.toml`` (run by ``make lint``) catch each wrong
arrow between the rooms: checked on a small tree with the rooms' names, where each test adds one
import the layout forbids and the contract that names it must break."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "importlinter"
]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# a tree that follows every arrow (module -> the imports it has)
GOOD = {
    "cityedge/__init__.py": "",
    "cityedge/console.py": "import protocols\n",
    "cityedge/cli.py": "import cityedge.console, edge, provisioning, sim, cloud_bridge.citybrain\n",
    "protocols/__init__.py": "import json\nimport pydantic\n",
    "edge/__init__.py": "import protocols, cityedge.console, cloud_bridge.link, cloud_bridge.uplink\n",
    "cloud_bridge/__init__.py": "",
    "cloud_bridge/link.py": "import protocols\n",
    "cloud_bridge/uplink/__init__.py": "import cloud_bridge.link, protocols, sqlite3, asyncio\n",
    "cloud_bridge/citybrain/__init__.py": "import cloud_bridge.link, cityedge.console, protocols\n",
    "provisioning/__init__.py": "import protocols, cityedge.console\n",
    "sim/__init__.py": "import edge, cloud_bridge.citybrain, protocols\n",
    "models/__init__.py": "import edge, sim\n",
    "bench/__init__.py": "import edge, sim, cloud_bridge.uplink\n",
    "tests/__init__.py": "import edge, sim, cenode\n",
    "cenode/__init__.py": "import machine\n",
}

WRONG = [
    ("protocols/__init__.py", "import edge", "protocols imports no other room and no I/O library"),
    (
        "protocols/__init__.py",
        "import asyncio",
        "protocols imports no other room and no I/O library",
    ),
    ("cityedge/console.py", "import edge", "cityedge.console imports only protocols"),
    (
        "provisioning/__init__.py",
        "import edge",
        "edge is imported only by cityedge.cli, sim, models, bench and the tests",
    ),
    (
        "edge/__init__.py",
        "import cloud_bridge.citybrain",
        "edge imports no city-brain side, sim, provisioning or tools",
    ),
    (
        "cloud_bridge/uplink/__init__.py",
        "import cloud_bridge.citybrain",
        "the uplink and the city brain's side do not import each other",
    ),
    (
        "cloud_bridge/citybrain/__init__.py",
        "import cloud_bridge.uplink",
        "the uplink and the city brain's side do not import each other",
    ),
    (
        "cloud_bridge/link.py",
        "import sim",
        "cloud_bridge imports no edge, sim, provisioning or tools",
    ),
    (
        "provisioning/__init__.py",
        "import cloud_bridge",
        "provisioning imports neither edge, sim nor cloud_bridge",
    ),
    (
        "edge/__init__.py",
        "import sim",
        "sim is imported only by cityedge.cli, models, bench and the tests",
    ),
    ("cenode/__init__.py", "import protocols", "the firmware (cenode) imports no room"),
    ("edge/__init__.py", "import cenode", "no room imports the firmware (cenode); its tests may"),
]


def lint(tree: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (tree / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def broken(output: str) -> set[str]:
    return {
        line.removesuffix(" BROKEN") for line in output.splitlines() if line.endswith(" BROKEN")
    }


def test_every_contract_is_tried_below() -> None:
    assert {c["name"] for c in CONFIG["contracts"]} == {name for _, _, name in WRONG}
    assert set(CONFIG["root_packages"]) == {name.split("/")[0] for name in GOOD}


def test_a_tree_that_follows_the_arrows_keeps_every_contract(tmp_path: Path) -> None:
    run = lint(tmp_path, GOOD)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Contracts: {len(CONFIG['contracts'])} kept, 0 broken." in run.stdout


@pytest.mark.parametrize(("module", "line", "contract"), WRONG)
def test_a_wrong_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    run = lint(tmp_path, {**GOOD, module: GOOD[module] + line + "\n"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert contract in broken(run.stdout), run.stdout
