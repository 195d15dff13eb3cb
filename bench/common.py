"""Shared pieces of the benchmarks: machine facts, process sampling, the results file."""

from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from sim.localsite import Proc, cityedge_argv, start, wait_port

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"

HEADER = """# Benchmarks

Measured by `make bench` (one benchmark: `make bench BENCH=name`). Each section says the machine
and the date it was measured on; numbers from a busy machine are not comparable. Nothing here is
asserted by a test: speed and memory are measured, not enforced.
"""


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


_busy_before: float | None = None
BUSY_SAMPLE_S = 3.0


def note_load() -> None:
    """Sample how busy the CPUs are just before a benchmark starts (the 1-minute load average
    would still carry the previous benchmark's own load)."""
    global _busy_before
    _busy_before = psutil.cpu_percent(interval=BUSY_SAMPLE_S)


def stamp() -> str:
    load = ""
    if _busy_before is not None:
        busy = "other work was running" if _busy_before >= 10 else "the machine was idle"
        load = f" CPUs {_busy_before:.0f}% busy in the {BUSY_SAMPLE_S:.0f} s before it started ({busy})."
    return f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.{load}"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else HEADER
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _m: block, text)
        if pattern.search(text)
        else text.rstrip() + f"\n\n{block}\n"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")


@dataclass
class Usage:
    cpu_percent: float  # of one core
    rss_mb: float
    peak_rss_mb: float


def measure(pid: int, warmup_s: float, measure_s: float) -> dict[str, float]:
    """CPU (% of one core) and memory of a running process, after ``warmup_s``."""
    time.sleep(warmup_s)
    sampler = Sampler(pid)
    sampler.start()
    end = time.monotonic() + measure_s
    while time.monotonic() < end:
        time.sleep(1)
        sampler.sample()
    usage = sampler.stop()
    return {"cpu": usage.cpu_percent, "rss": usage.rss_mb, "peak": usage.peak_rss_mb}


class Sampler:
    """CPU and memory of one process between :meth:`start` and :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0

    def start(self) -> None:
        t = self.proc.cpu_times()
        self.cpu0, self.t0 = t.user + t.system, time.monotonic()
        self.sample()

    def sample(self) -> None:
        self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> Usage:
        t = self.proc.cpu_times()
        self.sample()
        wall = time.monotonic() - self.t0
        return Usage(
            100 * (t.user + t.system - self.cpu0) / wall,
            self.proc.memory_info().rss / 2**20,
            self.peak / 2**20,
        )


def measure_gateway(
    procs: list[Proc],
    work: Path,
    config: Path,
    http_port: int,
    warmup_s: float,
    measure_s: float,
    start_timeout_s: float = 60,
) -> dict[str, float]:
    """Start ``cityedge run`` on ``config`` (added to ``procs``, which the caller stops), wait
    for its HTTP port, then measure its CPU and memory."""
    gw = start("gateway", cityedge_argv("run", "--config", str(config)), work)
    procs.append(gw)
    wait_port(http_port, proc=gw, timeout_s=start_timeout_s)
    return measure(gw.pid, warmup_s, measure_s)


def previous_section(name: str) -> str:
    """The body of section ``name`` in docs/benchmarks.md as the last run wrote it ("" if none):
    read before :func:`write_section` replaces it, to show the old figures beside the new."""
    if not RESULTS.exists():
        return ""
    text = RESULTS.read_text(encoding="utf-8")
    found = re.search(
        rf"<!-- bench:{re.escape(name)} -->(.*?)<!-- /bench:{re.escape(name)} -->", text, re.S
    )
    return found.group(1) if found else ""
