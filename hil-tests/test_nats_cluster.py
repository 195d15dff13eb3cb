"""The city brain on a NATS JetStream cluster: three real ``nats-server`` nodes, the real
gateway speaking MQTT 3.1.1 to any of them, and ``cityedge ingest --nats`` workers that share
one durable consumer on the MQTT layer's stream, storing into PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bridge_hil import (
    SITE,
    LoadSite,
    check_exactly_once,
    outbox_state,
    pg,
    start_ingest_on,
    wait_log,
    wait_stored,
)

from cloud_bridge.link import LinkSettings, MqttLink, TlsSettings
from protocols import envelope as env
from protocols import topics
from protocols.ids import uuid7_from_parts
from protocols.session import GatewayState, LinkState, encode_state
from sim.localsite import NatsCluster, Proc, cityedge_argv, start

# loads the machine (a fleet, a flood, or timing under load): with make test's two workers, these
# run one after the other on one worker, never beside each other
pytestmark = pytest.mark.xdist_group("heavy")


def start_nats_ingest(
    procs: list[Proc], workdir: Path, cluster: NatsCluster, db: str, worker: str, *extra: str
) -> Proc:
    source = ("--nats", ",".join(cluster.urls))
    return start_ingest_on(procs, workdir, source, "as durable consumer", db, worker, *extra)


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


FLEET = int(os.environ.get("CITYEDGE_NATS_FLEET", "200"))  # simulated gateways
FLEET_RATE = 1.0  # envelopes/s each
OUTAGE_S = 10.0  # each killed program is started again after this long


def fleet_rows(url: str, site: str) -> dict[str, tuple[int, int, int, int]]:
    """Per gateway: (rows, distinct ids, distinct positions, highest position)."""
    rows = pg(
        url,
        "SELECT gateway, count(*), count(DISTINCT id), count(DISTINCT pos), max(pos) FROM events "
        "WHERE site = %s GROUP BY gateway",
        site,
    )
    return {g: (int(a), int(b), int(c), int(d)) for g, a, b, c, d in rows}


def broken_sessions(url: str) -> list[tuple[str, int, int, int]]:
    """(gateway, session, sequence numbers seen, highest) of every session with a hole, counting
    the sequence numbers of duplicates sent again in a later session (``resent``)."""
    rows = pg(
        url,
        "SELECT gateway, session, count(DISTINCT seq), max(seq) FROM ("
        " SELECT gateway, session, seq FROM events UNION ALL"
        " SELECT gateway, session, seq FROM resent) s GROUP BY gateway, session",
    )
    return [(g, int(s), int(n), int(m)) for g, s, n, m in rows if int(n) != int(m)]


@pytest.mark.timeout(300)
def test_cluster_under_load_loses_nothing_when_nodes_and_a_worker_die(
    tmp_path: Path, procs: list[Proc], pg_url: str, nats_cluster: NatsCluster
) -> None:
    """The issue's scenario: simulated gateways and two real ones publishing, two ingest
    workers; kill -9 a node that does not lead the stream, then the stream's leader, then an
    ingest worker, each started again after 10 s. Every envelope is stored exactly once (checked
    per gateway by position and per session by sequence number), none lost."""
    cluster = nats_cluster
    mqtt = [f"127.0.0.1:{p}" for p in cluster.mqtt_ports]
    ack_wait = ("--nats-ack-wait-s", "5")
    workers = {
        w: start_nats_ingest(procs, tmp_path, cluster, pg_url, w, *ack_wait) for w in ("w1", "w2")
    }
    report = tmp_path / "fleet.json"
    fleet = start(
        "fleet",
        cityedge_argv(
            "simulate",
            "gateways",
            "--broker",
            ",".join(mqtt),
            "--count",
            str(FLEET),
            "--rate",
            str(FLEET_RATE),
            "--site",
            "city",
            "--drain-s",
            "60",
            "--report",
            str(report),
        ),
        tmp_path,
    )
    procs.append(fleet)
    sites = []
    for i in range(2):  # two real gateways, on different first nodes
        first, *rest = mqtt[i:] + mqtt[:i]
        site = LoadSite.make(
            procs,
            tmp_path / f"gw{i}",
            int(first.rpartition(":")[2]),
            polls_per_s=50,
            simulators=1,
            units=5,
            gateway=f"gw-real-{i}",
            sink_extra=f", protocol: '3.1.1', endpoints: [{', '.join(repr(e) for e in rest)}]",
        )
        sites.append((site, site.start_gateway(procs, tmp_path / f"gw{i}")))
    time.sleep(6)  # under load

    leader = cluster.stream_leader("$MQTT_msgs")
    follower = next(n for n in cluster.nodes if n is not leader)
    for victim in (follower, None):
        victim = victim or cluster.stream_leader("$MQTT_msgs")
        cluster.kill(victim)
        time.sleep(OUTAGE_S)
        cluster.start_node(victim)
        time.sleep(2)
    workers["w1"].kill()
    time.sleep(OUTAGE_S)
    workers["w1"] = start_nats_ingest(procs, tmp_path, cluster, pg_url, "w1", *ack_wait)
    time.sleep(3)

    # stop making envelopes; everything made must arrive
    fleet.popen.send_signal(signal.SIGTERM)
    for _site, gateway in sites:
        gateway.popen.send_signal(signal.SIGTERM)
    assert fleet.popen.wait(90) == 0, fleet.tail()
    made = json.loads(report.read_text())
    assert made["unacked"] == 0 and made["dropped"] == 0, {
        k: made[k] for k in ("unacked", "dropped")
    }
    expected = {g: r["pos"] for g, r in made["gateways"].items()}
    for site, gateway in sites:
        assert gateway.popen.wait(60) == 0, gateway.tail()
        last_pos, depth = outbox_state(site.outbox)
        assert depth == 0, "the gateway flushed its outbox before stopping"
        expected[site.gateway] = last_pos
    total = sum(expected.values())
    assert total > FLEET * FLEET_RATE * 20, total  # it really was under load throughout
    wait_stored(pg_url, total, timeout_s=90)

    stored = {**fleet_rows(pg_url, "city"), **fleet_rows(pg_url, SITE)}
    wrong = {g: (stored.get(g), n) for g, n in expected.items() if stored.get(g) != (n, n, n, n)}
    assert not wrong, (
        f"(rows, ids, positions, highest) != made, of {len(wrong)} gateways: {dict(list(wrong.items())[:5])}"
    )
    assert broken_sessions(pg_url) == []
    sessions = pg(pg_url, "SELECT count(DISTINCT (gateway, session)) FROM events")[0][0]
    assert sessions > len(expected), "gateways moved to other nodes (new sessions)"
    print(
        f"{total} envelopes from {len(expected)} gateways in {sessions} sessions, stored once each"
    )
    for w in workers.values():
        assert w.alive(), w.tail()


@pytest.mark.timeout(120)
def test_a_gateway_publishing_under_another_prefix_is_refused_and_the_hole_reported(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """``broker-config --engine nats``: a gateway's certificate maps to a user that may publish
    only below its own prefix. NATS acknowledges the trespassing publish and drops it; the
    ingest's gap check names the gateway, its session and why."""
    auth = tmp_path / "auth"
    done = subprocess.run(
        cityedge_argv(
            "broker-config",
            "--engine",
            "nats",
            "--site",
            "city",
            "--gateway",
            "gw-a",
            "--gateway",
            "gw-b",
            "--out",
            str(auth),
            "--json",
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    files = json.loads(done.stdout)
    cluster = NatsCluster.start(
        tmp_path / "nats", include=Path(files["auth"]), mqtt_include=Path(files["mqtt_tls"])
    )
    try:
        db = tmp_path / "ingest.db"
        ingest = start(
            "ingest",
            cityedge_argv(
                "ingest",
                "--nats",
                ",".join(cluster.urls),
                "--db",
                str(db),
                "--worker",
                "w1",
                "--nats-user",
                "city-brain",
                "--nats-password-file",
                files["city_brain_password"],
            ),
            tmp_path,
        )
        procs.append(ingest)
        wait_log(ingest, "connected to the NATS cluster")
        gw = files["gateways"]["gw-a"]
        tls = TlsSettings(
            ca_file=Path(files["ca"]), cert_file=Path(gw["cert"]), key_file=Path(gw["key"])
        )
        sent = asyncio.run(trespass(cluster.mqtt_ports[1], tls, ingest))
        assert sent == 4  # every publish was acknowledged, the trespassing one too
        wait_log(ingest, "gateway city/gw-a session 1 ended with 1 of 4 sequence numbers missing")
        line = next(
            ln for ln in ingest.log_path.read_text().splitlines() if "city/gw-a session 1" in ln
        )
        assert "outside a gateway's permissions" in line, line
        summary = json.loads(
            subprocess.run(
                cityedge_argv("ingest", "--status", "--db", str(db)),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert summary["events"] == {"telemetry": 3}, summary  # gw-a's own; nothing for gw-b
        assert [(g["gateway"], g["missing"]) for g in summary["gaps"]] == [("gw-a", 1)]
        assert 'Publish Violation - Subject "cityedge.v1.city.gw-b.telemetry.d1"' in "".join(
            n.proc.log_path.read_text() for n in cluster.nodes if n.proc is not None
        )
    finally:
        cluster.stop()


async def trespass(port: int, tls: TlsSettings, ingest: Proc) -> int:
    """gw-a's session 1: birth, then seq 1-4, the third on gw-b's topic, then its death."""
    settings = LinkSettings("127.0.0.1", port, client_id="city-gw-a", tls=tls, protocol="3.1.1")
    sent = 0
    async with MqttLink.open(settings) as link:
        # the MQTT layer's stream exists now: wait for the ingest's consumer before publishing
        await asyncio.to_thread(wait_log, ingest, "as durable consumer")
        state = topics.state_topic("city", "gw-a")
        now = datetime.now(UTC)
        await link.publish(
            state,
            encode_state(
                GatewayState(
                    state=LinkState.ONLINE, site="city", gateway="gw-a", session=1, time=now
                )
            ),
            retain=True,
        )
        for seq in range(1, 5):
            e = env.TelemetryEnvelope(
                id=uuid7_from_parts(int(now.timestamp() * 1000) + seq, seq),
                site="city",
                gateway="gw-a",
                device="d1",
                time=now,
                payload=env.TelemetryPayload(readings=[env.PointValue(point="p", value=seq)]),
            )
            owner = "gw-b" if seq == 3 else "gw-a"
            await link.publish(
                topics.data_topic("city", owner, "telemetry", "d1"),
                env.with_link(env.encode(e), 1, seq, seq),
            )
            sent += 1
        await link.publish(
            state,
            encode_state(
                GatewayState(
                    state=LinkState.OFFLINE,
                    site="city",
                    gateway="gw-a",
                    session=1,
                    time=now,
                    reason="stopped",
                )
            ),
            retain=True,
        )
    return sent
