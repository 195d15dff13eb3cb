"""The city brain on a NATS JetStream cluster: three real ``nats-server`` nodes, the real
gateway speaking MQTT 3.1.1 to any of them, and ``cityedge ingest --nats`` workers that share
one durable consumer on the MQTT layer's stream, storing into PostgreSQL."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from bridge_hil import (
    LoadSite,
    check_exactly_once,
    outbox_state,
    pg,
    wait_log,
    wait_stored,
)

from sim.localsite import NatsCluster, Proc, cityedge_argv, start


def start_nats_ingest(
    procs: list[Proc], workdir: Path, cluster: NatsCluster, db: str, worker: str, *extra: str
) -> Proc:
    proc = start(
        f"ingest-{worker}",
        cityedge_argv(
            "ingest", "--nats", ",".join(cluster.urls), "--db", db, "--worker", worker, *extra
        ),
        workdir,
    )
    procs.append(proc)
    wait_log(proc, "as durable consumer")
    return proc


@pytest.mark.timeout(180)
def test_gateway_on_311_moves_to_another_node_and_two_workers_store_exactly_once(
    tmp_path: Path, procs: list[Proc], pg_url: str, nats_cluster: NatsCluster
) -> None:
    """The gateway's node is killed with -9 under load: the gateway resumes on the next
    endpoint (MQTT 3.1.1: NATS refuses 5), and every envelope is stored once."""
    n1, n2, n3 = nats_cluster.nodes
    workers = [start_nats_ingest(procs, tmp_path, nats_cluster, pg_url, w) for w in ("w1", "w2")]
    site = LoadSite.make(
        procs,
        tmp_path,
        n1.mqtt_port,
        polls_per_s=200,
        sink_extra=(
            ", protocol: '3.1.1'"
            f", endpoints: ['127.0.0.1:{n2.mqtt_port}', '127.0.0.1:{n3.mqtt_port}']"
        ),
    )
    gateway = site.start_gateway(procs, tmp_path)
    wait_log(gateway, "MQTT 3.1.1")
    time.sleep(4)
    nats_cluster.kill(n1)  # the gateway's node
    wait_log(gateway, "reachable again", timeout_s=30)
    time.sleep(3)
    nats_cluster.start_node(n1)
    time.sleep(3)

    gateway.popen.send_signal(signal.SIGTERM)
    assert gateway.popen.wait(60) == 0, gateway.tail()
    last_pos, depth = outbox_state(site.outbox)
    assert depth == 0, "the gateway flushed its outbox before stopping"
    assert last_pos > 500, last_pos
    wait_stored(pg_url, last_pos, timeout_s=60)
    # Two workers commit their batches side by side: the storage order across them is not the
    # envelope order (each row keeps its session, seq and pos to sort by)
    check_exactly_once(pg_url, last_pos)
    # both workers took a share of the one work queue
    per_worker = dict(pg(pg_url, "SELECT worker, stored FROM workers"))
    assert set(per_worker) == {"w1", "w2"} and all(v > 0 for v in per_worker.values()), per_worker
    for w in workers:
        assert w.alive(), w.tail()
