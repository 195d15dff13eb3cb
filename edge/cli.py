"""The ``cityedge`` command.

Exit codes (all commands): 0 success; 1 the input is wrong (config problems, schema out of
date); 2 usage error (unknown option, missing argument); 3 the program could not run (a missing
optional dependency, a port in use, a broker or device unreachable at start).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edge.config.site import load_site
from edge.errors import ConfigError, EdgeError
from edge.logs import setup_logging

app = typer.Typer(
    name="cityedge",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
    help="Edge gateway for city services: run it, check its config, simulate devices, demo a site.",
)
simulate_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Simulated field devices for tests and demos.",
)
app.add_typer(simulate_app, name="simulate")

err_console = Console(stderr=True)
out = Console()
log = logging.getLogger("edge.cli")

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


def _fail(err: EdgeError, code: int) -> typer.Exit:
    err_console.print(err.for_humans(), highlight=False, markup=False)
    return typer.Exit(code)


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="Site YAML file")],
    dump: Annotated[
        bool, typer.Option(help="Print the effective config (secrets redacted)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable result")] = False,
) -> None:
    """Validate a site file: exit 0 when good, 1 with a line per problem (file:line: path: what)."""
    try:
        site = load_site(file)
    except ConfigError as err:
        if as_json:
            out.print_json(json.dumps({"ok": False, "problems": err.problems}))
            raise typer.Exit(EXIT_INPUT) from None
        raise _fail(err, EXIT_INPUT) from None
    c = site.config
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "ok": True,
                    "warnings": site.warnings,
                    "sources": len(c.sources),
                    "apps": len(c.apps),
                    "sinks": len(c.sinks),
                    "devices": sorted(site.catalog.devices),
                }
            )
        )
        return
    for w in site.warnings:
        err_console.print(f"warning: {w}", highlight=False)
    out.print(
        f"{file}: ok — site {c.site}, gateway {c.gateway}: {len(c.sources)} sources "
        f"({len(site.catalog.devices)} devices), {len(c.apps)} apps, {len(c.sinks)} sinks",
        highlight=False,
    )
    if dump:
        out.print_json(c.model_dump_json())


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Site YAML file")],
    log_level: Annotated[str | None, typer.Option(help="Override the file's log_level")] = None,
) -> None:
    """Run the gateway until SIGINT or SIGTERM, then stop cleanly, flushing what was accepted."""
    from edge.gateway import Gateway

    try:
        site = load_site(config)
    except ConfigError as err:
        raise _fail(err, EXIT_INPUT) from None
    setup_logging(log_level or site.config.log_level)
    for w in site.warnings:
        log.warning("%s", w)

    async def main() -> None:
        gateway = Gateway(site)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await gateway.run(stop)

    try:
        asyncio.run(main())
    except EdgeError as err:
        raise _fail(err, EXIT_RUNTIME) from None


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


@simulate_app.command("modbus")
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


def _register_profile_commands() -> None:
    """``cityedge simulate water-sonde`` etc.: one command per shipped profile."""
    from edge.profiles import ProfileLibrary

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
        description = library.load(name).description
        simulate_app.command(name, help=f"{description} (profile {name!r}) over Modbus TCP.")(
            command_for(name)
        )


_register_profile_commands()


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds")] = None,
    plain: Annotated[
        bool | None,
        typer.Option(help="Print lines instead of a live table (default when not a terminal)"),
    ] = None,
) -> None:
    """A whole site on this machine: simulators, a broker, the gateway, the city brain's view."""
    from edge.demo import run_demo

    setup_logging("warning")
    try:
        code = run_demo(duration, plain if plain is not None else not sys.stdout.isatty())
    except (OSError, RuntimeError, TimeoutError) as err:
        err_console.print(f"demo could not start: {err}", highlight=False)
        raise typer.Exit(EXIT_RUNTIME) from None
    raise typer.Exit(code)


@app.command()
def schema(
    write: Annotated[
        bool, typer.Option(help="Write protocols/schemas/envelope.schema.json")
    ] = False,
    check: Annotated[bool, typer.Option(help="Exit 1 if the committed schema differs")] = False,
) -> None:
    """Print (or write, or check) the JSON Schema of the event envelope."""
    from protocols import envelope

    text = json.dumps(envelope.json_schema(), indent=2, ensure_ascii=False) + "\n"
    path = Path(envelope.__file__).parent / "schemas" / "envelope.schema.json"
    if write:
        path.write_text(text, encoding="utf-8")
        out.print(f"wrote {path}")
    elif check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            err_console.print(f"{path} is out of date: run 'cityedge schema --write'")
            raise typer.Exit(EXIT_INPUT)
        out.print(f"{path} is current")
    else:
        sys.stdout.write(text)


@app.command("config-reference")
def config_reference(
    write: Annotated[bool, typer.Option(help="Write docs/configuration.md")] = False,
) -> None:
    """Print the site file reference generated from the models (docs/configuration.md)."""
    from edge.config.reference import render

    text = render()
    if write:
        path = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
        path.write_text(text, encoding="utf-8")
        out.print(f"wrote {path}")
    else:
        sys.stdout.write(text)


@app.command()
def profiles() -> None:
    """List the device profiles shipped with cityedge."""
    from edge.profiles import ProfileLibrary

    library = ProfileLibrary()
    for name in library.names():
        p = library.load(name)
        out.print(f"{name}: {p.description} ({len(p.points)} points)", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
