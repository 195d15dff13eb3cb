"""Run the commands as a person does: ``.venv/bin/cityedge ...`` (and ``python -m
models.build``) as subprocesses with stdout and stderr piped, never a terminal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITYEDGE = str(Path(sys.executable).parent / "cityedge")
MODELS_BUILD = (sys.executable, "-m", "models.build")
TIMEOUT_S = 60


def run(
    argv: Sequence[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``argv`` starting with ``cityedge`` runs the installed console script."""
    args = [CITYEDGE, *argv[1:]] if argv[0] == "cityedge" else list(argv)
    full = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | (env or {})
    return subprocess.run(
        args,
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def run_all(
    rows: Sequence[tuple[Sequence[str], Path, dict[str, str] | None]],
) -> list[subprocess.CompletedProcess[str]]:
    """Several commands at once (two cores: the table stays a few seconds per row)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda r: run(r[0], cwd=r[1], env=r[2]), rows))


@contextmanager
def busy_ports() -> Iterator[tuple[int, int]]:
    """A TCP port with a real listener and a UDP port with a real bound socket."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        yield tcp.getsockname()[1], udp.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
