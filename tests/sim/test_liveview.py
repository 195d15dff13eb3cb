"""The demo's live view: what it counts as invalid, how it rounds, and that a screen of any size
shows the open alarms and the newest events without running past its last line; against the
real mosquitto, that it reads the tree, stops at once, and says when the broker is away."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from datetime import UTC, datetime

import pytest
from rich.console import Console
from rich.segment import Segment
from rich.style import Style

from cloud_bridge.link import LinkSettings, MqttLink
from protocols import envelope as env
from protocols import session
from sim.liveview import ALARM_ROW, MIN_EVENT_LINES, BrainState, shown, watch
from sim.localsite import Broker, free_port

NOW = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
PREFIX = "cityedge/v1/demo-city/gw-demo-01"
Values = list[tuple[str, bool | int | float, str | None]]
WATER: Values = [
    ("temperature", 18.334, "°C"),
    ("ph", 7.50671, "pH"),
    ("dissolved_oxygen", 8.0912, "mg/L"),
    ("turbidity", 240.0, "NTU"),
    ("conductivity", 458, "µS/cm"),
    ("window_fouled", False, None),
    ("wiper_running", False, None),
    ("wiper_interval_min", 30, "min"),
]
AIR: Values = [
    ("pm2_5", 118.0, "µg/m³"),
    ("pm10", 63.0, "µg/m³"),
    ("no2", 47.26, "µg/m³"),
    ("so2", 11.55, "µg/m³"),
    ("o3", 84.3, "µg/m³"),
    ("co", 0.843, "mg/m³"),
    ("temperature", 21.5, "°C"),
    ("humidity", 57.0, "%RH"),
    ("sample_flow", 16.71, "L/min"),
]


def telemetry(device: str, values: Values) -> bytes:
    readings = [env.PointValue(point=p, value=v, unit=u) for p, v, u in values]
    e = env.TelemetryEnvelope(
        id=uuid.uuid4(),
        site="demo-city",
        gateway="gw-demo-01",
        device=device,
        time=NOW,
        payload=env.TelemetryPayload(readings=readings),
    )
    return env.encode(e)


def alarm(device: str, point: str, value: float, limit: float, unit: str, *, raised: bool) -> bytes:
    payload = env.AlarmPayload(
        rule=f"{device}.{point}.above",
        point=point,
        state=env.AlarmState.RAISED if raised else env.AlarmState.CLEARED,
        severity=env.Severity.WARNING,
        value=value,
        limit=limit,
        direction="above",
        unit=unit,
        since=NOW,
    )
    e = env.AlarmEnvelope(
        id=uuid.uuid4(),
        site="demo-city",
        gateway="gw-demo-01",
        device=device,
        time=NOW,
        payload=payload,
    )
    return env.encode(e)


def birth(session_no: int, state: str = "online") -> bytes:
    return session.encode_state(
        session.GatewayState(
            state=session.LinkState(state),
            site="demo-city",
            gateway="gw-demo-01",
            session=session_no,
            time=NOW,
            reason="" if state == "online" else "shutdown",
        )
    )


def demo_state(events: int = 6) -> BrainState:
    """What the demo's view holds a few minutes in: both devices, three open alarms."""
    st = BrainState(title="cityedge demo · Ctrl-C stops everything")
    st.add(f"{PREFIX}/state", birth(1))
    st.add(f"{PREFIX}/telemetry/river-sonde-1", telemetry("river-sonde-1", WATER))
    st.add(f"{PREFIX}/telemetry/air-station-1", telemetry("air-station-1", AIR))
    for _ in range(events):
        st.add(
            f"{PREFIX}/alarm/river-sonde-1",
            alarm("river-sonde-1", "turbidity", 240.0, 100, "NTU", raised=True),
        )
        st.add(
            f"{PREFIX}/alarm/river-sonde-1",
            alarm("river-sonde-1", "turbidity", 15.5216, 100, "NTU", raised=False),
        )
    for device, point, value, limit, unit in (
        ("river-sonde-1", "turbidity", 240.0, 100, "NTU"),
        ("river-sonde-1", "ph", 9.4, 9, "pH"),
        ("air-station-1", "pm2_5", 118.0, 75, "µg/m³"),
    ):
        st.add(f"{PREFIX}/alarm/{device}", alarm(device, point, value, limit, unit, raised=True))
    st.ingest = ["ingest stored: alarm 15, telemetry 2", "0 duplicates removed"]
    return st


def screen(state: BrainState, width: int, height: int) -> list[list[Segment]]:
    console = Console(
        width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="standard"
    )
    return console.render_lines(state.render(width, height), console.options, pad=False)


def text(line: list[Segment]) -> str:
    return "".join(s.text for s in line).rstrip()


def test_birth_death_and_commands_are_valid_only_garbage_is_invalid() -> None:
    st = BrainState()
    assert st.add(f"{PREFIX}/state", birth(1)) == "08:30:00 GATEWAY gw-demo-01 online (session 1)"
    st.add(f"{PREFIX}/cmd/res", b'{"anything": "a command reply"}')
    assert st.invalid == 0
    assert "gw-demo-01 online (session 1)" in st.status()
    assert st.status().endswith(", 0 invalid")
    st.add(f"{PREFIX}/telemetry/river-sonde-1", b"not json")
    st.add(f"{PREFIX}/state", b'{"state": "sleeping"}')
    assert st.invalid == 2
    assert st.status().endswith("2 invalid")


def test_an_older_sessions_death_after_a_newer_birth_changes_nothing() -> None:
    st = BrainState()
    st.add(f"{PREFIX}/state", birth(2))
    assert st.add(f"{PREFIX}/state", birth(1, "offline")) is None
    assert "gw-demo-01 online (session 2)" in st.status()
    st.add(f"{PREFIX}/state", birth(2, "offline"))
    assert "gw-demo-01 offline (session 2)" in st.status()


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (7.50671, "pH", "7.51"),
        (240.0, "NTU", "240.0"),
        (15.5216, "NTU", "15.5"),
        (458, "µS/cm", "458"),
        (118.4, "µg/m³", "118"),
        (0.843, "mg/m³", "0.84"),
        (18.334, "°C", "18.3"),
        (57.04, "%RH", "57"),
        (0.012345, None, "0.0123"),
        (7.50671, "furlongs", "7.51"),
        (1234.4, None, "1234"),
        (0.0, None, "0.00"),
        (True, None, "yes"),
        (30, "min", "30"),
    ],
)
def test_values_are_rounded_to_what_their_unit_resolves(
    value: object, unit: str | None, text: str
) -> None:
    assert shown(value, unit) == text


def test_an_alarm_line_names_the_rounded_value_and_the_limit() -> None:
    st = BrainState()
    line = st.add(
        f"{PREFIX}/alarm/river-sonde-1",
        alarm("river-sonde-1", "turbidity", 15.5216, 100, "NTU", raised=False),
    )
    assert line == ("08:30:00 ALARM CLEARED warning river-sonde-1 turbidity=15.5 NTU (limit > 100)")


def test_80x24_shows_every_point_open_alarm_and_the_newest_events() -> None:
    st = demo_state()
    # the view draws one line less than the terminal (the cursor's line)
    lines = screen(st, 80, 23)
    texts = [text(line) for line in lines]
    assert len(lines) <= 23, "\n".join(texts)
    body = "\n".join(texts)
    for point, _, _ in WATER + AIR:
        assert point in body
    assert "7.51" in body and "7.50671" not in body
    assert any(t.startswith("Open alarms (3)") for t in texts), body
    for detail in (
        "river-sonde-1 turbidity=240.0 NTU (limit > 100)",
        "river-sonde-1 ph=9.40 pH (limit > 9)",
        "air-station-1 pm2_5=118 µg/m³ (limit > 75)",
    ):
        assert any(detail in t and not t.endswith("…") for t in texts), (detail, body)
    events = [t for t in texts if " ALARM " in t]
    assert len(events) >= MIN_EVENT_LINES, body
    assert "Events, newest first" in body
    assert texts[-1].startswith("gw-demo-01 online (session 1)")
    assert texts[-1].endswith("0 invalid")


def test_the_rows_in_alarm_are_highlighted_and_no_other() -> None:
    st = demo_state()
    lines = screen(st, 80, 23)
    in_alarm = {"turbidity", "ph", "pm2_5"}
    seen = set()
    for line in lines[1:11]:  # the readings, two devices side by side
        for seg in line:
            word = seg.text.strip()
            if word in {p for p, _, _ in WATER + AIR}:
                style = seg.style or Style()
                assert (style == Style.parse(ALARM_ROW)) == (word in in_alarm), (word, style)
                if word in in_alarm:
                    seen.add(word)
    assert seen == in_alarm


def test_a_bigger_terminal_shows_more_events() -> None:
    st = demo_state(events=20)
    small = [text(line) for line in screen(st, 80, 23)]
    big = [text(line) for line in screen(st, 160, 50)]
    assert len(big) <= 50
    assert sum(" ALARM " in t for t in big) > sum(" ALARM " in t for t in small)


@pytest.mark.parametrize(("width", "height"), [(80, 23), (60, 14), (40, 10), (100, 30), (200, 60)])
def test_the_screen_never_runs_past_the_terminal(width: int, height: int) -> None:
    st = demo_state(events=30)
    lines = screen(st, width, height)
    texts = [text(line) for line in lines]
    assert len(lines) <= height, "\n".join(texts)
    assert all(Segment.get_line_length(line) <= width for line in lines)
    body = "\n".join(texts)
    assert "Open alarms (3" in body
    # points or devices left out are said to be left out
    missing = [p for p, _, _ in WATER + AIR if not re.search(rf"(^|\s){p}\s", body)]
    if missing:
        assert re.search(r" \d of [89] points|more devices", body), (missing, body)


async def test_the_view_reads_the_tree_and_stops_at_once(mosquitto: Broker) -> None:
    state, stop = BrainState(), asyncio.Event()
    console = Console(file=io.StringIO(), width=80, height=24)
    view = asyncio.create_task(
        watch(
            LinkSettings("127.0.0.1", mosquitto.port, client_id="view"),
            state,
            plain=True,
            console=console,
            stop=stop,
        )
    )
    async with MqttLink.open(LinkSettings("127.0.0.1", mosquitto.port, client_id="gw")) as gw:
        async with asyncio.timeout(10):
            while not state.gateways:  # until the view has subscribed
                await gw.publish(f"{PREFIX}/state", birth(1))
                await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(view, 3)
    assert "gw-demo-01 online (session 1)" in console.file.getvalue()  # type: ignore[attr-defined]


async def test_the_status_line_says_when_the_broker_is_away() -> None:
    state, stop, port = BrainState(), asyncio.Event(), free_port()
    console = Console(file=io.StringIO(), width=80, height=24, force_terminal=True)
    view = asyncio.create_task(
        watch(
            LinkSettings("127.0.0.1", port, client_id="view"),
            state,
            plain=False,
            console=console,
            stop=stop,
        )
    )
    async with asyncio.timeout(10):
        while state.broker is None:  # noqa: ASYNC110 - the screen's refresh sets it
            await asyncio.sleep(0.1)
    assert state.status().startswith(f"broker 127.0.0.1:{port} unavailable: cannot connect")
    assert "; reconnecting · no gateway birth seen yet" in state.status()
    stop.set()
    await asyncio.wait_for(view, 3)
