"""A terminal view of what the city brain receives: subscribe to the topic tree and show the
latest reading of every point, open alarms, recent events, gateways and message rates.

It is a stand-in for the cloud side in ``cityedge demo``; the real city-brain side is
``cityedge ingest``. Pure state (:class:`BrainState`) is kept apart from drawing, and drawing
(:meth:`BrainState.render`) takes the terminal's size: every section gets a line budget, so on a
standard 80x24 terminal the readings, the open alarms and the newest events are all on screen
(nothing is cut to "…"), and a bigger terminal shows more events.

Messages on a gateway's ``state`` topic (its retained birth, its death) are not envelopes but
they are valid: they set the gateway's online/offline line; ``cmd`` requests and replies are
counted and otherwise ignored. Only what fails to decode is counted as invalid.

The view's connection is a :class:`cloud_bridge.session.MqttSession`: while the broker is away
(a restart) it reconnects with backoff and the status line says so, instead of a log line
that would run through the screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rich.console import Console, Group, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from cloud_bridge.citybrain.store import SqliteStore, StoreError, Summary
from cloud_bridge.link import LinkSettings
from cloud_bridge.session import MqttSession, SessionSettings, Subscription
from protocols import envelope as env
from protocols import session, topics
from protocols.errors import ProtocolError

# Decimals worth showing per unit: what the instruments resolve, not what float32 carries.
UNIT_DECIMALS: Final[dict[str, int]] = {
    "pH": 2,
    "°C": 1,
    "mg/L": 2,
    "NTU": 1,
    "µS/cm": 0,
    "µg/m³": 0,
    "mg/m³": 2,
    "%RH": 0,
    "%": 0,
    "percent": 0,
    "L/min": 2,
    "min": 0,
    "s": 1,
}
ALARM_ROW: Final = "bold white on red"
COLUMN_WIDTH: Final = 40  # one device's readings: point, value, unit, age
MIN_EVENT_LINES: Final = 3


def shown(value: object, unit: str | None = None) -> str:
    """A reading as a person reads it: floats rounded to what their unit resolves (3
    significant digits for a unit not in :data:`UNIT_DECIMALS`), booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    decimals = UNIT_DECIMALS.get(unit or "")
    if decimals is None:
        magnitude = math.floor(math.log10(abs(value))) if value else 0
        decimals = min(4, max(0, 2 - magnitude))
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class Event:
    """One line of the events list: an alarm raised or cleared, a device or gateway change."""

    at: str  # local HH:MM:SS of the envelope (or state message)
    what: str  # "ALARM RAISED", "ALARM CLEARED", "DEVICE", "GATEWAY"
    detail: str
    style: str = ""

    def line(self) -> str:
        return f"{self.at} {self.what} {self.detail}"


def _alarm_detail(device: str, p: env.AlarmPayload) -> str:
    """``river-sonde-1 turbidity=240.0 NTU (limit > 100)``: what crossed which limit."""
    # rules named after what they watch (device.point.direction) say nothing more: not repeated
    rule = "" if p.rule == f"{device}.{p.point}.{p.direction}" else f" [{p.rule}]"
    unit = f" {p.unit}" if p.unit else ""
    side = ">" if p.direction == "above" else "<"
    return f"{device} {p.point}={shown(p.value, p.unit)}{unit} (limit {side} {p.limit:g}){rule}"


@dataclass
class BrainState:
    latest: dict[str, dict[str, tuple[object, str | None, float]]] = field(default_factory=dict)
    alarms: dict[tuple[str, str], env.AlarmPayload] = field(default_factory=dict)
    history: deque[Event] = field(default_factory=lambda: deque(maxlen=200))
    availability: dict[str, str] = field(default_factory=dict)
    gateways: dict[tuple[str, str], session.GatewayState] = field(default_factory=dict)
    received: int = 0
    invalid: int = 0
    ingest: list[str] = field(default_factory=list)  # what the ingest stored (from its database)
    broker: str | None = None  # why the broker cannot be read now, or None
    title: str = "What the city brain receives · Ctrl-C stops everything"
    started: float = field(default_factory=time.monotonic)

    def add(self, topic: str, payload: bytes) -> str | None:
        """Take one message; returns a line worth printing (alarm, availability, gateway) or
        None."""
        self.received += 1
        try:
            t = topics.parse(topic)
            if t.kind == topics.STATE:
                return self._gateway(session.decode_state(payload))
            if t.kind == topics.COMMAND:
                return None  # requests and replies of signed commands: not for this view
            e = env.decode(payload)
        except ProtocolError:
            self.invalid += 1
            return None
        stamp = e.time.astimezone().strftime("%H:%M:%S")
        if isinstance(e, env.TelemetryEnvelope):
            points = self.latest.setdefault(e.device, {})
            for r in e.payload.readings:
                points[r.point] = (r.value, r.unit, time.monotonic())
            self.availability.setdefault(e.device, "up")
            return None
        if isinstance(e, env.AlarmEnvelope):
            p = e.payload
            key = (e.device, p.rule)
            raised = p.state is env.AlarmState.RAISED
            if raised:
                self.alarms[key] = p
            else:
                self.alarms.pop(key, None)
            event = Event(
                stamp,
                f"ALARM {p.state.value.upper()}",
                f"{p.severity.value} {_alarm_detail(e.device, p)}",
                "bold red" if raised else "green",
            )
        elif isinstance(e, env.AvailabilityEnvelope):
            p2 = e.payload
            down = p2.state is env.AvailabilityState.UNAVAILABLE
            self.availability[e.device] = "down" if down else "up"
            event = Event(
                stamp,
                "DEVICE",
                f"{e.device} {p2.state.value}: {p2.reason}",
                "bold red" if down else "green",
            )
        else:
            event = Event(stamp, e.kind.upper(), e.device)
        self.history.appendleft(event)
        return event.line()

    def _gateway(self, s: session.GatewayState) -> str | None:
        """A birth or death; an older session's message after a newer birth changes nothing."""
        key = (s.site, s.gateway)
        known = self.gateways.get(key)
        if known is not None and s.session < known.session:
            return None
        self.gateways[key] = s
        why = f": {s.reason}" if s.reason else ""
        event = Event(
            s.time.astimezone().strftime("%H:%M:%S"),
            "GATEWAY",
            f"{s.gateway} {s.state.value} (session {s.session}){why}",
            "green" if s.state is session.LinkState.ONLINE else "bold red",
        )
        self.history.appendleft(event)
        return event.line()

    def status(self) -> str:
        """The gateways' link state (from their births and deaths) and the message counts."""
        now = time.monotonic()
        gws = ", ".join(
            f"{s.gateway} {s.state.value} (session {s.session})"
            for _, s in sorted(self.gateways.items())
        )
        rate = self.received / max(now - self.started, 1e-6)
        outage = f"{self.broker}; reconnecting · " if self.broker else ""
        return (
            f"{outage}{gws or 'no gateway birth seen yet'} · {self.received} messages "
            f"({rate:.1f}/s), {self.invalid} invalid"
        )

    def render(self, width: int, height: int) -> Group:
        """The whole screen in ``height`` lines of ``width`` columns (never more)."""
        now = time.monotonic()
        in_alarm = {(dev, p.point) for (dev, _), p in self.alarms.items()}

        # fixed lines: title, alarms rule, events rule, ingest (up to 2 lines), status line
        ingest = _pack(self.ingest, width, 2) if self.ingest else ["waiting for the ingest"]
        alarm_lines = [
            Text.assemble(
                (f"{p.severity.value} ", "bold red"),
                f"{_alarm_detail(dev, p)} since {p.since.astimezone():%H:%M:%S}",
            )
            for (dev, _), p in self.alarms.items()
        ] or [Text("none")]
        fixed = 1 + 1 + 1 + len(ingest) + 1
        budget = height - fixed
        # the alarms are the point of the screen: they get their lines first, the readings
        # next (shortened to a few rows if they must be), the events what is left
        alarm_lines = alarm_lines[: max(1, budget - 2 - MIN_EVENT_LINES)]
        not_shown = len(self.alarms) - len(alarm_lines) if self.alarms else 0
        alarm_title = f"Open alarms ({len(self.alarms)}" + (
            f", {not_shown} not shown)" if not_shown else ")"
        )
        budget -= len(alarm_lines)
        readings, readings_height = self._readings(
            width, max(2, budget - MIN_EVENT_LINES), now, in_alarm
        )
        budget -= readings_height
        events = Table.grid(padding=(0, 1))
        events.add_column(no_wrap=True, min_width=8)
        events.add_column(no_wrap=True, min_width=13)
        events.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        shown_events = list(self.history)[: max(0, budget)]
        for ev in shown_events:
            events.add_row(ev.at, Text(ev.what, style=ev.style), ev.detail)
        if not shown_events:
            events.add_row("", "", "nothing yet" if budget > 0 else "")
        parts: list[RenderableType] = [
            _line(self.title, width, "reverse"),
            readings,
            Rule(Text(alarm_title), align="left", style="red"),
            *(_line(t, width) for t in alarm_lines),
            Rule(
                Text(f"Events, newest first ({len(shown_events)} of {len(self.history)})"),
                align="left",
            ),
        ]
        if shown_events or budget > 0:
            parts.append(events)
        parts += [*(_line(t, width, "dim") for t in ingest), _line(self.status(), width, "bold")]
        return Group(*parts)

    def _readings(
        self, width: int, max_height: int, now: float, in_alarm: set[tuple[str, str]]
    ) -> tuple[RenderableType, int]:
        """The devices' latest readings side by side, in at most ``max_height`` lines; what does
        not fit is cut short with a line saying how much."""
        devices = sorted(self.latest)
        if not devices:
            return Text("waiting for readings"), 1
        columns = max(1, min(len(devices), width // COLUMN_WIDTH))
        groups = [devices[i : i + columns] for i in range(0, len(devices), columns)]
        lines_each = max_height // len(groups)
        if lines_each < 2:  # not even a header and a row each: the first groups only
            groups = groups[: (max_height - 1) // 2]
            lines_each = 2
        grid = Table.grid(padding=(0, 1) if columns > 1 else 0)
        for _ in range(columns):
            grid.add_column(ratio=1)
        height = 0
        for group in groups:
            rows = min(lines_each - 1, max(len(self.latest[d]) for d in group))
            grid.add_row(*(self._device(d, rows, now, in_alarm) for d in group))
            height += rows + 1
        left = len(devices) - sum(len(g) for g in groups)
        if left:
            more = f"… {left} more devices (a bigger terminal shows them)"
            grid.add_row(Text(more, "dim", no_wrap=True, overflow="ellipsis"))
            height += 1
        return grid, height

    def _device(self, device: str, rows: int, now: float, in_alarm: set[tuple[str, str]]) -> Table:
        down = self.availability.get(device) == "down"
        points = sorted(self.latest[device].items())
        total = len(points)
        if total > rows:  # points in alarm first, then the others in order
            points.sort(key=lambda item: (device, item[0]) not in in_alarm)
            points = points[:rows]
        header = device + (" UNAVAILABLE" if down else "")
        if len(points) < total:  # cut short: the header says so
            header += f" · {len(points)} of {total} points"
        table = Table(box=None, padding=(0, 1, 0, 0), expand=True, show_edge=False)
        table.add_column(
            Text(header, style="bold red" if down else "bold"),
            no_wrap=True,
            overflow="ellipsis",
            ratio=1,
        )
        table.add_column("", justify="right", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_column("age", justify="right", no_wrap=True)
        for point, (value, unit, at) in points:
            table.add_row(
                point,
                shown(value, unit),
                unit or "",
                f"{now - at:.0f}s",
                style=ALARM_ROW if (device, point) in in_alarm else None,
            )
        return table


def _pack(parts: list[str], width: int, max_lines: int) -> list[str]:
    """Join ``parts`` with "; " into lines of at most ``width`` columns, at most ``max_lines``."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] = f"{lines[-1]}; {part}"
        else:
            lines.append(part)
    return lines[:max_lines]


def _line(text: str | Text, width: int, style: str = "") -> Text:
    t = text if isinstance(text, Text) else Text(text, style=style)
    t.no_wrap = True
    t.overflow = "ellipsis"
    t.truncate(width, overflow="ellipsis", pad=style == "reverse")
    return t


def ingest_parts(summary: Summary) -> list[str]:
    """What the ingest stored, in pieces (the live view packs them into lines)."""
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(summary.events.items())) or "nothing yet"
    gws = ", ".join(
        f"{g['gateway']} {g['state']} (session {g['session']})" for g in summary.gateways
    )
    return [
        f"ingest stored: {kinds}",
        f"{summary.duplicates} duplicates removed",
        f"{summary.dead_letters} dead letters",
        f"{len(summary.gaps)} sequence gaps",
        f"gateways: {gws or 'none yet'}",
    ]


def ingest_line(summary: Summary) -> str:
    """One line of what the ingest stored, as ``cityedge demo`` prints it."""
    return "; ".join(ingest_parts(summary))


async def watch_ingest(db: Path, state: BrainState, stop: asyncio.Event) -> None:
    """Keep ``state.ingest`` current from the ingest's SQLite database (read-only use)."""
    store: SqliteStore | None = None
    try:
        while not stop.is_set():
            await asyncio.sleep(1.0)
            if store is None and await asyncio.to_thread(db.exists):
                store = await SqliteStore.connect(db)
            if store is not None:
                with contextlib.suppress(StoreError, sqlite3.Error):
                    state.ingest = ingest_parts(await store.summary())
    finally:
        if store is not None:
            await store.close()


async def watch(
    settings: LinkSettings,
    state: BrainState,
    *,
    plain: bool,
    console: Console,
    stop: asyncio.Event,
    ingest_db: Path | None = None,
) -> None:
    """Subscribe and keep ``state`` current until ``stop``; reconnects while the broker restarts."""
    from rich.live import Live

    session = MqttSession(
        SessionSettings(
            link=settings,
            subscriptions=(Subscription(topics.SUBSCRIBE_ALL, qos=1),),
            reconnect_initial_s=0.5,
            reconnect_max_s=2.0,
            name="live view",
        ),
        stop=stop,
        logger=None,  # the status line says it: a log line would run through the screen
    )

    def screen() -> Group:
        # one line fewer than the terminal: the cursor's line, so the view never scrolls
        size = console.size
        state.broker = session.unavailable
        return state.render(size.width, max(8, size.height - 1))

    async def summary() -> None:
        while True:
            await asyncio.sleep(5)
            state.broker = session.unavailable
            parts = []
            for device, points in sorted(state.latest.items()):
                vals = ", ".join(f"{p}={shown(v, u)}" for p, (v, u, _) in sorted(points.items()))
                parts.append(f"  {device}: {vals}")
            console.print(
                f"[{time.strftime('%H:%M:%S')}] {state.status()}", highlight=False, markup=False
            )
            console.print("\n".join(parts), highlight=False, markup=False)
            if state.ingest:
                console.print("; ".join(state.ingest), highlight=False, markup=False)

    live = None if plain else Live(screen(), console=console, auto_refresh=False)
    async with asyncio.TaskGroup() as tg:
        ticker = tg.create_task(summary()) if plain else None
        ingest = tg.create_task(watch_ingest(ingest_db, state, stop)) if ingest_db else None
        if live is not None:
            live.start()

            async def refresh() -> None:
                while True:
                    live.update(screen(), refresh=True)
                    await asyncio.sleep(0.5)

            ticker = tg.create_task(refresh())
        try:
            async with session:
                async for msg in session.messages():
                    line = state.add(msg.topic, msg.payload)
                    if line and plain:
                        console.print(line, highlight=False, markup=False)
        finally:
            if ticker is not None:
                ticker.cancel()
            if ingest is not None:
                ingest.cancel()
            if live is not None:
                live.stop()
