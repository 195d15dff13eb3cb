"""The benchmark fleet in C (libmodbus): a Modbus TCP server for the shipped profiles' register
maps and libmodbus' client as the ceiling, compiled here from the Debian package
``libmodbus-dev`` (``scripts/install-system-deps.sh`` installs it).

- :func:`build` compiles ``fleet_server.c`` and ``fleet_client.c`` into a folder (the caller's
  temporary one).
- :func:`server_spec` writes what the server serves: per port, its units, each with the
  registers of its profile as raw 16-bit words (each point's nominal value encoded by the
  point's own type, byte and word order: what a correct decoder reads back).
- :func:`client_spec` writes the planned reads of one cycle over the fleet for the C client.
- :class:`Fleet` runs the server; :func:`ceiling` runs the client for some seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from edge.profiles import ProfileLibrary
from protocols.modbus import RegisterType, encode_value, plan_reads
from sim.localsite import Proc, start, wait_port

HERE = Path(__file__).resolve().parent

#: ``(bus index, unit id, profile, device name)``, as :func:`sim.devices.modbus_device.fleet_layout`
Layout = Sequence[tuple[int, int, str, str]]


class BuildError(RuntimeError):
    """The C fleet could not be compiled (no compiler, no libmodbus-dev)."""


def build(into: Path) -> tuple[Path, Path]:
    """Compile the server and the client into ``into``; returns their paths."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BuildError("no C compiler (cc): install Debian's build-essential")
    if not Path("/usr/include/modbus/modbus.h").exists():
        raise BuildError("libmodbus-dev is missing: run scripts/install-system-deps.sh")
    into.mkdir(parents=True, exist_ok=True)
    out = []
    for name, extra in (("fleet_server", []), ("fleet_client", ["-pthread"])):
        exe = into / name
        argv = [
            cc,
            "-O2",
            "-Wall",
            "-I/usr/include/modbus",
            str(HERE / f"{name}.c"),
            "-o",
            str(exe),
        ]
        done = subprocess.run([*argv, *extra, "-lmodbus"], capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"compiling {name}.c failed:\n{done.stderr}")
        out.append(exe)
    return out[0], out[1]


def _registers(profile: str) -> dict[RegisterType, dict[int, int]]:
    """Each table of ``profile`` as ``{address: raw word}`` at the points' nominal values."""
    tables: dict[RegisterType, dict[int, int]] = {t: {} for t in RegisterType}
    for p in ProfileLibrary().load(profile).points:
        spec = p.spec()
        nominal = p.sim.nominal if p.sim else 0
        table = tables[spec.register_type]
        if spec.bit is not None:
            if nominal:
                table[spec.address] = table.get(spec.address, 0) | 1 << spec.bit
            else:
                table.setdefault(spec.address, 0)
            continue
        for i, word in enumerate(encode_value(spec, nominal)):
            table[spec.address + i] = word
    return tables


def server_spec(layout: Layout, ports: Sequence[int]) -> str:
    """The server's spec file for ``layout`` on ``ports`` (one per bus index)."""
    maps: dict[str, dict[RegisterType, dict[int, int]]] = {}
    by_bus: dict[int, list[tuple[int, str]]] = {}
    for bus, unit, profile, _name in layout:
        by_bus.setdefault(bus, []).append((unit, profile))
        if profile not in maps:
            maps[profile] = _registers(profile)
    lines = []
    for bus, port in enumerate(ports):
        lines.append(f"port {port}")
        for unit, profile in by_bus.get(bus, []):
            lines.append(f"unit {unit}")
            for table, words in maps[profile].items():
                if not words:
                    continue
                lo, hi = min(words), max(words)
                values = " ".join(str(words.get(a, 0)) for a in range(lo, hi + 1))
                lines.append(f"table {table.value} {lo} {hi - lo + 1} {values}")
            lines.append("end")
    return "\n".join(lines) + "\n"


def client_spec(layout: Layout, ports: Sequence[int]) -> str:
    """The C client's spec: per bus, the planned reads of one cycle over its units."""
    library = ProfileLibrary()
    lines = []
    for bus, port in enumerate(ports):
        lines.append(f"port {port}")
        for b, unit, profile, _name in layout:
            if b != bus:
                continue
            for block in plan_reads(p.spec() for p in library.load(profile).points):
                lines.append(
                    f"read {unit} {block.function} {block.start} {block.count} {len(block.points)}"
                )
        lines.append("end")
    return "\n".join(lines) + "\n"


@dataclass
class Fleet:
    """The C server running (stop it with :meth:`stop`)."""

    proc: Proc
    ports: list[int]

    @classmethod
    def start(cls, exe: Path, layout: Layout, ports: list[int], work: Path) -> Fleet:
        spec = work / "fleet.spec"
        spec.write_text(server_spec(layout, ports))
        proc = start("cfleet", [str(exe), str(spec)], work)
        for p in ports:
            wait_port(p, proc=proc)
        return cls(proc, ports)

    @property
    def cpu_s(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.proc.stop()


@dataclass(frozen=True)
class Ceiling:
    requests: int
    points: int
    errors: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float


def ceiling(exe: Path, layout: Layout, ports: Iterable[int], seconds: float, work: Path) -> Ceiling:
    """Run libmodbus' client over the fleet for ``seconds``; its counts and CPU time."""
    spec = work / "client.spec"
    spec.write_text(client_spec(layout, list(ports)))
    out_path = work / "client.out"
    t0 = time.monotonic()
    with out_path.open("w") as out:
        pid = subprocess.Popen([str(exe), str(spec), str(seconds)], stdout=out).pid
        _, status, usage = os.wait4(pid, 0)  # its CPU time comes with the exit status
    wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the C client failed: {out_path.read_text()}")
    words = out_path.read_text().split()
    counts = {k: int(v) for k, v in zip(words[::2], words[1::2], strict=True)}
    return Ceiling(
        counts["requests"],
        counts["points"],
        counts["errors"],
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,  # KiB on Linux
    )
