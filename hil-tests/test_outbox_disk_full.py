"""The outbox's disk fills up for 60 s under 200 envelopes/s: the real gateway process, the real
mosquitto and ingest (PostgreSQL), the outbox on a small tmpfs filled by another file.

Nothing accepted may be lost uncounted: every envelope made gets a position, and every position
is either stored by the ingest or counted as dropped (telemetry only, oldest first; events never).
``/healthz`` says degraded while the disk is full; delivery resumes without a restart once the
filler is deleted."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_hil import (
    GATEWAY,
    SITE,
    LoadSite,
    outbox_state,
    pg,
    start_ingest,
    stored_count,
    wait_stored,
)
from hil import http_text
from prometheus_client.parser import text_string_to_metric_families

from sim.localsite import Broker, Proc

# loads the machine (a fleet, a flood, or timing under load): with make test's two workers, these
# run one after the other on one worker, never beside each other
pytestmark = pytest.mark.xdist_group("heavy")

RATE = 200  # envelopes per second offered
FULL_S = 60  # how long the disk stays full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs for the outbox, unmounted at the end whatever happens."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            "this test fills a small disk of its own and needs to mount a tmpfs for it, which "
            f"failed ({done.stderr.strip() or done.returncode}): run it as root, or in a "
            "container allowed to mount (CAP_SYS_ADMIN)"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the disk is full; returns its size."""
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:  # the last partial chunk
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return path.stat().st_size


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http_text(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> int:
    want = set(labels.items())
    return int(sum(v for (n, lab), v in m.items() if n == name and want <= set(lab)))


def health(port: int) -> dict[str, object]:
    status, body = http_text(f"http://127.0.0.1:{port}/healthz")
    assert status == 200, body
    out: dict[str, object] = json.loads(body)
    return out


def outbox_dropped(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT key, value FROM meta WHERE key LIKE 'dropped.%'").fetchall()
    finally:
        db.close()
    return {str(k).removeprefix("dropped."): int(v) for k, v in rows}


@pytest.mark.timeout(400)
def test_a_full_outbox_disk_for_60_s_loses_nothing_uncounted_and_recovers(
    tmp_path: Path, procs: list[Proc], pg_url: str, mosquitto: Broker, small_disk: Path
) -> None:
    ingest = start_ingest(procs, tmp_path, mosquitto.port, pg_url, "w1")
    site = LoadSite.make(
        procs,
        tmp_path,
        mosquitto.port,
        polls_per_s=RATE,
        outbox=small_disk / "outbox.db",
        outbox_extra=", wal_limit_bytes: 1048576",  # and a reserve of as much
    )
    sims = [p for p in procs if p.name.startswith("sim-")]
    gateway = site.start_gateway(procs, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while stored_count(pg_url) < 500 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health(site.http_port)["status"] == "ok"

        # The city brain goes away: the gateway keeps everything in its outbox...
        ingest.stop()
        time.sleep(3)
        # ...and another program fills the disk the outbox is on.
        filler = small_disk / "filler"
        filled = fill(filler)
        seen: list[dict[str, object]] = []
        disk_full_metric = 0.0
        full_until = time.monotonic() + FULL_S
        while time.monotonic() < full_until:
            time.sleep(2)
            seen.append(health(site.http_port))
            m = metrics(site.http_port)
            disk_full_metric = max(
                disk_full_metric, m.get(("cityedge_outbox_disk_full", (("sink", "brain"),)), 0.0)
            )
            assert gateway.alive(), gateway.tail()
        degraded = [h for h in seen if h["status"] == "degraded"]
        assert degraded, seen[-1]
        reasons = [r for h in degraded for r in h["reasons"]]  # type: ignore[attr-defined]
        assert any("outbox disk full" in r for r in reasons), reasons
        assert disk_full_metric == 1.0
        dropped_while_full = outbox_dropped(site.outbox).get("telemetry", 0)

        # Room again, and the city brain is back: delivery resumes, no restart.
        filler.unlink()
        start_ingest(procs, tmp_path, mosquitto.port, pg_url, "w1")  # its session resumes
        deadline = time.monotonic() + 30
        while health(site.http_port)["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.5)
        final = health(site.http_port)
        assert final["status"] == "ok", final

        # Stop making envelopes, let everything drain, then count.
        for sim in sims:
            sim.stop()
        last_made, steady_since = -1, time.monotonic()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            made = total(metrics(site.http_port), "cityedge_events_total")
            if made != last_made:
                last_made, steady_since = made, time.monotonic()
            if time.monotonic() - steady_since > 8 and outbox_state(site.outbox)[1] == 0:
                break
            time.sleep(0.5)
        m = metrics(site.http_port)
        made = total(m, "cityedge_events_total")
        channel_dropped = total(m, "cityedge_channel_dropped_total")
        sink_dropped = {
            c: total(m, "cityedge_sink_dropped_total", sink="brain", **{"class": c})
            for c in ("telemetry", "event")
        }
        crashes = total(m, "cityedge_plugin_crashes_total")

        gateway.popen.send_signal(signal.SIGTERM)
        assert gateway.popen.wait(60) == 0, gateway.tail()
    finally:
        gateway.stop()  # before the disk goes

    last_pos, depth = outbox_state(site.outbox)
    dropped = outbox_dropped(site.outbox)
    wait_stored(pg_url, last_pos - sum(dropped.values()), timeout_s=60)
    stored, ids, positions = pg(
        pg_url,
        "SELECT count(*), count(DISTINCT id), count(DISTINCT pos) FROM events "
        "WHERE site=%s AND gateway=%s",
        SITE,
        GATEWAY,
    )[0]
    print(
        f"filler {filled} bytes; made {made}, positions {last_pos}, stored {stored}, "
        f"dropped {dropped} ({dropped_while_full} while full), channel drops {channel_dropped}"
    )
    assert depth == 0
    assert made == last_pos + channel_dropped  # every envelope made was accepted, or counted
    assert stored == ids == positions  # no duplicate stored
    assert stored + dropped.get("telemetry", 0) + dropped.get("event", 0) == last_pos
    assert dropped.get("event", 0) == 0  # alarms and events are kept
    assert dropped_while_full > 0  # the disk really was full: the policy had to drop
    assert sink_dropped == {"telemetry": dropped.get("telemetry", 0), "event": 0}
    assert crashes == 0  # it never failed: no restart was needed
    assert "Traceback" not in gateway.log_path.read_text()
