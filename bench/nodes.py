"""Sensor nodes: heap in use while reporting, provisioning time per device, bytes per reading.

- Heap: each node kind runs on the MicroPython unix port from its provisioned, compiled files
  (``firmware/sim`` stands in for ``machine``), reporting every second to mosquitto over plain TCP
  and over TLS with its certificate; the node logs ``gc.mem_alloc()`` after each report's
  collection. The smallest ``-X heapsize`` it keeps reporting in is found by trying sizes.
- Provisioning: :func:`provisioning.provision.provision_node` per device, by step; building only,
  and with the real mpremote copying onto a MicroPython VM over ``socket://``.
- Wire: node frames against the gateway's JSON envelope for the same readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from bench.common import stamp
from protocols import envelope as env
from protocols import nodewire
from protocols.ids import Uuid7Generator
from provisioning.image import read_littlefs, tool
from provisioning.provision import NodeRequest, provision_node
from provisioning.site import Site
from provisioning.vm import VmBridge, micropython_path
from sim.localsite import Broker, free_port

ROOT = Path(__file__).resolve().parents[1]
KINDS = {
    "bin-fill": {"echo_us": {"18": 4077}, "adc_mv": {"34": 700}},
    "water": {"adc_mv": {"34": 1765, "35": 2150, "32": 650}},
    "gate-relay": {"pins": {"27": 1}},
}
HEAPS = ["48K", "56K", "64K", "72K", "80K", "96K", "128K"]
RUN_S = 5.0


def sim_machine(work: Path) -> Path:
    """The simulated ``machine`` module, compiled (a board has it in C; compiling it here keeps
    its parse-time peak out of the node's numbers)."""
    out = work / "sim"
    out.mkdir(exist_ok=True)
    source = ROOT / "firmware" / "sim" / "machine.py"
    argv = [tool("mpy-cross", "firmware"), "-o", str(out / "machine.mpy"), str(source)]
    subprocess.run(argv, check=True, timeout=60)
    return out


def _run_node(folder: Path, heap: str) -> tuple[bool, list[int]]:
    """Run the node for RUN_S seconds from its provisioned state (an empty flash queue);
    (kept reporting, heap-in-use samples). Kept reporting: no MemoryError, at least 3 reports
    taken and at least 3 publishes acknowledged by the broker. Reports go to the flash queue
    first, so a node whose connect fails for want of heap (caught, retried with backoff) still
    logs its reports: without the broker's acknowledgements it would count as reporting."""
    shutil.rmtree(folder / "queue", ignore_errors=True)
    env_vars = {
        "MICROPYPATH": f"{folder.parent / 'sim'}:.frozen",
        "SIM_WORLD": str(folder / "sim.json"),
    }
    import os

    proc = subprocess.Popen(
        [micropython_path(), "-X", f"heapsize={heap}", "main.py"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env_vars},
    )
    try:
        out, _ = proc.communicate(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    samples = [line.split()[2:] for line in out.splitlines() if line.startswith("node: heap ")]
    used = [int(s[0]) for s in samples]
    acked = int(samples[-1][2]) if samples else 0
    return "MemoryError" not in out and len(used) >= 3 and acked >= 3, used


def node_folder(site: Site, work: Path, kind: str, tls: bool, plain_port: int) -> Path:
    r = provision_node(
        site,
        NodeRequest(
            hwid=f"0b0000000{len(kind):03d}{int(tls)}",
            name=f"{kind}-{int(tls)}",
            kind=kind,
            target="unix",
            report_interval_s=1,
        ),
    )
    folder = work / f"{kind}-{'tls' if tls else 'tcp'}"
    for name, data in read_littlefs(r.image.read_bytes()).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["log_heap"] = True
    if not tls:
        cfg["broker"].update(tls=False, port=plain_port)
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "sim.json").write_text(json.dumps(KINDS[kind]))
    return folder


def heap_rows(console: Console, work: Path) -> list[tuple[str, str, str, str]]:
    site = Site.init(work / "site", "bench", "127.0.0.1", free_port())
    sim_machine(work)
    rows = []
    brokers: list[Broker] = []
    try:
        tls_broker = Broker.start(
            work / "tls", extra_conf=site.broker_conf(listener=False), port=site.broker_port
        )
        brokers.append(tls_broker)
        plain = Broker.start(work / "plain")
        brokers.append(plain)
        for kind in KINDS:
            for tls in (False, True):
                folder = node_folder(site, work, kind, tls, plain.port)
                smallest, _used = "-", []
                for heap in HEAPS:
                    ok, samples = _run_node(folder, heap)
                    if ok:
                        smallest, _used = heap, samples
                        break
                _ok, big = _run_node(folder, "256K")
                in_use = max(big) if big else 0
                row = (
                    kind,
                    "TLS (client cert)" if tls else "plain TCP",
                    f"{in_use / 1024:.1f} KB",
                    smallest,
                )
                console.print(row, highlight=False)
                rows.append(row)
    finally:
        for b in brokers:
            b.stop()
    return rows


def provisioning_rows(
    console: Console, work: Path, n: int = 5
) -> tuple[list[float], dict[str, float], list[float], dict[str, float]]:
    site = Site.init(work / "prov", "bench", "127.0.0.1", free_port())

    def timed(req: NodeRequest) -> tuple[float, dict[str, float]]:
        marks: list[tuple[str, float]] = []
        start = time.monotonic()
        provision_node(
            site,
            req,
            lambda step, frac, _detail="": (
                marks.append((step, time.monotonic())) if frac == 0.0 else None
            ),
        )
        end = time.monotonic()
        steps: dict[str, float] = {}
        for (name, t), nxt in zip(marks, [*marks[1:], ("end", end)], strict=True):
            steps[name] = steps.get(name, 0.0) + nxt[1] - t
        return end - start, steps

    build: list[float] = []
    build_steps: dict[str, float] = {}
    for i in range(n):
        total, steps = timed(
            NodeRequest(hwid=f"0c00000000{i:02d}", name=f"b-{i}", kind="bin-fill", target="esp32")
        )
        build.append(total)
        for k, v in steps.items():
            build_steps[k] = build_steps.get(k, 0.0) + v / n
    console.print(f"build only: {statistics.mean(build):.2f} s per device", highlight=False)

    copy: list[float] = []
    copy_steps: dict[str, float] = {}
    loop = asyncio.new_event_loop()
    port = free_port()
    bridge = VmBridge(work / "board.img", port)
    ready = threading.Event()

    def serve() -> None:
        async def main() -> None:
            started = asyncio.Event()
            task = asyncio.create_task(bridge.serve(started))
            await started.wait()
            ready.set()
            await task

        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(30)
    try:
        for i in range(3):
            total, steps = timed(
                NodeRequest(
                    hwid=f"0d00000000{i:02d}",
                    name=f"c-{i}",
                    kind="bin-fill",
                    target="unix",
                    copy_to=f"socket://127.0.0.1:{port}",
                )
            )
            copy.append(total)
            for k, v in steps.items():
                copy_steps[k] = copy_steps.get(k, 0.0) + v / 3
    finally:
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
    console.print(f"with mpremote copy: {statistics.mean(copy):.2f} s per device", highlight=False)
    return build, build_steps, copy, copy_steps


def wire_rows() -> list[tuple[str, int, int, int, int, int]]:
    samples: dict[str, list[tuple[str, nodewire.Value]]] = {
        "bin-fill": [("fill_pct", 47.6), ("distance_mm", 700), ("temperature_c", 20.0)],
        "water": [("ph", 5.5), ("turbidity_ntu", 500.0), ("temperature_c", 15.0)],
        "gate-relay": [("door_open", True), ("relay_on", False)],
    }
    ids = Uuid7Generator()
    rows = []
    for kind, readings in samples.items():
        frame = nodewire.encode_readings(1234, 1_795_500_000, readings)
        topic = nodewire.node_topic("riverside", f"{kind}-17", "up")
        mqtt_publish = 1 + 1 + 2 + len(topic) + 2 + len(frame)  # header, length, topic, packet id
        tls = mqtt_publish + 5 + 8 + 16  # TLS 1.2 AES-GCM record: header, explicit nonce, tag
        units = {name: nodewire.POINTS[nodewire.POINT_IDS[name]][1] for name, _ in readings}
        envelope = env.TelemetryEnvelope(
            id=ids.new(1_795_500_000_000),
            site="riverside",
            gateway="gw-1",
            device=f"{kind}-17",
            time=datetime.fromtimestamp(1_795_500_000, UTC),
            payload=env.TelemetryPayload(
                readings=[env.PointValue(point=n, value=v, unit=units[n]) for n, v in readings]
            ),
        )
        rows.append((kind, len(readings), len(frame), mqtt_publish, tls, len(env.encode(envelope))))
    return rows


def run(console: Console) -> str:
    with tempfile.TemporaryDirectory(prefix="cityedge-bench-nodes-") as tmp:
        work = Path(tmp)
        heap = heap_rows(console, work)
        build, build_steps, copy, copy_steps = provisioning_rows(console, work)
    wire = wire_rows()
    lines = [
        "## Sensor nodes (`bench/nodes.py`)",
        "",
        stamp(),
        "",
        "### Node heap in use while reporting (goal: fits a 64 KB heap)",
        "",
        "Each node kind runs on the MicroPython unix port (1.29 preview, **64-bit**: objects and",
        "pointers are twice the size of an ESP32's or RP2040's) from its provisioned `.mpy` files,",
        "reporting every second to mosquitto. *In use* is `gc.mem_alloc()` after the collection that",
        "follows each report (the most seen in 5 s, run with a 256 KB heap); *smallest heap* is the",
        "first of "
        + ", ".join(HEAPS)
        + " in which the node kept reporting (no MemoryError, and the broker acknowledged at least",
        "3 publishes: a node that cannot connect still queues its reports in flash). Each run starts",
        "with an empty flash queue. About 3 KB of the figure",
        "is the simulated `machine` module, which is built into the firmware on a board. On the unix",
        "port mbedTLS allocates its buffers from the MicroPython heap; on an ESP32 it uses the IDF",
        "system heap, so the plain-TCP row is the one that compares with a board's MicroPython heap.",
        "",
        "| node | transport | heap in use while reporting | smallest heap it reported in |",
        "|---|---|---:|---:|",
        *[f"| {k} | {t} | {u} | {s} |" for k, t, u, s in heap],
        "",
        "### Provisioning time per device",
        "",
        f"`provision_node` end to end. Build only (ESP32 target: certificate, config, mpy-cross of "
        f"{len(list((ROOT / 'firmware' / 'cenode').glob('*.py'))) + 1} files, 2 MiB LittleFS image, "
        "inventory, ACL), "
        f"{len(build)} devices: **{statistics.mean(build):.2f} s per device** "
        f"(min {min(build):.2f}, max {max(build):.2f}). With the copy by the real `mpremote` onto a "
        f"MicroPython VM over `socket://` ({len(copy)} devices): **{statistics.mean(copy):.2f} s per device** "
        f"(min {min(copy):.2f}, max {max(copy):.2f}). Flashing over serial is not measured (no board here).",
        "",
        "| step | build only | with mpremote copy |",
        "|---|---:|---:|",
        *[
            f"| {s} | {build_steps.get(s, 0.0):.3f} s | {copy_steps.get(s, 0.0):.3f} s |"
            for s in dict.fromkeys([*build_steps, *copy_steps])
        ],
        "",
        "### Bytes per reading on the wire",
        "",
        "One readings frame per report (`protocols/nodewire.py`), the MQTT 3.1.1 PUBLISH that carries",
        "it (QoS 1, topic `cityedge/node/v1/riverside/<node>/up`), the same inside a TLS 1.2 AES-GCM",
        "record, and, side by side, the gateway's JSON telemetry envelope for the same readings.",
        "",
        "| node | readings | frame | frame per reading | MQTT publish | + TLS record "
        "| per reading on the wire | JSON envelope |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {k} | {n} | {f} B | {f / n:.1f} B | {m} B | {t} B | {t / n:.1f} B | {j} B |"
            for k, n, f, m, t, j in wire
        ],
    ]
    return "\n".join(lines)
