"""The city brain at city scale: a 3-node NATS JetStream cluster against one mosquitto, with 1,
2 and 3 ingest workers storing into PostgreSQL; latency end to end; memory per connected gateway.

1. **Ingest workers** (E_w): with the workers running, ``BACKLOG`` QoS 1 envelopes
   (``GATEWAYS`` gateways' worth, with link info) are published as fast as the brokers take them
   (one paho publisher per node, 3.1.1, window 1000: E_js), and the time from the first publish
   until PostgreSQL holds them all is taken: envelopes/s stored end to end. (Publishing the
   backlog while the workers are away does not work on mosquitto: a worker that comes back to
   a persistent session holding more than its link's queue cannot read its SUBACK and
   reconnects every ``connect_timeout_s`` — a bug of the MQTT ingest seen here.)
2. **Latency**: ``cityedge simulate gateways`` (``LOAD_GATEWAYS`` light sessions spread over the
   nodes) at a steady rate with 2 workers running; p50/p99 of ``received_at`` (the commit) minus
   the envelope's ``time`` (when the gateway made it), from PostgreSQL. The RSS of each node.
3. **Memory per connected gateway**: 200, 1,000 and 2,000 light sessions (clean, no
   subscription) connected and idle; the brokers' RSS (sum over the nodes) before and after.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console

from bench.common import stamp
from protocols import envelope as env
from protocols import topics
from protocols.ids import Uuid7Generator
from sim.localsite import Broker, NatsCluster, Postgres, Proc, cityedge_argv, start, wait_log

BACKLOG = int(os.environ.get("BENCH_CITYBRAIN_BACKLOG", "10000"))
GATEWAYS = 100
LOAD_GATEWAYS = 200
LOAD_RATE = (
    2.0  # envelopes/s per gateway: 400/s, below both ceilings here (queueing is not latency)
)
LOAD_S = 20.0
MEMORY_COUNTS = (200, 1000, 2000)
WINDOW = 1000
IDS = Uuid7Generator()


def payloads(n: int) -> list[tuple[str, bytes]]:
    """``n`` envelopes of ``GATEWAYS`` gateways, each gateway's numbered 1, 2, ... (session 1)."""
    out = []
    seqs = [0] * GATEWAYS
    for i in range(n):
        g = i % GATEWAYS
        seqs[g] += 1
        name = f"gw-{g:05d}"
        e = env.TelemetryEnvelope(
            id=IDS.new(int(time.time() * 1000)),
            site="bench",
            gateway=name,
            device="sonde",
            time=datetime.now(UTC),
            payload=env.TelemetryPayload(
                readings=[
                    env.PointValue(point=p, value=i * 0.01, unit="u")
                    for p in ("ph", "turbidity", "do", "temp")
                ]
            ),
        )
        topic = topics.data_topic("bench", name, "telemetry", "sonde")
        out.append((topic, env.with_link(env.encode(e), 1, seqs[g], seqs[g])))
    return out


def publish(port: int, items: list[tuple[str, bytes]], client_id: str) -> None:
    """QoS 1, MQTT 3.1.1, at most ``WINDOW`` unacknowledged; returns once all are acknowledged."""
    window = threading.Semaphore(WINDOW)
    done = threading.Event()
    left = [len(items)]
    lock = threading.Lock()

    def on_publish(*_a: object) -> None:
        window.release()
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.on_publish = on_publish
    c.max_inflight_messages_set(WINDOW)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for topic, payload in items:
            window.acquire()
            c.publish(topic, payload, qos=1)
        if not done.wait(300):
            raise TimeoutError(f"{left[0]} publishes unacknowledged")
    finally:
        c.disconnect()
        c.loop_stop()


def publish_spread(ports: list[int], items: list[tuple[str, bytes]]) -> float:
    """One publisher per port, in threads; returns publishes/s acknowledged."""
    n = len(ports)
    t0 = time.monotonic()
    threads = [
        threading.Thread(target=publish, args=(p, items[i::n], f"bench-pub-{i}"))
        for i, p in enumerate(ports)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(items) / (time.monotonic() - t0)


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0


def wait_count(url: str, n: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if count(url) >= n:
            return
        time.sleep(0.1)
    raise TimeoutError(f"only {count(url)} of {n} stored")


class Site:
    """A broker (the cluster or one mosquitto), ingest workers and a database."""

    def __init__(self, work: Path, pg: Postgres, engine: str, name: str) -> None:
        self.work = work / name
        self.engine = engine
        self.url = pg.create_database(name)
        self.procs: list[Proc] = []
        self.cluster: NatsCluster | None = None
        self.broker: Broker | None = None
        if engine == "nats":
            self.cluster = NatsCluster.start(self.work / "nats")
            self.cluster.make_mqtt_streams()
            self.ports = self.cluster.mqtt_ports
        else:
            self.broker = Broker.start(self.work / "mosquitto")
            self.ports = [self.broker.port]

    def broker_pids(self) -> list[int]:
        if self.cluster is not None:
            return [n.proc.pid for n in self.cluster.nodes if n.proc is not None]
        assert self.broker is not None
        return [self.broker.proc.pid]

    def rss_mb(self) -> list[float]:
        return [psutil.Process(p).memory_info().rss / 2**20 for p in self.broker_pids()]

    def workers(self, n: int) -> list[Proc]:
        """Start ``n`` workers and wait until each consumes (log level info just for that)."""
        procs = []
        for i in range(n):
            source = (
                ["--nats", ",".join(self.cluster.urls)]
                if self.cluster is not None
                else ["--broker", f"127.0.0.1:{self.ports[0]}"]
            )
            proc = start(
                f"ingest-w{i + 1}",
                cityedge_argv("ingest", *source, "--db", self.url, "--worker", f"w{i + 1}"),
                self.work,
            )
            self.procs.append(proc)
            procs.append(proc)
        ready = "as durable consumer" if self.cluster is not None else "subscribed to"
        for proc in procs:
            wait_log(proc, ready)
        return procs

    def fleet(self, count: int, rate: float, *extra: str) -> Proc:
        """``cityedge simulate gateways`` on the brokers' MQTT ports."""
        proc = start(
            "fleet",
            cityedge_argv(
                "simulate",
                "gateways",
                "--count",
                str(count),
                "--rate",
                str(rate),
                "--broker",
                ",".join(f"127.0.0.1:{p}" for p in self.ports),
                "--log-level",
                "warning",
                *extra,
            ),
            self.work,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        if self.cluster is not None:
            self.cluster.stop()
        if self.broker is not None:
            self.broker.stop()


def drain(
    work: Path, pg: Postgres, engine: str, n_workers: int, console: Console
) -> dict[str, float]:
    """Workers running; ``BACKLOG`` envelopes published as fast as the brokers take them;
    envelopes/s = BACKLOG / (first publish .. all stored)."""
    site = Site(work, pg, engine, f"drain_{engine}_{n_workers}")
    try:
        site.workers(n_workers)
        items = payloads(BACKLOG)
        t0 = time.monotonic()
        pub_rate = publish_spread(site.ports, items)
        wait_count(site.url, BACKLOG)
        rate = BACKLOG / (time.monotonic() - t0)
        console.print(
            f"{engine} {n_workers} workers: {rate:.0f}/s stored, publish {pub_rate:.0f}/s"
        )
        return {"stored": rate, "publish": pub_rate}
    finally:
        site.stop()


def latency(work: Path, pg: Postgres, engine: str, console: Console) -> dict[str, float]:
    site = Site(work, pg, engine, f"latency_{engine}")
    try:
        site.workers(2)
        report = site.work / "fleet.json"
        fleet = site.fleet(
            LOAD_GATEWAYS, LOAD_RATE, "--duration-s", str(LOAD_S), "--report", str(report)
        )
        time.sleep(LOAD_S / 2)
        rss = site.rss_mb()
        if fleet.popen.wait(LOAD_S + 120) != 0:
            raise RuntimeError(fleet.tail())
        made = json.loads(report.read_text())["made"]
        wait_count(site.url, made)
        with psycopg.connect(site.url) as conn:
            row = conn.execute(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), "
                "percentile_cont(0.99) WITHIN GROUP (ORDER BY d) FROM "
                "(SELECT extract(epoch FROM received_at - time) * 1000 AS d FROM events) s"
            ).fetchone()
        assert row is not None
        console.print(f"{engine}: p50 {row[0]:.0f} ms, p99 {row[1]:.0f} ms, RSS {rss}")
        return {
            "p50": float(row[0]),
            "p99": float(row[1]),
            "made": made,
            "rss": max(rss),
            "rss_sum": sum(rss),
        }
    finally:
        site.stop()


def memory(work: Path, pg: Postgres, engine: str, n: int, console: Console) -> dict[str, float]:
    site = Site(work, pg, engine, f"memory_{engine}_{n}")
    try:
        time.sleep(2)
        before = sum(site.rss_mb())
        site.fleet(n, 0.01, "--drain-s", "5")
        connected = _connections(site, n, timeout_s=120)
        time.sleep(3)
        after = sum(site.rss_mb())
        per_kb = (after - before) * 1024 / n
        console.print(f"{engine} {n} gateways ({connected} connected): {per_kb:.1f} KB each")
        return {"before": before, "after": after, "per_kb": per_kb}
    finally:
        site.stop()


def _connections(site: Site, n: int, timeout_s: float) -> int:
    """Wait until the brokers hold ``n`` established connections more than before."""

    def established() -> int:
        total = 0
        for pid in site.broker_pids():
            with_ports = set(site.ports)
            total += sum(
                1
                for c in psutil.Process(pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port in with_ports
            )
        return total

    deadline = time.monotonic() + timeout_s
    got = established()
    while time.monotonic() < deadline and got < n:
        time.sleep(0.5)
        got = established()
    return got


def run(console: Console) -> str:
    with tempfile.TemporaryDirectory(prefix="cityedge-bench-citybrain-") as tmp:
        work = Path(tmp)
        pg = Postgres.start()
        try:
            drains = {
                (e, w): drain(work, pg, e, w, console)
                for e, w in (
                    ("nats", 1),
                    ("nats", 2),
                    ("nats", 3),
                    ("mosquitto", 1),
                    ("mosquitto", 2),
                )
            }
            lat = {e: latency(work, pg, e, console) for e in ("nats", "mosquitto")}
            mem = {
                (e, n): memory(work, pg, e, n, console)
                for e in ("nats", "mosquitto")
                for n in MEMORY_COUNTS
            }
        finally:
            pg.stop()
    return render(drains, lat, mem)


def render(
    drains: dict[tuple[str, int], dict[str, float]],
    lat: dict[str, dict[str, float]],
    mem: dict[tuple[str, int], dict[str, float]],
) -> str:
    def f0(v: float) -> str:
        return f"{v:,.0f}"

    lines = [
        "## The city brain: NATS cluster vs mosquitto, ingest workers, PostgreSQL (`bench/citybrain.py`)",
        "",
        stamp(),
        "",
        'The capacity model for a city built from these figures: deploy/README.md, "Sizing".',
        "",
        "### Ingest workers on the cluster",
        "",
        f"{BACKLOG:,} QoS 1 envelopes of {GATEWAYS} gateways published as fast as the brokers "
        "take them (one paho publisher per node, MQTT 3.1.1, window 1,000) while the workers "
        "store them into PostgreSQL 15 (one transaction per batch of up to 500, acknowledged "
        "after the commit). Stored/s is end to end, first publish to last row: publisher → "
        "broker → ingest → PostgreSQL.",
        "",
        "| broker | ingest workers | envelopes/s stored | QoS 1 publishes/s taken |",
        "|---|---|---|---|",
    ]
    for (engine, w), d in drains.items():
        broker = "NATS 3 nodes, R3 (`$MQTT_msgs`)" if engine == "nats" else "mosquitto, `$share`"
        lines.append(f"| {broker} | {w} | {f0(d['stored'])} | {f0(d['publish'])} |")
    lines += [
        "",
        "### Latency end to end",
        "",
        f"`cityedge simulate gateways`: {LOAD_GATEWAYS} gateways x {LOAD_RATE:g} envelopes/s for "
        f"{LOAD_S:g} s, spread over the nodes, 2 ingest workers; latency = commit time - the "
        "envelope's time.",
        "",
        "| broker | envelopes | p50 ms | p99 ms | RSS per node (MB, largest) |",
        "|---|---|---|---|---|",
    ]
    for engine, d in lat.items():
        lines.append(
            f"| {engine} | {f0(d['made'])} | {f0(d['p50'])} | {f0(d['p99'])} | {f0(d['rss'])} |"
        )
    lines += [
        "",
        "### Memory per connected gateway",
        "",
        "Light sessions (MQTT 3.1.1, clean session, no subscription) connected and idle; the "
        "brokers' RSS summed over their nodes, before and after.",
        "",
        "| broker | gateways | RSS before (MB) | RSS after (MB) | KB per gateway |",
        "|---|---|---|---|---|",
    ]
    for (engine, n), d in mem.items():
        lines.append(
            f"| {engine} | {n:,} | {f0(d['before'])} | {f0(d['after'])} | {d['per_kb']:.1f} |"
        )
    return "\n".join(lines) + "\n"
