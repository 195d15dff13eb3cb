"""The cloud bridge with the real mosquitto, the real ingest processes and PostgreSQL: the disk
budget, two ingest workers on one shared subscription, the broker's ACL and signed commands."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bridge_hil import pg, start_ingest, wait_stored
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_bridge.citybrain.brokerconf import write_site_broker
from cloud_bridge.link import LinkRefused, LinkSettings, MqttLink, TlsSettings
from cloud_bridge.uplink.bridge import Bridge, BridgeSettings
from cloud_bridge.uplink.outbox import OutboxClass, OutboxSettings, record_of
from protocols import commands, signed, topics
from protocols import envelope as env
from protocols.ids import Uuid7Generator
from protocols.session import decode_state
from sim.localsite import Broker, Proc, free_port, mosquitto_path, start, wait_port

SITE = "hil"
IDS = Uuid7Generator()


def telemetry(device: str, n: int, pad: int = 200) -> env.TelemetryEnvelope:
    return env.TelemetryEnvelope(
        id=IDS.new(int(time.time() * 1000)),
        site=SITE,
        gateway="gw-a",
        device=device,
        time=datetime.now(UTC),
        payload=env.TelemetryPayload(readings=[env.PointValue(point="n", value=n, unit="x" * pad)]),
    )


def alarm(n: int) -> env.AlarmEnvelope:
    now = datetime.now(UTC)
    return env.AlarmEnvelope(
        id=IDS.new(int(time.time() * 1000)),
        site=SITE,
        gateway="gw-a",
        device="sonde",
        time=now,
        payload=env.AlarmPayload(
            rule=f"rule-{n}",
            point="ph",
            state=env.AlarmState.RAISED,
            severity=env.Severity.MAJOR,
            value=9.5,
            limit=9.0,
            direction="above",
            since=now,
        ),
    )


def bridge_settings(
    port: int, outbox: Path, *, budget: int = 64 * 2**20, **kw: Any
) -> BridgeSettings:
    link = kw.pop("link", None) or LinkSettings(
        "127.0.0.1", port, client_id="hil-gw-a", keepalive_s=5
    )
    return BridgeSettings(
        site=SITE,
        gateway="gw-a",
        link=link,
        outbox_path=outbox,
        outbox=OutboxSettings(budget_bytes=budget, wal_limit_bytes=256 * 1024),
        reconnect_initial_s=0.1,
        reconnect_max_s=0.5,
        **{"wait_for_ingest": "ingest", **kw},
    )


async def wait_until(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_disk_budget_during_a_long_outage_drops_telemetry_oldest_first_keeps_alarms(
    tmp_path: Path, procs: list[Proc], pg_url: str, mosquitto: Broker
) -> None:
    start_ingest(procs, tmp_path, mosquitto.port, pg_url, "w1")
    budget = 100_000
    settings = bridge_settings(mosquitto.port, tmp_path / "outbox.db", budget=budget)
    async with Bridge.open(settings) as bridge:
        run = asyncio.create_task(bridge.run())
        await wait_until(bridge.connected.is_set, 20, "the bridge to connect")
        mosquitto.stop()  # a long outage: far more than the budget arrives meanwhile
        telemetry_made = alarms_made = 0
        peak_main = peak_wal = 0
        for i in range(3000):
            await bridge.put(record_of(telemetry(f"dev-{i % 3}", i)))
            telemetry_made += 1
            if i % 50 == 25:
                await bridge.put(record_of(alarm(i)))
                alarms_made += 1
            if i % 100 == 0:
                await asyncio.sleep(0.05)  # let group commits happen as they would over time
                main, wal = bridge.outbox.file_sizes()
                peak_main, peak_wal = max(peak_main, main), max(peak_wal, wal)
        await wait_until(lambda: not bridge._pending, 10, "everything committed")
        dropped = bridge.outbox.dropped
        assert dropped[OutboxClass.EVENT] == 0
        assert dropped[OutboxClass.TELEMETRY] > 2000
        assert bridge.outbox.bytes <= budget
        # the files on disk stay within the stated bounds: the database about 1.5 x the budget
        # (b-tree pages are not full), the WAL its limit plus one group commit (here < 200 kB)
        assert peak_main <= 1.5 * budget + 64 * 1024, peak_main
        assert peak_wal <= 256 * 1024 + 200 * 1024, peak_wal

        mosquitto.restart()
        state_reader = LinkSettings("127.0.0.1", mosquitto.port, client_id="state-reader")
        async with MqttLink.open(state_reader) as reader:
            await reader.subscribe(topics.state_topic(SITE, "gw-a"))
            await wait_until(lambda: bridge.backlog == 0, 60, "the outbox to drain")
            bridge.close_intake()
            await asyncio.wait_for(run, 30)
            # the drops are reported in the birth the gateway published after the outage
            births = []
            while True:
                try:
                    msg = await reader.receive(2.0)
                except TimeoutError:
                    break
                births.append(decode_state(msg.payload))
    reported = [b.outbox.classes["telemetry"].dropped for b in births if b.outbox is not None]
    assert reported and reported[-1] == dropped[OutboxClass.TELEMETRY]

    stored = telemetry_made - dropped[OutboxClass.TELEMETRY] + alarms_made
    wait_stored(pg_url, stored, 60)
    rows = pg(
        pg_url, "SELECT kind, count(*), min(pos), max(pos) FROM events GROUP BY kind ORDER BY kind"
    )
    assert rows[0][:2] == ("alarm", alarms_made)
    kind, n, lo, hi = rows[1]
    assert kind == "telemetry" and n == telemetry_made - dropped[OutboxClass.TELEMETRY]
    # oldest first: what is left of the telemetry is the newest, without holes
    tele_pos = [
        p for (p,) in pg(pg_url, "SELECT pos FROM events WHERE kind='telemetry' ORDER BY pos")
    ]
    alarm_pos = {p for (p,) in pg(pg_url, "SELECT pos FROM events WHERE kind='alarm'")}
    expected = [p for p in range(lo, bridge.outbox.last_pos + 1) if p not in alarm_pos]
    assert tele_pos == expected and hi == bridge.outbox.last_pos - (
        bridge.outbox.last_pos in alarm_pos
    )


async def test_two_ingest_workers_split_the_load_and_store_nothing_twice(
    tmp_path: Path, procs: list[Proc], pg_url: str, mosquitto: Broker
) -> None:
    start_ingest(procs, tmp_path, mosquitto.port, pg_url, "w1")
    start_ingest(procs, tmp_path, mosquitto.port, pg_url, "w2")
    total = 6000
    async with Bridge.open(bridge_settings(mosquitto.port, tmp_path / "outbox.db")) as bridge:
        run = asyncio.create_task(bridge.run())
        for i in range(total):
            await bridge.put(record_of(telemetry(f"dev-{i % 4}", i, pad=10)))
        bridge.close_intake()
        await asyncio.wait_for(run, 120)
    wait_stored(pg_url, total, 60)
    (count, distinct, lo, hi) = pg(
        pg_url, "SELECT count(*), count(DISTINCT id), min(pos), max(pos) FROM events"
    )[0]
    assert (count, distinct, lo, hi) == (total, total, 1, total)
    by_worker = dict(pg(pg_url, "SELECT worker, count(*) FROM events GROUP BY worker"))
    assert set(by_worker) == {"w1", "w2"}
    assert min(by_worker.values()) > total // 5, by_worker


@pytest.fixture
def secure_broker(tmp_path: Path) -> Any:
    exe = mosquitto_path()
    assert exe is not None
    files = write_site_broker(
        tmp_path / "broker",
        site=SITE,
        gateways=["gw-a", "gw-b"],
        port=free_port(),
        brain_port=free_port(),
        bind="127.0.0.1",
    )
    proc = start("mosquitto-tls", [exe, "-c", str(files.conf)], tmp_path)
    wait_port(files.port, proc=proc)
    wait_port(files.brain_port, proc=proc)
    yield files
    proc.stop()


def tls_link(files: Any, who: str, client_id: str, port: int | None = None) -> LinkSettings:
    """A gateway's link on the gateways' port, the city brain's on its own (unless ``port``)."""
    c = files.city_brain if who == "city-brain" else files.gateways[who]
    return LinkSettings(
        "127.0.0.1",
        port or (files.brain_port if who == "city-brain" else files.port),
        client_id=client_id,
        tls=TlsSettings(ca_file=files.ca, cert_file=c.cert, key_file=c.key),
        connect_timeout_s=10,
    )


async def test_the_brokers_acl_confines_each_gateway_to_its_own_prefix(secure_broker: Any) -> None:
    files = secure_broker
    async with (
        MqttLink.open(tls_link(files, "city-brain", "brain")) as brain,
        MqttLink.open(tls_link(files, "gw-a", "gw-a")) as gw_a,
    ):
        await brain.subscribe(f"{topics.ROOT}/#")
        # its own prefix: fine
        await gw_a.publish(topics.data_topic(SITE, "gw-a", "telemetry", "d"), b"own")
        # another gateway's prefix: refused by the broker (MQTT 5 PUBACK "Not authorized")
        with pytest.raises(LinkRefused, match="authori"):
            await gw_a.publish(topics.data_topic(SITE, "gw-b", "telemetry", "d"), b"forged")
        # another gateway's commands: mosquitto 2.0 grants the subscription but checks the ACL on
        # every delivery, so nothing of gw-b's reaches gw-a; its own commands do arrive
        await gw_a.subscribe(topics.command_request_topic(SITE, "gw-b"))
        await gw_a.subscribe(topics.command_request_topic(SITE, "gw-a"))
        await brain.publish(topics.command_request_topic(SITE, "gw-b"), b"for b")
        await brain.publish(topics.command_request_topic(SITE, "gw-a"), b"for a")
        to_a = []
        while True:
            try:
                to_a.append(await gw_a.receive(1.5))
            except TimeoutError:
                break
        assert [(m.topic, m.payload) for m in to_a] == [
            (topics.command_request_topic(SITE, "gw-a"), b"for a")
        ]
        got = []
        while True:
            try:
                got.append(await brain.receive(1.0))
            except TimeoutError:
                break
        assert [m.payload for m in got if "telemetry" in m.topic] == [b"own"]
        # without a certificate of the site CA there is no connection at all
        with pytest.raises(Exception, match=r"(?i)certificate|ssl|tls|handshake|refused|connect"):
            await MqttLink.open(
                LinkSettings(
                    "127.0.0.1",
                    files.port,
                    client_id="x",
                    tls=TlsSettings(ca_file=files.ca),
                    connect_timeout_s=5,
                )
            )


async def test_signed_commands_unsigned_expired_replayed_or_wrongly_signed_are_refused(
    tmp_path: Path, secure_broker: Any
) -> None:
    files = secure_broker
    ops = Ed25519PrivateKey.generate()
    stranger = Ed25519PrivateKey.generate()
    settings = bridge_settings(
        files.port,
        tmp_path / "outbox.db",
        link=tls_link(files, "gw-a", "gw-a"),
        command_keys={"ops": ops.public_key()},
        wait_for_ingest=None,
    )
    async with (
        MqttLink.open(tls_link(files, "city-brain", "brain")) as brain,
        Bridge.open(settings) as bridge,
    ):
        run = asyncio.create_task(bridge.run())
        await brain.subscribe(topics.command_reply_topic(SITE, "gw-a"))
        await wait_until(bridge.connected.is_set, 20, "the gateway's link")

        def request(rid: str, gateway: str = "gw-a", command: str = "ping") -> bytes:
            return commands.encode_request(
                commands.CommandRequest(id=rid, site=SITE, gateway=gateway, command=command)
            )

        def sign(
            body: bytes, key: Ed25519PrivateKey = ops, kid: str = "ops", ttl: int = 60
        ) -> bytes:
            return signed.sign(
                body, purpose="command", kid=kid, key=key, expires_at=int(time.time()) + ttl
            )

        good = sign(request("r-ok"))
        cases = [
            ("r-ok", good, True, None),
            ("r-ok", good, False, "replayed"),
            ("r-unsigned", request("r-unsigned"), False, "unsigned"),
            ("r-expired", sign(request("r-expired"), ttl=-5), False, "expired"),
            (
                "r-stranger",
                sign(request("r-stranger"), key=stranger, kid="stranger"),
                False,
                "unknown-key",
            ),
            ("r-forged", sign(request("r-forged"), key=stranger), False, "bad-signature"),
            (None, b"\x00not json", False, "malformed"),
            ("r-other", sign(request("r-other", gateway="gw-b")), False, "wrong-target"),
            ("r-stats", sign(request("r-stats", command="outbox.stats")), True, None),
            ("r-nope", sign(request("r-nope", command="reboot")), False, "unknown-command"),
        ]
        req_topic = topics.command_request_topic(SITE, "gw-a")
        for rid, data, ok, reason in cases:
            await brain.publish(req_topic, data)
            reply = commands.decode_reply((await brain.receive(10)).payload)
            assert (reply.request, reply.ok, reply.reason) == (rid, ok, reason), reply
            assert reply.message
        # the gateway kept running and recorded every command
        audit = await bridge.audit_log()
        assert [(a["request"], a["reason"]) for a in audit] == [(c[0], c[3]) for c in cases]
        bridge.close_intake()
        await asyncio.wait_for(run, 20)
        bridge.close_intake()
        await asyncio.wait_for(run, 20)
        # a replay after a restart is still refused: the nonces live in the outbox's database
        async with Bridge.open(settings) as bridge:
            run = asyncio.create_task(bridge.run())
            await wait_until(bridge.connected.is_set, 20, "the gateway's link again")
            await brain.publish(req_topic, good)
            reply = commands.decode_reply((await brain.receive(10)).payload)
            assert (reply.request, reply.ok, reply.reason) == ("r-ok", False, "replayed")
            bridge.close_intake()
            await asyncio.wait_for(run, 20)
    assert json.loads(reply.model_dump_json())["gateway"] == "gw-a"


async def test_a_gateways_certificate_cannot_knock_another_gateway_offline(
    tmp_path: Path, procs: list[Proc], pg_url: str, secure_broker: Any
) -> None:
    """gw-b's certificate sending gw-a's client id (its configured one, or its identity) used to
    close gw-a's connection and fire its will. The generated config ties a gateway's client id to
    its certificate; the city brain's clients, on their own port and CA, keep choosing theirs:
    two ingest workers share the one city-brain certificate and the gateway still delivers."""
    files = secure_broker
    brain = files.city_brain
    tls = ["--ca", str(files.ca), "--cert", str(brain.cert), "--key", str(brain.key)]
    for worker in ("w1", "w2"):
        start_ingest(procs, tmp_path, files.brain_port, pg_url, worker, *tls)
    gw_a = bridge_settings(
        files.port, tmp_path / "outbox.db", link=tls_link(files, "gw-a", "hil-gw-a")
    )
    async with (
        MqttLink.open(tls_link(files, "city-brain", "watcher")) as watcher,
        Bridge.open(gw_a) as bridge,
    ):
        await watcher.subscribe(topics.state_topic(SITE, "gw-a"), qos=1)
        run = asyncio.create_task(bridge.run())
        await wait_until(bridge.connected.is_set, 20, "gw-a's link")
        birth = decode_state((await watcher.receive(10)).payload)
        assert (birth.state.value, birth.session) == ("online", bridge.counters.session)

        for stolen_id in ("hil-gw-a", "hil.gw-a"):
            async with MqttLink.open(tls_link(files, "gw-b", stolen_id)) as thief:
                await asyncio.sleep(2.0)  # a takeover closes gw-a's socket at once
                assert thief.connected and bridge.connected.is_set()
        assert (bridge.counters.connects, bridge.counters.connect_failures) == (1, 0)
        with pytest.raises(TimeoutError):  # no death (the will) of gw-a, no new birth
            await watcher.receive(3)

        # a gateway's certificate is not admitted on the city brain's port, nor the brain's on the
        # gateways' port
        for who, port in (("gw-b", files.brain_port), ("city-brain", files.port)):
            with pytest.raises(
                Exception, match=r"(?i)certificate|ssl|tls|handshake|refused|connect"
            ):
                await MqttLink.open(
                    dataclasses.replace(tls_link(files, who, "x", port=port), connect_timeout_s=5)
                )

        # the ingest workers (heartbeats gw-a waits for: wait_for_ingest) and the gateway still work
        for i in range(50):
            await bridge.put(record_of(telemetry("sonde", i)))
        await asyncio.to_thread(wait_stored, pg_url, 50, 60)
        assert bridge.connected.is_set() and bridge.counters.connects == 1
        bridge.close_intake()
        await asyncio.wait_for(run, 20)
