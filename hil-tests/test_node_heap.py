"""The node's heap goal (issue 18): every node kind, provisioned and run from its compiled files on
the MicroPython unix port (64-bit) with ``-X heapsize=64K``, boots and keeps reporting to
mosquitto over plain TCP, with the broker acknowledging its publishes, both with an empty flash
queue and with a full one (64 KB of reports, ~60 segments: the node after an outage). The
benchmark (``bench/nodes.py``) measures the same nodes the same way and finds the smallest heap."""

from __future__ import annotations

import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.nodes import KINDS, node_folder, sim_machine
from protocols import nodewire
from provisioning.site import Site
from provisioning.vm import micropython_path
from sim.localsite import Broker, Proc, free_port, start

HEAP = "64K"
QUEUE_BYTES = 65536  # the node's default queue_bytes
SEG_RECORDS = 30  # records per segment file (cenode.fqueue)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Path, Broker]]:
    work = tmp_path_factory.mktemp("heap")
    s = Site.init(work / "site", "bench", "127.0.0.1", free_port())
    sim_machine(work)
    broker = Broker.start(work / "plain")
    try:
        yield s, work, broker
    finally:
        broker.stop()


def fill_queue(folder: Path) -> int:
    """Segment files as the node writes them (``0xA7 | length u16 | crc32 u32 | frame``), up to
    the node's queue_bytes; returns how many reports."""
    folder.mkdir()
    readings: list[tuple[str, nodewire.Value]] = [
        ("fill_pct", 47.6),
        ("distance_mm", 700),
        ("temperature_c", 20.0),
    ]
    size = seq = 0
    while True:
        frame = nodewire.encode_readings(seq, 1_795_500_000 + seq, readings, boot=0xC0FFEE)
        record = struct.pack(">BHI", 0xA7, len(frame), zlib.crc32(frame)) + frame
        if size + len(record) > QUEUE_BYTES:
            return seq
        with (folder / str(seq // SEG_RECORDS + 1)).open("ab") as f:
            f.write(record)
        size += len(record)
        seq += 1


def heap_lines(proc: Proc) -> list[list[int]]:
    text = proc.log_path.read_text(errors="replace")
    return [
        [int(v) for v in line.split()[2:5]]
        for line in text.splitlines()
        if line.startswith("node: heap ")
    ]


@pytest.mark.parametrize("queue", ["empty", "full"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_node_reports_over_plain_tcp_in_a_64k_heap(
    site: tuple[Site, Path, Broker], kind: str, queue: str
) -> None:
    s, work, broker = site
    folder = node_folder(s, work, kind, False, broker.port)
    shutil.rmtree(folder / "queue", ignore_errors=True)  # what an earlier run queued
    if queue == "full":
        assert fill_queue(folder / "queue") > 1500
    env = {"MICROPYPATH": f"{work / 'sim'}:.frozen", "SIM_WORLD": str(folder / "sim.json")}
    argv = [micropython_path(), "-X", f"heapsize={HEAP}", "main.py"]
    proc = start(f"{kind}-{queue}", argv, folder, env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.alive():
            lines = heap_lines(proc)
            if len(lines) >= 3 and lines[-1][2] >= 3:  # 3 reports, 3 publishes acknowledged
                break
            time.sleep(0.2)
        log = proc.tail(30)
        assert proc.alive(), f"the node stopped in a {HEAP} heap:\n{log}"
        assert "MemoryError" not in log, log
        lines = heap_lines(proc)
        assert len(lines) >= 3 and lines[-1][2] >= 3, f"no reports acknowledged:\n{log}"
        assert all(used + free <= 64 * 1024 for used, free, _acked in lines)  # the limit held
    finally:
        proc.stop()
