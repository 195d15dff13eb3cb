"""End to end: simulated Modbus devices → the gateway process → mosquitto → a subscriber.

Offered load grows step by step (more devices, shorter poll intervals). For each step: the
readings per second that reach the subscriber, polls that never arrived, the gateway's CPU
(percent of one core) and RSS, and the latency from the poll to the subscriber. The devices are
the C fleet of :mod:`bench.cfleet` (libmodbus, the shipped profiles' register maps), which
answers faster than the gateway asks. Everything runs on this one machine, so the fleet, the
broker and the subscriber share its cores with the gateway. The previous run's figures (from
``docs/benchmarks.md``, before this run replaces them) are shown beside the new ones.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import track

from bench.cfleet import Fleet, build
from bench.common import Sampler, previous_section, stamp
from protocols import envelope as env
from protocols import topics
from sim.localsite import Broker, Proc, cityedge_argv, free_port, start, wait_port

WARMUP_S = 5.0  # at least; then until steady (see settle())
WARMUP_MAX_S = 45.0
STEADY_WINDOW_S = 2.0
STEADY_TOLERANCE = 0.15  # two windows in a row: readings and latency p50 within this fraction...
STEADY_LATENCY_MS = 20.0  # ... or the p50s within this many ms of each other
DRAINED_BELOW = 500  # envelopes waiting for the sink: the queue the start left has drained
MEASURE_S = 20.0
POINTS = {"water-sonde": 8, "air-station": 9}


@dataclass
class Step:
    simulators: int
    units: int
    interval_s: float

    @property
    def devices(self) -> int:
        return self.simulators * self.units

    def offered_readings(self) -> float:
        per_sim = [
            POINTS["water-sonde" if i % 2 == 0 else "air-station"] for i in range(self.simulators)
        ]
        return sum(per_sim) * self.units / self.interval_s


STEPS = [
    Step(2, 5, 0.2),
    Step(4, 10, 0.1),
    Step(4, 20, 0.05),
    Step(6, 25, 0.025),
    Step(8, 30, 0.01),
]


@dataclass(frozen=True)
class Window:
    """One warm-up window: readings that arrived, and their latency p50 (None: none sampled)."""

    readings: int
    p50_ms: float | None

    def steady_after(self, before: Window | None) -> bool:
        """This window and the one ``before`` it agree: the readings within
        ``STEADY_TOLERANCE`` of each other, and the latency p50s within it or within
        ``STEADY_LATENCY_MS`` (a queue the start left is still draining while they fall)."""
        if before is None or self.readings <= 0 or self.p50_ms is None or before.p50_ms is None:
            return False
        rate_agrees = abs(self.readings - before.readings) <= STEADY_TOLERANCE * max(
            self.readings, before.readings
        )
        gap = abs(self.p50_ms - before.p50_ms)
        latency_agrees = gap <= STEADY_LATENCY_MS or gap <= STEADY_TOLERANCE * max(
            self.p50_ms, before.p50_ms
        )
        return rate_agrees and latency_agrees


class Counter:
    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.readings = 0
        self.envelopes = 0
        self.latencies: list[float] = []
        self.counting = False
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-brain", protocol=mqtt.MQTTv5
        )
        ready = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topics.SUBSCRIBE_ALL, qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        ready.wait(10)

    def on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not self.counting or "/telemetry/" not in msg.topic:
            return
        now = time.time()
        with self.lock:  # readings counted without parsing; every 10th envelope decoded
            self.envelopes += 1
            self.readings += msg.payload.count(b'{"point":')
            sample = self.envelopes % 10 == 0
        if sample:
            e = env.decode(msg.payload)
            with self.lock:
                self.latencies.append(now - e.time.timestamp())

    def take(self) -> Window:
        """What arrived since the last take (and forget it)."""
        with self.lock:
            readings, lat = self.readings, self.latencies
            self.readings, self.envelopes, self.latencies = 0, 0, []
        return Window(readings, 1000 * statistics.median(lat) if lat else None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def site(step: Step, ports: list[int], mqtt_port: int, http_port: int) -> str:
    sources = []
    for i, port in enumerate(ports):
        profile = "water-sonde" if i % 2 == 0 else "air-station"
        devices = ", ".join(
            f"{{name: dev-{i}-{u}, unit_id: {u + 1}, profile: {profile}, poll_interval_s: {step.interval_s}}}"
            for u in range(step.units)
        )
        sources.append(
            f"  - {{type: modbus, name: bus-{i}, host: 127.0.0.1, port: {port}, timeout_s: 1.0, "
            f"devices: [{devices}]}}"
        )
    return (
        f"site: bench\ngateway: gw-bench\nlog_level: warning\nhttp: {{port: {http_port}}}\n"
        "sources:\n" + "\n".join(sources) + "\n"
        f"sinks:\n  - {{type: mqtt, name: brain, host: 127.0.0.1, port: {mqtt_port}, max_inflight: 1000, "
        # an outbox of its own per step: nothing an earlier step left behind is counted here
        f"outbox: {{path: cityedge-state/outbox-{step.devices}-{step.interval_s}.db}}}}\n"
    )


def sink_queue(http_port: int) -> float:
    """Envelopes waiting in the gateway's channel to its MQTT sink (its ``/metrics``)."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "cityedge_channel_depth":
            for sample in family.samples:
                if sample.labels.get("channel") == "sink:brain":
                    return sample.value
    raise LookupError(f"{url} has no cityedge_channel_depth for the sink 'brain'")


def settle(gw: Proc, counter: Counter, http_port: int) -> float:
    """Wait out the warm-up: at least ``WARMUP_S``, then until the gateway's sink channel holds
    fewer than ``DRAINED_BELOW`` envelopes and, after that, two ``STEADY_WINDOW_S`` windows in
    a row agree (:meth:`Window.steady_after`); at most ``WARMUP_MAX_S``. Near saturation the
    gateway starts with a queue (its pollers run while the uplink connects) that takes ten
    seconds and more to drain, and the subscriber then has a queue of its own to work off;
    latency measured meanwhile is the start's, not the step's. Returns the seconds it took."""
    t0 = time.monotonic()
    time.sleep(WARMUP_S)
    counter.take()
    counter.counting = True
    previous: Window | None = None
    while time.monotonic() - t0 < WARMUP_MAX_S and gw.alive():
        time.sleep(STEADY_WINDOW_S)
        window = counter.take()
        if sink_queue(http_port) >= DRAINED_BELOW:
            previous = None  # still draining: the windows so far say nothing
            continue
        if window.steady_after(previous):
            break
        previous = window
    counter.counting = False
    return time.monotonic() - t0


def measure(step: Step, work: Path, broker: Broker, server: Path) -> dict[str, float]:
    procs: list[Proc] = []
    counter = Counter(broker.port)
    try:
        ports = [free_port() for _ in range(step.simulators)]
        layout = [
            (i, u + 1, "water-sonde" if i % 2 == 0 else "air-station", f"dev-{i}-{u}")
            for i in range(step.simulators)
            for u in range(step.units)
        ]
        procs.append(Fleet.start(server, layout, ports, work).proc)
        http_port = free_port()
        cfg = work / f"site-{step.devices}-{step.interval_s}.yaml"
        cfg.write_text(site(step, ports, broker.port, http_port))
        gw = start("gateway", cityedge_argv("run", "--config", str(cfg)), work)
        procs.append(gw)
        wait_port(http_port, proc=gw, timeout_s=30)
        warmup = settle(gw, counter, http_port)
        sampler = Sampler(gw.pid)
        counter.take()
        counter.counting = True
        sampler.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < MEASURE_S:
            time.sleep(0.5)
            sampler.sample()
        counter.counting = False
        usage = sampler.stop()
        wall = time.monotonic() - t0
        lat = sorted(counter.latencies) or [float("nan")]
        return {
            "offered": step.offered_readings(),
            "delivered": counter.readings / wall,
            "polls": counter.envelopes / wall,
            "cpu": usage.cpu_percent,
            "rss": usage.peak_rss_mb,
            "p50_ms": 1000 * statistics.median(lat),
            "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
            "warmup_s": warmup,
        }
    finally:
        counter.close()
        for p in reversed(procs):
            p.stop()


def previous_rows(section: str) -> dict[tuple[int, str], tuple[str, str, str]]:
    """(devices, poll interval) → (delivered readings/s, gateway CPU, latency p50 / p95) of the
    previous run's table (its first eight columns, whichever run wrote it)."""
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0].isdigit():
            out[int(cells[0]), cells[1]] = (cells[3], cells[5], cells[7])
    return out


def run(console: Console) -> str:
    before = previous_section("e2e")
    old = previous_rows(before)
    old_stamp = re.search(r"Measured (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", before)
    old_plateau = re.search(r"Plateau: ([\d,]+) readings/s", before)
    old_warmup = re.search(r"(\d+) s warm-up, \d+ s measured", before)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cityedge-bench-") as tmp:
        work = Path(tmp)
        server, _client = build(work / "cfleet")
        broker = Broker.start(work / "broker")
        try:
            for step in track(STEPS, description="offered load steps", console=console):
                r = measure(step, work, broker, server)
                rows.append((step, r))
                console.print(f"{step}: {r}", highlight=False)
        finally:
            broker.stop()
    best = max(rows, key=lambda sr: sr[1]["delivered"])
    complete = [sr for sr in rows if sr[1]["delivered"] >= 0.98 * sr[1]["offered"]]
    kept_up = max(complete, key=lambda sr: sr[1]["delivered"]) if complete else None
    lines = [
        "## End to end: Modbus devices → gateway → MQTT (`bench/e2e.py`)",
        "",
        stamp(),
        "",
        "Simulated devices (the C fleet of `bench/cfleet`, libmodbus serving water sondes and air stations, several",
        "unit ids per port), the real gateway process, mosquitto, and a subscriber counting what arrives. "
        f"Warm-up: at least {WARMUP_S:.0f} s, then until the gateway's channel to its sink holds fewer than "
        f"{DRAINED_BELOW} envelopes and, after that, two {STEADY_WINDOW_S:.0f} s windows in a row agree "
        f"(readings within {STEADY_TOLERANCE:.0%}, latency p50 within {STEADY_TOLERANCE:.0%} or "
        f"{STEADY_LATENCY_MS:.0f} ms); at most {WARMUP_MAX_S:.0f} s. Near saturation the gateway starts with a "
        "queue, its pollers running while the uplink connects, that takes ten seconds and more to drain; "
        f"then {MEASURE_S:.0f} s measured per step. Warm-up per step: "
        + ", ".join(f"{r['warmup_s']:.0f} s" for _, r in rows)
        + ". CPU is the gateway's, in percent of",
        "one core; latency is from the poll's timestamp to the subscriber. The sink runs with its defaults:",
        "an envelope is published only after the durable outbox has committed it (a group commit with",
        "fsync every `group_commit_ms`, 100 ms), so below saturation latency is about half that interval.",
        "",
        f"The *before* columns are the previous run's ({old_stamp.group(1) if old_stamp else 'none'}"
        f"{f', after a fixed {old_warmup.group(1)} s warm-up' if old_warmup else ''}); "
        "the last run before issue 17 (2026-11-24, pymodbus simulators and pymodbus' client) reached "
        "13,588 readings/s with everything delivered and a plateau of 26,660 at 67% of one core.",
        "",
        "| devices | poll interval | offered readings/s | delivered readings/s | envelopes/s "
        "| gateway CPU | gateway RSS | latency p50 / p95 | before: delivered | before: CPU | before: p50 / p95 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for step, r in rows:
        interval = f"{step.interval_s * 1000:.0f} ms"
        was = old.get((step.devices, interval), ("—", "—", "—"))
        lines.append(
            f"| {step.devices} | {interval} | {r['offered']:,.0f} | {r['delivered']:,.0f} | "
            f"{r['polls']:,.0f} | {r['cpu']:.0f}% | {r['rss']:.0f} MB | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} ms "
            f"| {was[0]} | {was[1]} | {was[2]} |"
        )
    lines += [""]
    if kept_up is not None:
        k = kept_up[1]
        lines.append(
            f"**Every offered reading arrived up to {k['delivered']:,.0f} readings/s** "
            f"({k['polls']:,.0f} polls/s, gateway at {k['cpu']:.0f}% of one core, {k['rss']:.0f} MB RSS)."
        )
    b = best[1]
    lines += [
        f"**Plateau: {b['delivered']:,.0f} readings/s** ({b['polls']:,.0f} polls/s) at {b['cpu']:.0f}% of one core "
        f"and {b['rss']:.0f} MB RSS (before: {old_plateau.group(1) if old_plateau else '—'} readings/s).",
        "Past the plateau, polls no longer fit in their interval (the fleet, mosquitto and the subscriber share",
        "the two cores with the gateway) and the schedule skips missed slots (counted in",
        "`cityedge_poll_slots_missed_total`); nothing is dropped inside the gateway (its channels block).",
        "Where the gateway reaches a whole core, the uplink's back pressure (the sink's `outbox.hold_backlog`,",
        "5,000 envelopes above the backlog's lowest while connected) holds the pollers back rather than",
        "letting them starve the publisher. Latency past the plateau is a standing queue rather than a",
        "transit time: in trials at 240 devices the gateway's channel to its sink stayed at its capacity",
        "(4,096 envelopes, about 0.3 s at that rate) and the outbox's oldest envelope was about 0.2 s old;",
        "the rest was the counting subscriber's own queue in mosquitto (one Python client taking about",
        "15,000 messages a second on the shared cores), which grew and shrank between 0.5 and 3 s within",
        "a minute. Each step has an outbox of its own, so nothing an earlier step left is counted.",
    ]
    return "\n".join(lines)
