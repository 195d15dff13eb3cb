"""A damaged or emptied outbox at start, and a stop with an outbox that cannot be opened: the
real gateway process, the real mosquitto and ingest (PostgreSQL).

The damaged file is set aside (kept, named in the log, the birth message and ``/healthz``), the
gateway runs on with a new session, and the ingest never sees a position used twice or a session
number again; killed afterwards, the ingest shows it offline. A gateway whose outbox cannot be
opened at all still stops within ``shutdown_flush_s`` and a margin."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from bridge_hil import (
    GATEWAY,
    SITE,
    LoadSite,
    outbox_state,
    pg,
    start_ingest,
    stored_count,
    wait_log,
)
from hil import http_text
from paho.mqtt.enums import CallbackAPIVersion

from edge.gateway import STAGE_CLEANUP_S
from protocols import topics
from protocols.session import GatewayState, decode_state
from sim.localsite import Broker, Proc


def overwrite_pages(path: Path) -> None:
    with path.open("r+b") as f:
        for page in (1, 2, 3, 4, 6, 9):
            f.seek(page * 4096)
            f.write(bytes(range(256)) * 16)


def empty(path: Path) -> None:
    path.write_bytes(b"")


def retained_state(port: int, timeout_s: float = 10) -> GatewayState:
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="state-reader")

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        done.set()

    client.on_connect = lambda c, *_: c.subscribe(topics.state_topic(SITE, GATEWAY), qos=1)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert done.wait(timeout_s), "no retained state message"
    finally:
        client.loop_stop()
        client.disconnect()
    return decode_state(got[0])


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("damage", [overwrite_pages, empty], ids=["pages-overwritten", "empty"])
def test_damaged_outbox_no_reuse(
    tmp_path: Path,
    procs: list[Proc],
    pg_url: str,
    mosquitto: Broker,
    damage: Callable[[Path], None],
) -> None:
    """A damaged (or emptied) outbox is set aside and no position or session is used twice."""
    ingest = start_ingest(procs, tmp_path, mosquitto.port, pg_url, "w1")
    site = LoadSite.make(procs, tmp_path, mosquitto.port, polls_per_s=100, simulators=1, units=5)
    first = site.start_gateway(procs, tmp_path, name="gateway-1")
    wait_until(lambda: stored_count(pg_url) >= 300, "envelopes stored")
    ingest.stop()  # the city brain goes away: the gateway keeps what it makes...
    time.sleep(2)
    first.kill()  # ...and dies with envelopes in its outbox
    last_pos, held = outbox_state(site.outbox)
    assert held > 0
    (old_session,) = pg(pg_url, "SELECT max(session) FROM events")[0]
    damage(site.outbox)

    start_ingest(procs, tmp_path, mosquitto.port, pg_url, "w2")
    before = stored_count(pg_url)
    second = site.start_gateway(procs, tmp_path, name="gateway-2")
    wait_log(second, "set aside as")
    aside = re.search(r"set aside as (\S+)", second.log_path.read_text())
    assert aside is not None and Path(aside[1]).exists()  # kept for recovery
    assert Path(aside[1]).name.startswith("outbox.db.damaged-")
    wait_until(lambda: stored_count(pg_url) >= before + 300, "the new outbox delivering")

    birth = retained_state(mosquitto.port)  # the birth names the file set aside
    assert birth.state == "online" and birth.session > old_session
    assert birth.outbox is not None and birth.outbox.set_aside is not None
    assert [a.file for a in birth.outbox.set_aside] == [aside[1]]
    status, body = http_text(f"http://127.0.0.1:{site.http_port}/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok", health
    assert any("set aside" in n for n in health["notices"]), health

    second.kill()  # the ingest must then show it offline, with its own session
    wait_until(
        lambda: (
            pg(pg_url, "SELECT state FROM gateways WHERE gateway=%s", GATEWAY)[0][0] == "offline"
        ),
        "the ingest showing the killed gateway offline",
    )
    ((state, session, reason),) = pg(
        pg_url, "SELECT state, session, reason FROM gateways WHERE gateway=%s", GATEWAY
    )
    assert (state, session, reason) == ("offline", birth.session, "connection lost")

    reused = pg(
        pg_url,
        "SELECT pos, count(DISTINCT id) FROM events WHERE gateway=%s GROUP BY pos "
        "HAVING count(DISTINCT id) > 1",
        GATEWAY,
    )
    assert reused == []  # before: positions from 1 again, 2,990 of them with two ids
    ((new_lo, new_sessions_lo),) = pg(
        pg_url,
        "SELECT min(pos), min(session) FROM events WHERE gateway=%s AND session > %s",
        GATEWAY,
        old_session,
    )
    assert new_lo > last_pos  # the new outbox continues above every position given before
    assert new_sessions_lo > old_session
    ((old_hi,),) = pg(
        pg_url,
        "SELECT max(pos) FROM events WHERE gateway=%s AND session <= %s",
        GATEWAY,
        old_session,
    )
    assert old_hi <= last_pos


def test_a_gateway_whose_outbox_cannot_be_opened_stops_within_its_bound(
    tmp_path: Path, procs: list[Proc], mosquitto: Broker
) -> None:
    flush_s = 3
    site = LoadSite.make(procs, tmp_path, mosquitto.port, polls_per_s=200)
    site.outbox.mkdir()  # not a database at all, and it cannot be set aside: every start fails
    site.config.write_text(
        site.config.read_text()
        .replace("shutdown_flush_s: 60\n", f"shutdown_flush_s: {flush_s}\n")
        .replace("sources:\n", "channels: {sink_outbox: {capacity: 16}}\nsources:\n", 1)
    )
    gateway = site.start_gateway(procs, tmp_path)

    def healthz() -> dict[str, Any]:
        status, body = http_text(f"http://127.0.0.1:{site.http_port}/healthz")
        assert status == 200, body
        out: dict[str, Any] = json.loads(body)
        return out

    wait_until(lambda: healthz()["plugins"]["brain"]["restarts"] >= 2, "the sink failing")
    time.sleep(2)  # the sink's channel is full: the dispatcher waits on it
    health = healthz()
    gateway.popen.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = gateway.popen.wait(flush_s + STAGE_CLEANUP_S + 20)  # before: hung for good
    took = time.monotonic() - started
    print(f"stopped in {took:.1f} s (exit {code})")
    assert took < flush_s + STAGE_CLEANUP_S + 5, gateway.tail()
    assert "gateway stopped" in gateway.log_path.read_text()
    # while it ran, /healthz told why (before: "ok")
    assert health["status"] == "degraded", health
    assert any("cannot open the outbox" in r for r in health["reasons"]), health
