"""The link loses nothing: the real gateway process under load, mosquitto stopped and started,
gateways killed with SIGKILL, and the real ingest storing into PostgreSQL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from bridge_hil import (
    GATEWAY,
    SITE,
    LoadSite,
    check_exactly_once_in_order,
    outbox_state,
    pg,
    start_ingest,
    stored_count,
    wait_stored,
)

from sim.localsite import Broker, Proc

# loads the machine (a fleet, a flood, or timing under load): with make test's two workers, these
# run one after the other on one worker, never beside each other
pytestmark = pytest.mark.xdist_group("heavy")

RATE = 500  # envelopes per second offered (polls of simulated devices)
# The scenario is 3 minutes with the broker away for 60 s in the middle; a developer can
# shorten it while working (CITYEDGE_OUTAGE_SCALE=0.2), `make test` runs it at full length.
SCALE = float(os.environ.get("CITYEDGE_OUTAGE_SCALE", "1"))


@pytest.mark.timeout(480)  # the scenario alone is 3 minutes; the drain and checks follow
def test_broker_outage_of_60_s_under_500_per_s_loses_nothing(
    tmp_path: Path, procs: list[Proc], pg_url: str
) -> None:
    broker = Broker.start(tmp_path / "broker", persistence=True)
    try:
        start_ingest(procs, tmp_path, broker.port, pg_url, "w1")
        site = LoadSite.make(procs, tmp_path, broker.port, polls_per_s=RATE)
        gateway = site.start_gateway(procs, tmp_path)
        t0 = time.monotonic()
        time.sleep(60 * SCALE)
        before = stored_count(pg_url)
        assert before > 0, gateway.tail()

        broker.stop()  # SIGTERM: mosquitto saves the ingest's session and what it queued
        outage_started = time.monotonic()
        time.sleep(60 * SCALE)
        waiting = outbox_state(site.outbox)[1]
        broker.restart()
        outage = time.monotonic() - outage_started
        time.sleep(max(0.0, 180 * SCALE - (time.monotonic() - t0)))

        elapsed = time.monotonic() - t0
        gateway.popen.send_signal(signal.SIGTERM)
        assert gateway.popen.wait(90) == 0, gateway.tail()
        last_pos, depth = outbox_state(site.outbox)
        assert depth == 0, "the gateway flushed its outbox before stopping"
        wait_stored(pg_url, last_pos, timeout_s=120)
        check_exactly_once_in_order(pg_url, last_pos)

        # the scenario really was loaded and the outage really was held in the outbox
        rate = last_pos / elapsed
        print(
            f"{last_pos} envelopes in {elapsed:.0f} s ({rate:.0f}/s); {waiting} waited out a {outage:.0f} s outage"
        )
        assert rate > 0.4 * RATE, f"only {rate:.0f} envelopes/s were offered"
        assert waiting > 0.4 * RATE * 60 * SCALE, waiting

        # the ingest saw more than one session, and the clean stop as the last state
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            (state, session, reason) = pg(
                pg_url,
                "SELECT state, session, reason FROM gateways WHERE site=%s AND gateway=%s",
                SITE,
                GATEWAY,
            )[0]
            if state == "offline":
                break
            time.sleep(0.5)
        assert (state, reason) == ("offline", "shutdown") and session >= 2
        assert pg(pg_url, "SELECT count(*) FROM dead_letters")[0][0] == 0
        assert pg(pg_url, "SELECT count(*) FROM gaps")[0][0] == 0
    finally:
        broker.stop()


def test_kill_9_of_the_gateway_ten_times_under_load_loses_nothing(
    tmp_path: Path, procs: list[Proc], pg_url: str, mosquitto: Broker
) -> None:
    start_ingest(procs, tmp_path, mosquitto.port, pg_url, "w1")
    site = LoadSite.make(procs, tmp_path, mosquitto.port, polls_per_s=RATE)
    kills = 10
    for i in range(kills):
        gateway = site.start_gateway(procs, tmp_path, name=f"gateway-{i}")
        seen = stored_count(pg_url)
        deadline = time.monotonic() + 30
        while stored_count(pg_url) < seen + 200 and time.monotonic() < deadline:
            time.sleep(0.2)  # under load: envelopes are flowing through this gateway
        gateway.kill()
    gateway = site.start_gateway(procs, tmp_path, name="gateway-last")
    time.sleep(3)
    gateway.popen.send_signal(signal.SIGTERM)
    assert gateway.popen.wait(90) == 0, gateway.tail()
    last_pos, depth = outbox_state(site.outbox)
    assert depth == 0
    wait_stored(pg_url, last_pos, timeout_s=120)
    check_exactly_once_in_order(pg_url, last_pos)

    # duplicates arrived (sent, not yet acknowledged or deleted when killed) but none is stored;
    # at most what was in flight or acknowledged-not-yet-deleted at each kill
    ((dups,),) = pg(pg_url, "SELECT coalesce(sum(duplicates), 0) FROM workers")
    print(f"{last_pos} envelopes, {dups} duplicates removed over {kills} kills")
    assert dups <= kills * (100 + 1024)
    sessions = pg(
        pg_url, "SELECT session FROM gateways WHERE site=%s AND gateway=%s", SITE, GATEWAY
    )
    assert sessions[0][0] >= kills + 1
