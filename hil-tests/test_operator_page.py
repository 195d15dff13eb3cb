"""The operator's page in headless Chromium, served by the real ``cityedge ingest`` process with
the real mosquitto: sign-in before anything; gateways, alarms, dead letters, gaps and a point's
chart show what was published (PostgreSQL); and with the real gateway process (SQLite): a raised
alarm is on the page within 2 s of the subscriber receiving it, and a gateway killed with -9 is
offline within its keepalive."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from bridge_hil import wait_log
from hil import Subscriber, http_json, start_gateway, start_simulator
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Browser, Page, sync_playwright

from cloud_bridge.citybrain.operator.auth import write_account
from protocols import envelope as env
from protocols import topics
from protocols.ids import Uuid7Generator
from protocols.session import GatewayState, LinkState, OutboxClassStats, OutboxStats, encode_state
from sim.localsite import Broker, Proc, cityedge_argv, free_port, start, wait_port

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "operator password 1"
SITE = "hil"
IDS = Uuid7Generator()


@dataclass
class OperatorSite:
    url: str
    ingest: Proc


def start_ingest_with_page(
    procs: list[Proc], workdir: Path, broker_port: int, db: str, *extra: str
) -> OperatorSite:
    accounts = workdir / "operators"
    write_account(accounts, "ops", PASSWORD)
    port = free_port()
    proc = start(
        "ingest-operator",
        cityedge_argv(
            "ingest",
            "--broker",
            f"127.0.0.1:{broker_port}",
            "--db",
            db,
            "--worker",
            "w1",
            "--operator-listen",
            f"127.0.0.1:{port}",
            "--operator-accounts",
            str(accounts),
            *extra,
        ),
        workdir,
    )
    procs.append(proc)
    wait_port(port, proc=proc, timeout_s=30)
    wait_log(proc, "subscribed to")
    return OperatorSite(f"http://127.0.0.1:{port}/", proc)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def sign_in(page: Page, url: str, password: str = PASSWORD) -> None:
    page.goto(url + "login")
    page.fill("#name", "ops")
    page.fill("#password", password)
    page.click("#sign-in")


def publish(port: int, messages: list[tuple[str, bytes, bool]]) -> None:
    """Publish at QoS 1 and wait for every acknowledgement (a stand-in gateway)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"stand-in-{time.monotonic_ns()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload, retain in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def state(
    gw: str, s: LinkState, session: int, box: OutboxStats | None = None, reason: str = ""
) -> tuple[str, bytes, bool]:
    msg = GatewayState(
        state=s,
        site=SITE,
        gateway=gw,
        session=session,
        time=datetime.now(UTC),
        outbox=box,
        reason=reason,
    )
    return topics.state_topic(SITE, gw), encode_state(msg), True


def data(
    e: env.EnvelopeModel, session: int, seq: int, topic: str | None = None
) -> tuple[str, bytes, bool]:
    e = e.model_copy(update={"link": env.LinkInfo(session=session, seq=seq, pos=seq)})
    return topic or topics.data_topic(e.site, e.gateway, e.kind, e.device), env.encode(e), False


def telemetry(gw: str, device: str, t: datetime, **values: float) -> env.TelemetryEnvelope:
    return env.TelemetryEnvelope(
        id=IDS.new(int(t.timestamp() * 1000)),
        site=SITE,
        gateway=gw,
        device=device,
        time=t,
        payload=env.TelemetryPayload(
            readings=[env.PointValue(point=k, value=v, unit="mg/L") for k, v in values.items()]
        ),
    )


def alarm(
    gw: str, rule: str, st: str, severity: str, t: datetime, value: float
) -> env.AlarmEnvelope:
    return env.AlarmEnvelope(
        id=IDS.new(int(t.timestamp() * 1000)),
        site=SITE,
        gateway=gw,
        device="sonde",
        time=t,
        payload=env.AlarmPayload(
            rule=rule,
            point="do",
            state=env.AlarmState(st),
            severity=env.Severity(severity),
            value=value,
            limit=4.0,
            direction="below",
            unit="mg/L",
            since=t,
        ),
    )


def outbox(depth: int, dropped: int) -> OutboxStats:
    return OutboxStats(
        depth=depth,
        bytes=depth * 300,
        budget_bytes=64 * 2**20,
        dropped=dropped,
        last_pos=depth + dropped,
        classes={
            "telemetry": OutboxClassStats(depth=depth, bytes=depth * 300, dropped=dropped),
            "event": OutboxClassStats(depth=0, bytes=0, dropped=0),
        },
    )


def cells(page: Page, selector: str) -> list[str]:
    return [c.strip() for c in page.locator(f"{selector} td").all_inner_texts()]


def test_sign_in_first_then_every_section_shows_what_was_published(
    tmp_path: Path, procs: list[Proc], mosquitto: Broker, pg_url: str, browser: Browser
) -> None:
    site = start_ingest_with_page(procs, tmp_path, mosquitto.port, pg_url)
    now = datetime.now(UTC).replace(microsecond=0)
    values = [6.5, 5.0, 3.5, 4.5]
    msgs = [
        state("gw-a", LinkState.ONLINE, 3, outbox(12, 4)),
        state("gw-b", LinkState.ONLINE, 1, outbox(0, 0)),
    ]
    msgs += [
        data(telemetry("gw-a", "sonde", now - timedelta(minutes=40 - 10 * i), do=v), 3, i + 1)
        for i, v in enumerate(values)
    ]
    msgs += [
        data(alarm("gw-a", "do-low", "raised", "major", now - timedelta(minutes=20), 3.5), 3, 5),
        data(alarm("gw-a", "do-low", "cleared", "major", now - timedelta(minutes=10), 4.5), 3, 6),
        data(
            alarm("gw-a", "do-very-low", "raised", "critical", now - timedelta(minutes=5), 1.0),
            3,
            7,
        ),
    ]
    # gw-b: seq 2 comes on another kind's topic (a dead letter), then the connection is lost
    stray = telemetry("gw-b", "pump", now, do=1.0)
    msgs += [data(telemetry("gw-b", "pump", now, do=1.0), 1, 1)]
    msgs += [data(stray, 1, 2, topic=topics.data_topic(SITE, "gw-b", "alarm", "pump"))]
    msgs += [data(telemetry("gw-b", "pump", now, do=2.0), 1, 3)]
    msgs += [state("gw-b", LinkState.OFFLINE, 1, reason="connection lost")]

    page = browser.new_page(viewport={"width": 1280, "height": 2400})
    # nothing before sign-in: the page sends to the sign-in form; the API and the stream say 401
    page.goto(site.url)
    assert page.url == site.url + "login"
    for path in (
        "api/gateways",
        "api/alarms/open",
        "api/series?site=hil&gateway=gw-a&device=sonde&point=do",
    ):
        resp = page.goto(site.url + path)
        assert resp is not None and resp.status == 401, path
    page.goto(site.url + "login")
    assert page.evaluate("fetch('/events').then(r => r.status)") == 401
    sign_in(page, site.url, "not the password")
    assert page.url == site.url + "login"
    assert "Wrong name or password" in page.inner_text("#message")

    sign_in(page, site.url)
    assert page.url == site.url
    page.wait_for_selector("#live[data-state='live']")  # after /api/me filled in who is signed in
    assert page.inner_text("#who") == "ops"
    publish(mosquitto.port, msgs)  # while the page is open: it must update by itself

    page.wait_for_selector(
        "#gateways tr[data-key='hil/gw-b'][data-state='offline']", timeout=15_000
    )
    page.wait_for_selector("#gaps tr[data-key='hil/gw-b/1']", timeout=20_000)  # the gap check: 5 s
    page.wait_for_selector("#alarms tr[data-severity='critical']", timeout=10_000)
    page.wait_for_selector("#dead tbody tr", timeout=10_000)

    assert cells(page, "#gateways tr[data-key='hil/gw-a']")[:2] == ["hil/gw-a", "在线 online"]
    a = cells(page, "#gateways tr[data-key='hil/gw-a']")
    assert (a[3], a[4], a[5]) == ("3", "12", "4")  # session, outbox depth and drops from the birth
    b = cells(page, "#gateways tr[data-key='hil/gw-b']")
    assert (b[1], b[3], b[4], b[5], b[6]) == ("离线 offline", "1", "0", "0", "connection lost")
    assert page.locator("#gateways tbody tr").first.get_attribute("data-key") == "hil/gw-b"
    assert page.inner_text("#n-online") == "1" and page.inner_text("#n-offline") == "1"

    (open_alarm,) = page.locator("#alarms tbody tr").all()
    texts = [t.strip() for t in open_alarm.locator("td").all_inner_texts()]
    assert texts[:6] == ["严重 critical", "hil/gw-a", "sonde", "do-very-low", "do", "1 / 4 mg/L"]
    assert texts[6] in ("5 min", "4 min", "6 min")  # its age
    history = page.locator("#history tbody tr")
    assert [r.get_attribute("data-state") for r in history.all()] == ["raised", "cleared", "raised"]

    dead = cells(page, "#dead tbody tr")
    assert dead[1] == "cityedge/v1/hil/gw-b/alarm/pump"
    assert dead[2] == "envelope is hil/gw-b/telemetry/pump but came on hil/gw-b/alarm/pump"
    assert dead[4].startswith('{"id":')

    gap = cells(page, "#gaps tr[data-key='hil/gw-b/1']")
    assert gap[:3] == ["hil/gw-b", "1", "1 / 3"]
    assert (
        gap[3]
        == "1 \u00d7 死信 dead letter: envelope is hil/gw-b/telemetry/pump but came on hil/gw-b/alarm/pump"
    )
    assert gap[4].endswith("connection lost")

    # a point's chart: pick the gateway (its points are offered), then the device and point
    page.click("#gateways tr[data-key='hil/gw-a']")
    page.wait_for_function("document.getElementById('c-gateway').value === 'gw-a'")
    page.wait_for_selector("#c-devices option[value='sonde']", state="attached")
    page.fill("#c-device", "sonde")
    page.fill("#c-point", "do")
    page.click("#chart-form button[type='submit']")
    page.wait_for_selector("#chart[data-point='hil/gw-a/sonde/do'] circle.pt")
    shown = [
        (c.get_attribute("data-t"), float(c.get_attribute("data-v") or "nan"))
        for c in page.locator("#chart circle.pt").all()
    ]
    assert [v for _, v in shown] == values
    times = [datetime.fromisoformat(t or "") for t, _ in shown]
    for t, i in zip(times, range(4), strict=True):  # each in its 12 s bucket of the hour
        assert timedelta(0) <= now - timedelta(minutes=40 - 10 * i) - t < timedelta(seconds=12)
    assert page.text_content("#chart .ymax") == "6.5" and page.text_content("#chart .ymin") == "3.5"
    page.screenshot(path=str(tmp_path / "operator-page.png"), full_page=True)

    # sign out: the page and its data are gone
    page.click("#logout")
    page.wait_for_url(site.url + "login")
    resp = page.goto(site.url + "api/gateways")
    assert resp is not None and resp.status == 401


def air_site_yaml(air_port: int, mqtt_port: int, http_port: int, keepalive_s: int) -> str:
    return f"""
site: {SITE}
gateway: gw-air
http: {{port: {http_port}}}
shutdown_flush_s: 5
sources:
  - type: modbus
    name: air
    host: 127.0.0.1
    port: {air_port}
    timeout_s: 0.4
    devices: [{{name: air-station, profile: air-station, poll_interval_s: 0.5}}]
apps:
  - type: thresholds
    name: limits
    rules:
      - {{device: air-station, point: pm2_5, above: 75, severity: major, hysteresis: 5, min_duration_s: 1}}
sinks:
  - {{type: mqtt, name: brain, host: 127.0.0.1, port: {mqtt_port}, keepalive_s: {keepalive_s}, reconnect_max_s: 1}}
"""


def wall_ms(sub: Subscriber, kind: str) -> float:
    """When the subscriber received the first message of ``kind`` (wall clock, ms)."""
    offset = time.time() - time.monotonic()
    return (sub.of(kind)[0].at + offset) * 1000


def test_a_raised_alarm_within_2_s_and_a_killed_gateway_offline_within_its_keepalive(
    tmp_path: Path, procs: list[Proc], mosquitto: Broker, browser: Browser
) -> None:
    keepalive_s = 5
    p = {k: free_port() for k in ("air", "air_ctl", "http")}
    start_simulator(procs, tmp_path, "air-station", p["air"], p["air_ctl"])
    site = start_ingest_with_page(procs, tmp_path, mosquitto.port, str(tmp_path / "ingest.db"))
    config = tmp_path / "site.yaml"
    config.write_text(air_site_yaml(p["air"], mosquitto.port, p["http"], keepalive_s))
    sub = Subscriber(mosquitto.port, filter=f"{topics.ROOT}/{SITE}/+/alarm/#")
    try:
        gateway = start_gateway(procs, tmp_path, config, p["http"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        sign_in(page, site.url)
        page.wait_for_selector("#live[data-state='live']")
        page.wait_for_selector(
            "#gateways tr[data-key='hil/gw-air'][data-state='online']", timeout=30_000
        )
        assert page.locator("#alarms tbody tr").count() == 0

        http_json(
            f"http://127.0.0.1:{p['air_ctl']}/spike",
            "POST",
            {"point": "pm2_5", "value": 150, "duration_s": 30},
        )
        row = "#alarms tr[data-key='hil/gw-air/air-station/air-station.pm2_5.above']"
        page.wait_for_selector(row, timeout=20_000)
        shown_ms = float(page.get_attribute(row, "data-shown-at") or "nan")
        received = datetime.fromisoformat(page.get_attribute(row, "data-received-at") or "")
        sub.wait_for(lambda: len(sub.of("alarm")) >= 1, 5, "the subscriber to receive the alarm")
        heard_ms = wall_ms(sub, "alarm")
        assert cells(page, row)[:2] == ["主要 major", "hil/gw-air"]
        assert cells(page, row)[5] == "150 / 75 µg/m³"

        gateway.kill()
        killed_ms = time.time() * 1000
        offline = "#gateways tr[data-key='hil/gw-air'][data-state='offline']"
        page.wait_for_selector(offline, timeout=3 * keepalive_s * 1000)
        offline_ms = float(page.get_attribute(offline, "data-state-shown-at") or "nan")
        assert cells(page, offline)[1] == "离线 offline"
        page.screenshot(path=str(tmp_path / "operator-alarm.png"), full_page=True)
    finally:
        sub.close()
    after_ingest = shown_ms - received.timestamp() * 1000
    after_subscriber = shown_ms - heard_ms
    print(
        f"\nalarm on the page {after_ingest:.0f} ms after the ingest stored it, "
        f"{after_subscriber:.0f} ms after another subscriber received it; "
        f"gateway offline on the page {offline_ms - killed_ms:.0f} ms after kill -9"
    )
    assert -50 < after_ingest < 2000, after_ingest
    assert after_subscriber < 2000, after_subscriber
    assert 0 < offline_ms - killed_ms < keepalive_s * 1000
