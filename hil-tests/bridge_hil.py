"""Helpers for the cloud-bridge scenarios: a loaded gateway, ingest workers, and what PostgreSQL
and the gateway's outbox hold afterwards.

Imported as ``bridge_hil`` (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from sim.localsite import Proc, cityedge_argv, free_port, start, wait_port
from sim.localsite import wait_log as wait_log  # the scenarios import it from here

SITE = "hil"
GATEWAY = "gw-load"


def start_ingest(
    procs: list[Proc], workdir: Path, broker_port: int, db: str, worker: str, *extra: str
) -> Proc:
    source = ("--broker", f"127.0.0.1:{broker_port}")
    return start_ingest_on(procs, workdir, source, "subscribed to", db, worker, *extra)


def start_ingest_on(
    procs: list[Proc],
    workdir: Path,
    source: Sequence[str],
    ready: str,
    db: str,
    worker: str,
    *extra: str,
) -> Proc:
    """``cityedge ingest`` on ``source`` (its broker or cluster options); waits for ``ready``."""
    proc = start(
        f"ingest-{worker}",
        cityedge_argv("ingest", *source, "--db", db, "--worker", worker, *extra),
        workdir,
    )
    procs.append(proc)
    wait_log(proc, ready)
    return proc


@dataclass
class LoadSite:
    """Modbus simulators polled fast enough for ``polls_per_s`` envelopes per second."""

    sim_ports: list[int]
    units: int
    interval_s: float
    http_port: int
    config: Path
    outbox: Path
    # more keys of the sink's outbox mapping, e.g. ", wal_limit_bytes: 65536"
    outbox_extra: str = ""
    gateway: str = GATEWAY

    @classmethod
    def make(
        cls,
        procs: list[Proc],
        workdir: Path,
        broker_port: int,
        polls_per_s: int = 500,
        simulators: int = 2,
        units: int = 10,
        sink_extra: str = "",
        outbox: Path | None = None,
        outbox_extra: str = "",
        gateway: str = GATEWAY,
    ) -> LoadSite:
        ports = [free_port() for _ in range(simulators)]
        for i, port in enumerate(ports):
            p = start(
                f"sim-{gateway}-{i}",
                cityedge_argv(
                    "simulate", "water-sonde", "--port", str(port), "--units", str(units)
                ),
                workdir,
            )
            procs.append(p)
        for port, p in zip(ports, procs[-simulators:], strict=True):
            wait_port(port, proc=p)
        interval = simulators * units / polls_per_s
        site = cls(
            ports,
            units,
            interval,
            free_port(),
            workdir / "site.yaml",
            outbox or workdir / "outbox.db",
            outbox_extra,
            gateway,
        )
        site.config.write_text(site.yaml(broker_port, sink_extra))
        return site

    def yaml(self, broker_port: int, sink_extra: str) -> str:
        sources = []
        for i, port in enumerate(self.sim_ports):
            devices = ", ".join(
                f"{{name: dev-{i}-{u}, unit_id: {u + 1}, profile: water-sonde, "
                f"poll_interval_s: {self.interval_s}}}"
                for u in range(self.units)
            )
            sources.append(
                f"  - {{type: modbus, name: bus-{i}, host: 127.0.0.1, port: {port}, timeout_s: 1.0, "
                f"devices: [{devices}]}}"
            )
        return (
            f"site: {SITE}\ngateway: {self.gateway}\nlog_level: info\nhttp: {{port: {self.http_port}}}\n"
            "shutdown_flush_s: 60\n"
            "sources:\n" + "\n".join(sources) + "\n"
            f"sinks:\n  - {{type: mqtt, name: brain, host: 127.0.0.1, port: {broker_port}, "
            f"reconnect_initial_s: 0.2, reconnect_max_s: 2, keepalive_s: 5, wait_for_ingest: ingest, "
            f"outbox: {{path: {self.outbox}{self.outbox_extra}}}{sink_extra}}}\n"
        )

    def start_gateway(self, procs: list[Proc], workdir: Path, name: str = "gateway") -> Proc:
        proc = start(name, cityedge_argv("run", "--config", str(self.config)), workdir)
        procs.append(proc)
        wait_port(self.http_port, proc=proc, timeout_s=30)
        return proc


def outbox_state(path: Path) -> tuple[int, int]:
    """(last position given, envelopes still waiting) of a gateway's outbox file."""
    db = sqlite3.connect(path)
    try:
        (last,) = db.execute("SELECT value FROM meta WHERE key='last_pos'").fetchone()
        depth = sum(
            int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            for t in ("telemetry", "event")
        )
        return int(last), depth
    finally:
        db.close()


def pg(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(sql, params).fetchall())


def stored_count(url: str) -> int:
    try:
        return int(pg(url, "SELECT count(*) FROM events")[0][0])
    except psycopg.errors.UndefinedTable:
        return 0


def wait_stored(url: str, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stored_count(url) >= n:
            return
        time.sleep(0.5)
    raise AssertionError(f"only {stored_count(url)} of {n} events stored after {timeout_s} s")


def check_exactly_once(url: str, last_pos: int) -> None:
    """Every outbox position 1..last_pos stored once."""
    (count, distinct_ids, distinct_pos, lo, hi) = pg(
        url,
        "SELECT count(*), count(DISTINCT id), count(DISTINCT pos), min(pos), max(pos) FROM events",
    )[0]
    assert count == distinct_ids == distinct_pos == last_pos, (
        count,
        distinct_ids,
        distinct_pos,
        last_pos,
    )
    assert (lo, hi) == (1, last_pos)


def check_exactly_once_in_order(url: str, last_pos: int) -> None:
    """Every outbox position 1..last_pos stored once; per stream, storage order = event order."""
    check_exactly_once(url, last_pos)
    rows = pg(url, "SELECT device, kind, id::text, pos FROM events ORDER BY n")
    streams: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for device, kind, eid, pos in rows:
        streams.setdefault((device, kind), []).append((eid, pos))
    for key, items in streams.items():
        for (a_id, a_pos), (b_id, b_pos) in itertools.pairwise(items):
            assert a_id < b_id and a_pos < b_pos, (
                f"stream {key} out of order: {a_pos} before {b_pos}"
            )
