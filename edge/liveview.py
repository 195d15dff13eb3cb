"""A terminal view of what the city brain receives: subscribe to the topic tree and show the
latest reading of every point, open alarms, device availability and message rates.

It is a stand-in for the cloud side in ``cityedge demo``; the real city-brain side is
``cityedge ingest``. Pure state (:class:`BrainState`) is kept apart from drawing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from cloud_bridge.link import LinkError, LinkSettings, MqttLink
from cloud_bridge.store import SqliteStore, StoreError, Summary
from protocols import envelope as env
from protocols import topics
from protocols.errors import ProtocolError


@dataclass
class BrainState:
    latest: dict[str, dict[str, tuple[object, str | None, float]]] = field(default_factory=dict)
    alarms: dict[tuple[str, str], env.AlarmPayload] = field(default_factory=dict)
    history: deque[str] = field(default_factory=lambda: deque(maxlen=12))
    availability: dict[str, str] = field(default_factory=dict)
    received: int = 0
    invalid: int = 0
    ingest: str = ""  # the ingest's view: what it stored, duplicates, gateways (from its database)
    started: float = field(default_factory=time.monotonic)

    def add(self, topic: str, payload: bytes) -> str | None:
        """Take one message; returns a line worth printing (alarm, availability) or None."""
        self.received += 1
        try:
            topics.parse(topic)
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
            if p.state is env.AlarmState.RAISED:
                self.alarms[key] = p
            else:
                self.alarms.pop(key, None)
            line = (
                f"{stamp} ALARM {p.state.value.upper()} {p.severity.value} {e.device} {p.rule}: "
                f"{p.point}={p.value:g} {p.unit or ''} (limit {p.direction} {p.limit:g})"
            )
        elif isinstance(e, env.AvailabilityEnvelope):
            p2 = e.payload
            self.availability[e.device] = (
                "down" if p2.state is env.AvailabilityState.UNAVAILABLE else "up"
            )
            line = f"{stamp} DEVICE {e.device} {p2.state.value}: {p2.reason}"
        else:  # pragma: no cover - every kind is handled above
            return None
        self.history.appendleft(line)
        return line

    def render(self) -> Group:
        readings = Table(title="Latest readings at the city brain", expand=True)
        for col in ("device", "point", "value", "unit", "age s"):
            readings.add_column(col)
        now = time.monotonic()
        for device in sorted(self.latest):
            state = self.availability.get(device, "?")
            for point, (value, unit, at) in sorted(self.latest[device].items()):
                shown = f"{value:.3f}" if isinstance(value, float) else str(value)
                name = device if state == "up" else f"{device} [red](unavailable)[/]"
                readings.add_row(name, point, shown, unit or "", f"{now - at:.0f}")
        alarms = (
            "\n".join(
                f"[bold red]{p.severity.value}[/] {dev} {rule}: "
                f"{p.point}={p.value:g} {p.unit or ''}"
                for (dev, rule), p in self.alarms.items()
            )
            or "none"
        )
        rate = self.received / max(now - self.started, 1e-6)
        footer = (
            f"{self.received} messages ({rate:.1f}/s), {self.invalid} invalid. "
            "Ctrl-C stops everything."
        )
        return Group(
            readings,
            Panel(alarms, title="Open alarms"),
            Panel("\n".join(self.history) or "nothing yet", title="Events"),
            Panel(self.ingest or "waiting for the ingest", title="City-brain ingest (stored)"),
            footer,
        )


def ingest_line(summary: Summary) -> str:
    """One line of what the ingest stored, as ``cityedge demo`` prints it."""
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(summary.events.items())) or "nothing yet"
    gws = ", ".join(
        f"{g['gateway']} {g['state']} (session {g['session']})" for g in summary.gateways
    )
    return (
        f"ingest stored: {kinds}; {summary.duplicates} duplicates removed, "
        f"{summary.dead_letters} dead letters, {len(summary.gaps)} sequence gaps; "
        f"gateways: {gws or 'none yet'}"
    )


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
                    state.ingest = ingest_line(await store.summary())
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

    async def consume(link: MqttLink) -> None:
        async for msg in link.messages():
            line = state.add(msg.topic, msg.payload)
            if line and plain:
                console.print(line, highlight=False)

    async def summary() -> None:
        while True:
            await asyncio.sleep(5)
            parts = []
            for device, points in sorted(state.latest.items()):
                vals = ", ".join(
                    f"{p}={v:.2f}" if isinstance(v, float) else f"{p}={v}"
                    for p, (v, _, _) in sorted(points.items())
                )
                parts.append(f"  {device}: {vals}")
            console.print(
                f"[{time.strftime('%H:%M:%S')}] {state.received} messages received", highlight=False
            )
            console.print("\n".join(parts), highlight=False)
            if state.ingest:
                console.print(state.ingest, highlight=False)

    live = None if plain else Live(state.render(), console=console, refresh_per_second=2)
    async with asyncio.TaskGroup() as tg:
        ticker = tg.create_task(summary()) if plain else None
        ingest = tg.create_task(watch_ingest(ingest_db, state, stop)) if ingest_db else None
        if live is not None:
            live.start()

            async def refresh() -> None:
                while True:
                    live.update(state.render())
                    await asyncio.sleep(0.5)

            ticker = tg.create_task(refresh())
        try:
            while not stop.is_set():
                try:
                    link = await MqttLink.open(settings)
                    await link.subscribe(topics.SUBSCRIBE_ALL, qos=1)
                except LinkError:
                    await asyncio.sleep(1)
                    continue
                reader = asyncio.ensure_future(consume(link))
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                reader.cancel()
                await link.close()
        finally:
            if ticker is not None:
                ticker.cancel()
            if ingest is not None:
                ingest.cancel()
            if live is not None:
                live.stop()
