"""Helpers for the technician's tool against real programs: the VM of ``cityedge provision vm``
as the board, the site's own mosquitto (``broker/mosquitto.conf``, as the README runs it), a
folder that the broker's own user can reach, and snapshots of a site folder.

Imported as ``boards`` (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cityedge import brokerfiles
from provisioning.site import Site
from sim.localsite import Proc, cityedge_argv, free_port, mosquitto_path, start, wait_port


@contextmanager
def reachable_dir() -> Iterator[Path]:
    """A folder the broker's own user can enter (pytest's temp folders are 0700 below /tmp):
    there, mosquitto started as root runs as ``mosquitto``, as Debian runs it."""
    folder = Path(tempfile.mkdtemp(prefix="cityedge-hil-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def start_vm(procs: list[Proc], workdir: Path, board: Path) -> tuple[Proc, str]:
    """``cityedge provision vm`` on ``board`` (its flash); returns it and its socket:// URL."""
    port = free_port()
    proc = start(
        f"vm-{port}",
        cityedge_argv("provision", "vm", "--image", str(board), "--port", str(port)),
        workdir,
    )
    procs.append(proc)
    wait_port(port, proc=proc, timeout_s=30)
    return proc, f"socket://127.0.0.1:{port}"


def start_site_mosquitto(procs: list[Proc], site: Site) -> Proc:
    """``mosquitto -c <site>/broker/mosquitto.conf``, as the README runs it."""
    exe = mosquitto_path()
    assert exe is not None, "mosquitto is not installed: apt-get install mosquitto"
    proc = start(
        "site-mosquitto",
        [exe, "-c", str(site.root / "broker" / "mosquitto.conf")],
        site.root.parent,
    )
    procs.append(proc)
    wait_port(site.broker_port, proc=proc)
    return proc


def runs_as(pid: int) -> str:
    """The user a process runs as (its real uid, from /proc)."""
    import pwd

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return pwd.getpwuid(int(line.split()[1])).pw_name
    raise AssertionError(f"no Uid line for pid {pid}")


def debian_way() -> bool:
    """This machine can run mosquitto as Debian does: started as root, it drops to its user."""
    return os.geteuid() == 0 and brokerfiles.broker_account() is not None


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file and folder below ``root`` (but ``skip``): its mode and, for files, a hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith(skip):
            continue
        what = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[rel] = f"{p.stat().st_mode:o} {what}"
    return out
