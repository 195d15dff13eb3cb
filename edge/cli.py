"""The ``cityedge`` command.

Exit codes (all commands): 0 success; 1 the input is wrong (config problems, schema out of
date); 2 usage error (unknown option, missing argument); 3 the program could not run (a missing
optional dependency, a port in use, a broker or device unreachable at start); 4 the work was
done but its check failed (``provision node --self-test``: the node never reported).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edge.config.site import load_site
from edge.errors import ConfigError, EdgeError, ExitCode
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

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_RUNTIME = (
    ExitCode.OK,
    ExitCode.INPUT,
    ExitCode.USAGE,
    ExitCode.RUNTIME,
)


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
        from edge.remote_config import RemoteConfig

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        slow = asyncio.create_task(_report_slow_shutdown(stop, site.config.shutdown_flush_s + 15))
        rollback = [
            s.commands.rollback_after_s for s in site.config.sinks if hasattr(s, "commands")
        ]
        remote = RemoteConfig(config, rollback[0] if rollback else 60.0)
        current = site
        try:
            while True:  # a config.apply (or its rollback) restarts the stages with the file
                remote.restart.clear()
                remote.start_trial_timer()
                halt = asyncio.Event()
                watchers = [
                    asyncio.create_task(_set_when(ev, halt)) for ev in (stop, remote.restart)
                ]
                try:
                    await Gateway(current, remote=remote).run(halt)
                finally:
                    for w in watchers:
                        w.cancel()
                if stop.is_set():
                    return
                log.warning("restarting the gateway with %s", config)
                current = load_site(config)
        finally:
            remote.stop()
            slow.cancel()

    try:
        asyncio.run(main())
    except EdgeError as err:
        raise _fail(err, EXIT_RUNTIME) from None


async def _report_slow_shutdown(stop: asyncio.Event, after_s: float) -> None:
    """When the gateway is still running ``after_s`` after the signal, log what each task
    waits on (a stage that does not stop is a bug; this says which)."""
    await stop.wait()
    await asyncio.sleep(after_s)
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is current:
            continue
        where = " <- ".join(
            f"{f.f_code.co_name} ({Path(f.f_code.co_filename).name}:{f.f_lineno})"
            for f in reversed(task.get_stack())
        )
        log.warning("still running %.0f s after the stop signal: %s: %s", after_s, task, where)


async def _set_when(event: asyncio.Event, target: asyncio.Event) -> None:
    await event.wait()
    target.set()


def _register_areas() -> None:
    """Each area of the suite adds its commands here: explicit, one line per area."""
    from cloud_bridge import cli as cloud_cli
    from edge.faces import cli as faces_cli
    from edge.simulators import cli as simulators_cli
    from edge.simulators import vision_cli
    from edge.simulators.junction import cli as junction_cli
    from provisioning import cli as provisioning_cli

    simulators_cli.register(app, simulate_app)
    faces_cli.register(app, simulate_app)
    vision_cli.register(app, simulate_app)
    provisioning_cli.register(app, simulate_app)
    junction_cli.register(app, simulate_app)
    cloud_cli.register(app, simulate_app)


_register_areas()


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
        bool, typer.Option(help="Write protocols/schemas/ (envelope schema, AsyncAPI document)")
    ] = False,
    check: Annotated[bool, typer.Option(help="Exit 1 if a committed file differs")] = False,
) -> None:
    """Print (or write, or check) the envelope's JSON Schema and the AsyncAPI document."""
    from protocols import asyncapi, envelope

    folder = Path(envelope.__file__).parent / "schemas"
    files = {
        folder / "envelope.schema.json": envelope.json_schema(),
        folder / "asyncapi.json": asyncapi.document(),
    }
    texts = {p: json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for p, doc in files.items()}
    if write:
        for path, text in texts.items():
            path.write_text(text, encoding="utf-8")
            out.print(f"wrote {path}")
    elif check:
        stale = [p for p, t in texts.items() if not p.exists() or p.read_text("utf-8") != t]
        for path in stale:
            err_console.print(f"{path} is out of date: run 'cityedge schema --write'")
        if stale:
            raise typer.Exit(EXIT_INPUT)
        out.print(f"{', '.join(p.name for p in texts)} are current")
    else:
        sys.stdout.write(texts[folder / "envelope.schema.json"])


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
