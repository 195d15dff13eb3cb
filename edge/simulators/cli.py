"""``cityedge simulate <profile>``, ``cityedge simulate modbus`` and ``cityedge simulate fleet``:
Modbus devices from profiles, over TCP or RTU (``--serial``)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edge.errors import ExitCode
from edge.logs import setup_logging

err_console = Console(stderr=True)
EXIT_INPUT, EXIT_RUNTIME = ExitCode.INPUT, ExitCode.RUNTIME


@dataclass(frozen=True)
class Line:
    """RTU options of a simulator (``serial`` None: Modbus TCP)."""

    serial: str | None = None
    baudrate: int = 9600
    parity: str = "E"
    dead: tuple[int, ...] = ()


def _simulate(
    profile: str,
    host: str,
    port: int,
    unit_id: int,
    seed: int,
    control_port: int | None,
    fault: list[str],
    profiles_dir: list[Path],
    units: int = 1,
    line: Line = Line(),
) -> None:
    from edge.profiles import ProfileLibrary
    from edge.simulators.faults import FaultSchedule, parse_fault
    from edge.simulators.modbus_device import DeviceSim, LineTiming, SerialLine, serve

    setup_logging("info")
    library = ProfileLibrary(profiles_dir)
    try:
        prof = library.load(profile)
        faults = FaultSchedule([parse_fault(f) for f in fault])
    except KeyError:
        err_console.print(
            f"no profile {profile!r}; known: {', '.join(library.names())}", highlight=False
        )
        raise typer.Exit(EXIT_INPUT) from None
    except ValueError as err:
        err_console.print(str(err), highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    timing = LineTiming(line.baudrate, line.parity) if line.serial else None
    sims = {
        unit_id + i: DeviceSim(
            prof, seed=seed + i, faults=faults if i == 0 else FaultSchedule(), line=timing
        )
        for i in range(units)
    }
    serial = SerialLine(line.serial, line.baudrate, line.parity) if line.serial else None

    def main() -> Coroutine[Any, Any, None]:
        return serve(sims, host, port, control_port, serial=serial, dead=frozenset(line.dead))

    _serve_until_stopped(main, line.serial or f"{host}:{port}")


def _serve_until_stopped(main: Callable[[], Coroutine[Any, Any, None]], where: str) -> None:
    """Run a simulator until SIGINT/SIGTERM; a port in use exits 3 with one line."""

    async def run() -> None:
        _stop_on_signals()
        await main()

    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        pass
    except OSError as err:
        err_console.print(f"cannot serve on {where}: {err.strerror}", highlight=False)
        raise typer.Exit(EXIT_RUNTIME) from None


def _stop_on_signals() -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel if task else (lambda: None))


def _dead_units(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(u) for u in text.split(","))
    except ValueError:
        err_console.print(f"--dead takes unit ids like 3,7,11 (got {text!r})", highlight=False)
        raise typer.Exit(EXIT_INPUT) from None


_HOST = typer.Option(help="Address to listen on")
_PORT = typer.Option(help="Modbus TCP port")
_UNIT = typer.Option(help="Unit id the device answers to")
_SEED = typer.Option(help="Seed of the simulated drift")
_CTL = typer.Option(help="Port of the control API (faults, served values); off when not given")
_FAULT = typer.Option(
    help="Scheduled fault, repeatable: silent@30+10, exception:4@60+5, spike:ph=10@5+5/60"
)
_PDIR = typer.Option(help="Extra folder with profiles")
_UNITS = typer.Option(
    min=1, max=247, help="Serve this many units (unit-id, unit-id+1, ...) on the port"
)
_SERIAL = typer.Option(help="Serve Modbus RTU on this serial device (e.g. a socat pty) instead")
_BAUD = typer.Option(help="RTU baud rate; answers take as long as on a real line")
_PARITY = typer.Option(help="RTU parity: N, E or O")
_DEAD = typer.Option(help="Unit ids that are on the bus but never answer, e.g. 3,7,11")


def simulate_modbus(
    profile: Annotated[str, typer.Argument(help="Profile name (shipped or in --profiles-dir)")],
    port: Annotated[int, _PORT] = 5020,
    host: Annotated[str, _HOST] = "127.0.0.1",
    unit_id: Annotated[int, _UNIT] = 1,
    seed: Annotated[int, _SEED] = 1,
    control_port: Annotated[int | None, _CTL] = None,
    fault: Annotated[list[str] | None, _FAULT] = None,
    profiles_dir: Annotated[list[Path] | None, _PDIR] = None,
    units: Annotated[int, _UNITS] = 1,
    serial: Annotated[str | None, _SERIAL] = None,
    baudrate: Annotated[int, _BAUD] = 9600,
    parity: Annotated[str, _PARITY] = "E",
    dead: Annotated[str | None, _DEAD] = None,
) -> None:
    """Serve any device profile over Modbus TCP (or RTU with --serial)."""
    line = Line(serial, baudrate, parity, _dead_units(dead))
    _simulate(
        profile,
        host,
        port,
        unit_id,
        seed,
        control_port,
        fault or [],
        profiles_dir or [],
        units,
        line,
    )


def simulate_fleet(
    port: Annotated[list[int], typer.Option(help="TCP port of one bus; repeat for more buses")],
    devices: Annotated[int, typer.Option(min=1, max=2000, help="Devices in the fleet")] = 50,
    host: Annotated[str, _HOST] = "127.0.0.1",
    seed: Annotated[int, _SEED] = 1,
    dead: Annotated[str | None, _DEAD] = None,
) -> None:
    """A fleet for benchmarks: DEVICES units, water sondes and air stations alternating, dealt
    round-robin over the ports (unit ids 1, 2, ... on each port)."""
    from edge.profiles import ProfileLibrary
    from edge.simulators.modbus_device import DeviceSim, fleet_layout, serve

    setup_logging("warning")
    library = ProfileLibrary()
    buses: list[dict[int, DeviceSim]] = [{} for _ in port]
    for i, (bus, unit, profile, _name) in enumerate(fleet_layout(devices, len(port))):
        buses[bus][unit] = DeviceSim(library.load(profile), seed=seed + i)
    dead_units = frozenset(_dead_units(dead))

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            for p, sims in zip(port, buses, strict=True):
                if sims:
                    tg.create_task(serve(sims, host, p, dead=dead_units))

    _serve_until_stopped(main, f"{host} ports {', '.join(map(str, port))}")


def simulate_coap_air(
    port: Annotated[int, typer.Option(help="UDP port")] = 5683,
    host: Annotated[str, _HOST] = "127.0.0.1",
    name: Annotated[str, typer.Option(help="Sensor name (the SenML base name)")] = "air-1",
    seed: Annotated[int, _SEED] = 1,
    period_s: Annotated[float, typer.Option(min=0.01, help="Seconds between samples")] = 1.0,
) -> None:
    """A CoAP air-quality sensor: /air (SenML JSON/CBOR or JSON, observable), /air/<point>
    (text), /air/history (block-wise)."""
    from edge.simulators.coap_air import AirSensor, serve

    setup_logging("info")

    _serve_until_stopped(
        lambda: serve(host, port, AirSensor(name, seed), period_s), f"{host}:{port}"
    )


def simulate_hj212_platform(
    port: Annotated[int, typer.Option(help="TCP port stations connect to")] = 9212,
    host: Annotated[str, _HOST] = "127.0.0.1",
    control_port: Annotated[int | None, _CTL] = None,
    pw: Annotated[str | None, typer.Option(help="Refuse frames with another PW")] = None,
    mn: Annotated[list[str] | None, typer.Option(help="Accept only these MN; repeatable")] = None,
) -> None:
    """An environment bureau's HJ 212 platform: receives, checks and answers frames."""
    from edge.simulators.hj212_platform import Platform, serve

    setup_logging("info")

    platform = Platform(pw=pw, mns=frozenset(mn or []))
    _serve_until_stopped(lambda: serve(platform, host, port, control_port), f"{host}:{port}")


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """``cityedge simulate modbus PROFILE`` and one command per shipped profile."""
    simulate_app.command("modbus")(simulate_modbus)
    simulate_app.command("fleet")(simulate_fleet)
    simulate_app.command("coap-air")(simulate_coap_air)
    simulate_app.command("hj212-platform")(simulate_hj212_platform)
    from edge.profiles import BUILTIN, ProfileLibrary

    library = ProfileLibrary()

    def command_for(name: str) -> Callable[..., None]:
        def command(
            port: Annotated[int, _PORT] = 5020,
            host: Annotated[str, _HOST] = "127.0.0.1",
            unit_id: Annotated[int, _UNIT] = 1,
            seed: Annotated[int, _SEED] = 1,
            control_port: Annotated[int | None, _CTL] = None,
            fault: Annotated[list[str] | None, _FAULT] = None,
            units: Annotated[int, _UNITS] = 1,
            serial: Annotated[str | None, _SERIAL] = None,
            baudrate: Annotated[int, _BAUD] = 9600,
            parity: Annotated[str, _PARITY] = "E",
            dead: Annotated[str | None, _DEAD] = None,
        ) -> None:
            line = Line(serial, baudrate, parity, _dead_units(dead))
            _simulate(name, host, port, unit_id, seed, control_port, fault or [], [], units, line)

        return command

    for name in library.names():
        if name in BUILTIN:  # contracts with a simulator of their own (signal-controller: junction)
            continue
        description = library.load(name).description
        simulate_app.command(
            name, help=f"{description} (profile {name!r}) over Modbus TCP, or RTU with --serial."
        )(command_for(name))
