"""``cityedge demo``: a whole site on one machine.

Starts, each as its own process on a free loopback port: a broker (mosquitto when installed,
else the embedded amqtt broker), a simulated river sonde whose turbidity surges every 90 s and
whose pH drifts high every 150 s, a simulated air station whose PM2.5 climbs every two minutes,
the city brain's ingest (``cityedge ingest`` into an SQLite file) and the gateway with the bundled
``site.yaml``, whose sink keeps every envelope in its durable outbox until the broker has it. Then
it shows what the city brain receives, and what the ingest stored.
Ctrl-C (or ``--duration-s``) stops everything it started, by process id.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from cloud_bridge.link import LinkSettings
from edge.liveview import BrainState, watch
from edge.localsite import Proc, cityedge_argv, free_port, start, start_broker, wait_port

SITE_FILE = Path(__file__).parent / "site.yaml"

WATER_FAULTS = ("spike:turbidity=240@15+25/90", "spike:ph=9.4@70+20/150")
AIR_FAULTS = ("spike:pm2_5=118@40+30/120",)


def run_demo(
    duration_s: float | None,
    plain: bool,
    workdir: Path | None = None,
    *,
    console: Console | None = None,
    on_ready: Callable[[dict[str, object]], None] | None = None,
) -> int:
    """``on_ready`` gets the addresses once everything runs (``cityedge demo --json``)."""
    console = console or Console()
    work = workdir or Path(tempfile.mkdtemp(prefix="cityedge-demo-"))
    ports = {name: free_port() for name in ("mqtt", "water", "air", "http", "water_ctl", "air_ctl")}
    procs: list[Proc] = []
    try:
        broker, kind = start_broker(ports["mqtt"], work)
        procs.append(broker)
        console.print(f"broker: {kind} on 127.0.0.1:{ports['mqtt']}", highlight=False)
        for name, profile, faults in (
            ("water", "water-sonde", WATER_FAULTS),
            ("air", "air-station", AIR_FAULTS),
        ):
            argv = cityedge_argv(
                "simulate",
                profile,
                "--port",
                str(ports[name]),
                "--control-port",
                str(ports[f"{name}_ctl"]),
                "--seed",
                str(len(procs)),
            )
            for f in faults:
                argv += ["--fault", f]
            procs.append(start(f"sim-{name}", argv, work))
        for name in ("water", "air"):
            wait_port(ports[name], proc=procs[-1] if name == "air" else procs[-2])
        ingest_db = work / "city-brain.db"
        procs.append(
            start(
                "ingest",
                cityedge_argv(
                    "ingest",
                    "--broker",
                    f"127.0.0.1:{ports['mqtt']}",
                    "--db",
                    str(ingest_db),
                    "--group",
                    "",  # a plain subscription: the embedded broker has no shared ones
                    "--worker",
                    "demo-ingest",
                ),
                work,
            )
        )
        env = {
            "CITYEDGE_DEMO_STATE": str(work),
            "CITYEDGE_DEMO_MQTT_PORT": str(ports["mqtt"]),
            "CITYEDGE_DEMO_WATER_PORT": str(ports["water"]),
            "CITYEDGE_DEMO_AIR_PORT": str(ports["air"]),
            "CITYEDGE_DEMO_HTTP_PORT": str(ports["http"]),
        }
        gateway = start("gateway", cityedge_argv("run", "--config", str(SITE_FILE)), work, env)
        procs.append(gateway)
        wait_port(ports["http"], proc=gateway)
        console.print(
            f"gateway: http://127.0.0.1:{ports['http']}/metrics and /healthz; logs in {work}",
            highlight=False,
        )
        if on_ready is not None:
            on_ready(
                {
                    "event": "ready",
                    "mqtt": f"mqtt://127.0.0.1:{ports['mqtt']}",
                    "gateway": f"http://127.0.0.1:{ports['http']}",
                    "modbus": {n: f"127.0.0.1:{ports[n]}" for n in ("water", "air")},
                    "ingest_db": str(ingest_db),
                    "workdir": str(work),
                }
            )
        settings = LinkSettings(
            host="127.0.0.1", port=ports["mqtt"], client_id="city-brain-demo-view"
        )
        return asyncio.run(_view(settings, duration_s, plain, console, ingest_db))
    finally:
        for p in reversed(procs):
            p.stop()
        console.print("stopped everything the demo started", highlight=False)


async def _view(
    settings: LinkSettings,
    duration_s: float | None,
    plain: bool,
    console: Console,
    ingest_db: Path,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    state = BrainState()
    timer = None
    if duration_s is not None:
        timer = loop.call_later(duration_s, stop.set)
    try:
        await watch(settings, state, plain=plain, console=console, stop=stop, ingest_db=ingest_db)
    finally:
        if timer is not None:
            timer.cancel()
        with contextlib.suppress(Exception):
            console.print(
                f"city brain received {state.received} messages from {len(state.latest)} devices; "
                f"{len(state.history)} events shown",
                highlight=False,
            )
            if state.ingest:
                console.print(state.ingest, highlight=False)
    return 0
