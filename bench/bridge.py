"""The cloud bridge: throughput through the durable outbox, draining after an outage, memory
with a large backlog — side by side with raw paho in the same run.

1. Sustained events/s to mosquitto at QoS 1: raw paho (no outbox, in-flight window 1000) and
   the bridge (every envelope committed to SQLite with fsync before it is published, deleted
   after its PUBACK; group commit 100 ms; same window), same payloads, same broker.
2. Drain: envelopes arrive at ``RATE``/s; the broker is stopped for ``BENCH_OUTAGE_S`` (600 s
   by default, the issue's 10 minutes), then started; the drain rate is how fast the backlog is
   acknowledged while new envelopes keep arriving, compared with the arrival rate.
3. Memory: a bridge process with the broker away takes one million envelopes; its RSS and the
   outbox's size are sampled as the backlog grows.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console

from bench.common import stamp
from cloud_bridge.link import LinkSettings
from cloud_bridge.uplink.bridge import Bridge, BridgeSettings
from cloud_bridge.uplink.outbox import OutboxSettings, Record, record_of
from protocols import envelope as env
from protocols.ids import Uuid7Generator
from sim.localsite import Broker

N_THROUGHPUT = 100_000
RATE = 500
OUTAGE_S = float(os.environ.get("BENCH_OUTAGE_S", "600"))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "1000000"))
WINDOW = 1000
IDS = Uuid7Generator()


def records(n: int, device: str = "sonde") -> list[Record]:
    out = []
    for i in range(n):
        e = env.TelemetryEnvelope(
            id=IDS.new(int(time.time() * 1000)),
            site="bench",
            gateway="gw",
            device=device,
            time=datetime.now(UTC),
            payload=env.TelemetryPayload(
                readings=[
                    env.PointValue(point=p, value=i * 0.01, unit="u")
                    for p in ("ph", "turbidity", "do", "temp")
                ]
            ),
        )
        out.append(record_of(e))
    return out


def settings(port: int, outbox: Path, **kw: object) -> BridgeSettings:
    return BridgeSettings(
        site="bench",
        gateway="gw",
        link=LinkSettings("127.0.0.1", port, client_id=f"bench-{os.getpid()}", max_inflight=WINDOW),
        outbox_path=outbox,
        outbox=OutboxSettings(budget_bytes=2**31),
        reconnect_initial_s=0.2,
        reconnect_max_s=1.0,
        **kw,  # type: ignore[arg-type]
    )


def raw_paho(port: int, recs: list[Record]) -> float:
    """Events/s with plain paho at QoS 1: its network thread, at most WINDOW unacknowledged
    (paho fails past 65,535), no outbox."""
    done = threading.Event()
    window = threading.BoundedSemaphore(WINDOW)
    acked = 0

    def on_publish(*_a: object) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked == len(recs):
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(0)  # bounded by the semaphore; paho's limit costs O(n) per ack
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.perf_counter()
    for r in recs:
        window.acquire()
        client.publish(r.topic, r.payload, qos=1)
    if not done.wait(300):
        raise RuntimeError(f"raw paho: only {acked} of {len(recs)} acknowledged")
    rate = len(recs) / (time.perf_counter() - t0)
    client.loop_stop()
    client.disconnect()
    return rate


def raw_paho_one_thread(port: int, recs: list[Record]) -> float:
    """The same, with paho's loop driven from the publishing thread (no GIL hand-offs)."""
    acked = 0

    def on_publish(*_a: object) -> None:
        nonlocal acked
        acked += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw1", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(0)  # bounded by the loop below
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    t0 = time.perf_counter()
    sent = 0
    deadline = time.monotonic() + 300
    while acked < len(recs) and time.monotonic() < deadline:
        while sent < len(recs) and sent - acked < WINDOW:
            client.publish(recs[sent].topic, recs[sent].payload, qos=1)
            sent += 1
        client.loop(timeout=0.01)
    rate = acked / (time.perf_counter() - t0)
    client.disconnect()
    return rate


async def through_bridge(port: int, work: Path, recs: list[Record]) -> float:
    async with Bridge.open(settings(port, work / "throughput.db")) as bridge:
        run = asyncio.create_task(bridge.run())
        t0 = time.perf_counter()
        for r in recs:
            await bridge.put(r)
        bridge.close_intake()
        await run
        return len(recs) / (time.perf_counter() - t0)


async def drain(broker: Broker, work: Path, console: Console) -> dict[str, float]:
    async with Bridge.open(settings(broker.port, work / "drain.db")) as bridge:
        run = asyncio.create_task(bridge.run())
        stop = asyncio.Event()

        async def feed() -> None:
            batch = RATE // 10
            while not stop.is_set():
                t = time.perf_counter()
                for r in records(batch):
                    await bridge.put(r)
                await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - t)))

        feeder = asyncio.create_task(feed())
        await asyncio.sleep(5)
        await asyncio.to_thread(broker.stop)
        console.print(f"drain: broker stopped for {OUTAGE_S:.0f} s at {RATE}/s", highlight=False)
        await asyncio.sleep(OUTAGE_S)
        backlog = bridge.backlog
        published0 = sum(bridge.counters.published.values())
        await asyncio.to_thread(broker.restart)
        t0 = time.perf_counter()
        while bridge.backlog > RATE:  # noqa: ASYNC110 - polling a figure; back to steady state
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - t0
        acked = sum(bridge.counters.published.values()) - published0
        stop.set()
        await feeder
        bridge.close_intake()
        await run
    return {"backlog": backlog, "seconds": elapsed, "drain_rate": acked / elapsed}


def backlog_child(outbox: str, port: int, n: int) -> None:
    """Run in a child process: a bridge whose broker is away takes ``n`` envelopes."""

    async def main() -> None:
        async with Bridge.open(settings(port, Path(outbox))) as bridge:
            run = asyncio.create_task(bridge.run())
            made = 0
            while made < n:
                for r in records(min(10_000, n - made)):
                    await bridge.put(r)
                made += 10_000
                print(f"made {made}", flush=True)
            while bridge.backlog < n:  # noqa: ASYNC110 - polling a figure
                await asyncio.sleep(0.1)
            print("ready", flush=True)
            await asyncio.sleep(3600)
            run.cancel()

    asyncio.run(main())


def backlog_rss(work: Path, console: Console) -> list[tuple[int, float, float]]:
    port = 1  # nothing listens: the broker is away for the whole run
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.bridge", str(work / "backlog.db"), str(port), str(BACKLOG)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    proc = psutil.Process(child.pid)
    samples: list[tuple[int, float, float]] = []
    try:
        assert child.stdout is not None
        step = max(1, BACKLOG // 10)
        for line in child.stdout:
            if line.startswith("made"):
                made = int(line.split()[1])
                if made % step == 0 or made == BACKLOG:
                    size = sum(p.stat().st_size for p in work.glob("backlog.db*"))
                    samples.append((made, proc.memory_info().rss / 2**20, size / 2**20))
                    console.print(f"backlog {made:,}: RSS {samples[-1][1]:.0f} MB", highlight=False)
            if line.startswith("ready"):
                time.sleep(2)
                size = sum(p.stat().st_size for p in work.glob("backlog.db*"))
                samples.append((BACKLOG, proc.memory_info().rss / 2**20, size / 2**20))
                break
    finally:
        child.kill()
        child.wait()
    return samples


def run(console: Console) -> str:
    with tempfile.TemporaryDirectory(prefix="cityedge-bench-bridge-") as tmp:
        work = Path(tmp)
        broker = Broker.start(
            work / "broker", extra_conf="max_queued_messages 0\n", persistence=False
        )
        try:
            recs = records(N_THROUGHPUT)
            raw_thread = raw_paho(broker.port, recs)
            raw_one = raw_paho_one_thread(broker.port, recs)
            raw = max(raw_thread, raw_one)
            console.print(
                f"raw paho QoS 1: {raw_thread:,.0f}/s, one thread {raw_one:,.0f}/s", highlight=False
            )
            through = asyncio.run(through_bridge(broker.port, work, recs))
            console.print(f"bridge with outbox: {through:,.0f}/s", highlight=False)
            drained = asyncio.run(drain(broker, work, console))
            console.print(f"drain: {drained}", highlight=False)
        finally:
            broker.stop()
        rss = backlog_rss(work, console)
    ratio = through / raw
    lines = [
        "## Cloud bridge: outbox throughput, drain after an outage, memory (`bench/bridge.py`)",
        "",
        stamp(),
        "",
        f"Same machine, same mosquitto, same {N_THROUGHPUT:,} telemetry envelopes "
        f"({len(recs[0].payload)} bytes each), QoS 1, in-flight window {WINDOW}.",
        "",
        "| path | events/s | vs raw paho |",
        "|---|---:|---:|",
        f"| raw paho QoS 1, no outbox, loop_start() network thread | {raw_thread:,.0f} | {raw_thread / raw:.0%} |",
        f"| raw paho QoS 1, no outbox, loop() in the publishing thread | {raw_one:,.0f} | {raw_one / raw:.0%} |",
        f"| bridge: SQLite outbox (fsync'd group commit every 100 ms) → mosquitto, deleted on PUBACK "
        f"| {through:,.0f} | {ratio:.0%} |",
        "",
        f"**Outbox throughput: {through:,.0f} events/s, {ratio:.0%} of the faster raw paho** "
        "(goal: at least 50%).",
        "",
        f"Drain: envelopes arrive at {RATE}/s; the broker was stopped for {OUTAGE_S:.0f} s and a "
        f"backlog of {drained['backlog']:,.0f} envelopes built up in the outbox. After the broker came "
        f"back it was acknowledged at **{drained['drain_rate']:,.0f} envelopes/s, "
        f"{drained['drain_rate'] / RATE:.0f}x the arrival rate** (goal: at least 10x), while new ones "
        f"kept arriving; back to steady state in {drained['seconds']:.0f} s.",
        "",
        "Memory of a bridge process with the broker away while the backlog grows (RSS is the "
        "whole Python process; the backlog lives on disk):",
        "",
        "| envelopes in the backlog | RSS | outbox on disk |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {n:,} | {r:.0f} MB | {s:.0f} MB |" for n, r, s in rss]
    lines += [
        "",
        f"**RSS with {rss[-1][0]:,} envelopes backlogged: {rss[-1][1]:.0f} MB**, "
        f"from {rss[0][1]:.0f} MB at {rss[0][0]:,} (goal: under 100 MB and flat).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    backlog_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
