"""``cityedge demo``: a whole site on one machine.

Starts, each as its own process on a free loopback port: a broker (mosquitto when installed,
else the embedded amqtt broker), a simulated river sonde whose turbidity surges every 90 s and
whose pH drifts high every 150 s, a simulated air station whose PM2.5 climbs every two minutes,
the city brain's ingest (``cityedge ingest`` into an SQLite file) and the gateway with the bundled
``site.yaml``, whose sink keeps every envelope in its durable outbox until the broker has it. Then
it shows what the city brain receives, and what the ingest stored.
Ctrl-C (or ``--duration-s``) stops everything it started, by process id. The demo's work folder
(logs, the outbox, the ingest's database) is a temp folder it names at the start; at the end it
is removed when everything ran and stopped cleanly, and kept (and named again) when something
failed, since its logs then say what.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from cloud_bridge.link import LinkSettings
from protocols.codes import ExitCode
from sim.liveview import BrainState, watch
from sim.localsite import Proc, cityedge_argv, free_port, start, start_broker, wait_port

SITE_FILE = Path(__file__).parent / "site.yaml"

WATER_FAULTS = ("spike:turbidity=240@15+25/90", "spike:ph=9.4@70+20/150")
AIR_FAULTS = ("spike:pm2_5=118@40+30/120",)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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
    clean = False
    # a closed terminal (SIGHUP) or a kill (SIGTERM) stops the demo as Ctrl-C does, so what it
    # started (each in its own session, out of the terminal's reach) is stopped too
    for sig in STOP_SIGNALS[1:]:
        signal.signal(sig, _interrupt)
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
        title = (
            f"cityedge demo · Ctrl-C stops everything · http://127.0.0.1:{ports['http']}/healthz"
        )
        code = asyncio.run(_view(settings, duration_s, plain, console, ingest_db, title))
        clean = code == 0
        return code
    except KeyboardInterrupt:  # a stop asked for before the view started
        clean = True
        return ExitCode.INTERRUPTED
    finally:
        for sig in STOP_SIGNALS:  # stopping already: a second Ctrl-C must not cut it short
            signal.signal(sig, signal.SIG_IGN)
        died = [p.name for p in procs if not p.alive()]
        for p in reversed(procs):
            p.stop()
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            console.print("stopped everything the demo started", highlight=False)
        _leave(work, console, ours=workdir is None, clean=clean and not died, died=died)


def _leave(work: Path, console: Console, *, ours: bool, clean: bool, died: list[str]) -> None:
    """Remove the work folder after a clean run; otherwise keep it and say where it is."""
    if ours and clean:
        shutil.rmtree(work, ignore_errors=True)
        if not work.exists():
            with contextlib.suppress(OSError):
                console.print(f"removed the demo's work folder {work}", highlight=False)
            return
    if died:
        why = f"{', '.join(died)} stopped early; see {', '.join(d + '.log' for d in died)}"
    elif ours and not clean:
        why = "the demo did not end cleanly; its logs say why"
    else:
        why = "logs, outbox and the ingest's database"
    with contextlib.suppress(OSError):
        console.print(f"kept the demo's work folder {work} ({why})", highlight=False, markup=False)


async def _view(
    settings: LinkSettings,
    duration_s: float | None,
    plain: bool,
    console: Console,
    ingest_db: Path,
    title: str,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    state = BrainState(title=title)
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
                f"city brain received {state.received} messages ({state.invalid} invalid) from "
                f"{len(state.latest)} devices; {len(state.history)} events",
                highlight=False,
            )
            if state.ingest:
                console.print("; ".join(state.ingest), highlight=False, markup=False)
    return 0
