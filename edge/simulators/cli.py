"""``cityedge simulate <profile>`` and ``cityedge simulate modbus``: Modbus TCP devices from profiles."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edge.errors import ExitCode
from edge.logs import setup_logging

err_console = Console(stderr=True)
EXIT_INPUT, EXIT_RUNTIME = ExitCode.INPUT, ExitCode.RUNTIME


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
) -> None:
    from edge.profiles import ProfileLibrary
    from edge.simulators.faults import FaultSchedule, parse_fault
    from edge.simulators.modbus_device import DeviceSim, serve

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
    sims = {
        unit_id + i: DeviceSim(prof, seed=seed + i, faults=faults if i == 0 else FaultSchedule())
        for i in range(units)
    }

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel if task else (lambda: None))
        await serve(sims, host, port, control_port)

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
    except OSError as err:
        err_console.print(f"cannot serve on {host}:{port}: {err.strerror}", highlight=False)
        raise typer.Exit(EXIT_RUNTIME) from None


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
) -> None:
    """Serve any device profile over Modbus TCP."""
    _simulate(
        profile, host, port, unit_id, seed, control_port, fault or [], profiles_dir or [], units
    )


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    """``cityedge simulate modbus PROFILE`` and one command per shipped profile."""
    simulate_app.command("modbus")(simulate_modbus)
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
        ) -> None:
            _simulate(name, host, port, unit_id, seed, control_port, fault or [], [], units)

        return command

    for name in library.names():
        if name in BUILTIN:  # contracts with a simulator of their own (signal-controller: junction)
            continue
        description = library.load(name).description
        simulate_app.command(name, help=f"{description} (profile {name!r}) over Modbus TCP.")(
            command_for(name)
        )
