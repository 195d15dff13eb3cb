"""The ``cityedge`` command.

Exit codes (all commands, :class:`protocols.codes.ExitCode`): 0 success; 1 the input is wrong
(config problems, an out-of-date file, an argument's value); 2 usage error (unknown option,
missing argument); 3 the program could not run (a missing optional dependency, a port in use, a
broker or device unreachable at start); 4 the work was done but its check failed
(``provision node --wait-s``: the node never reported).

Every error prints ``CEnnn: message`` and ``  hint: ...`` on stderr (one meaning per code,
``docs/errors.md``; ``cityedge errors CODE`` explains one); with ``--json`` it is one JSON
object on stdout instead. ``-h`` and ``--version`` work on every command (:mod:`edge.cliutil`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edge.cliutil import (
    HELP_OPTIONS,
    CityedgeGroup,
    check_port,
    console,
    emit_json,
    emit_json_line,
    fail,
    load_site_file,
)
from edge.logs import LEVELS, setup_logging
from protocols import codes

app = typer.Typer(
    name="cityedge",
    cls=CityedgeGroup,
    context_settings=HELP_OPTIONS,
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

err_console = console(stderr=True)
out = console()
log = logging.getLogger("edge.cli")

AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON on stdout)")]
ROOT = Path(__file__).resolve().parents[1]


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="Site YAML file")],
    dump: Annotated[
        bool, typer.Option(help="Print the effective config (secrets redacted)")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Validate a site file: exit 0 when good, 1 with a line per problem (file:line: path: what)."""
    site = load_site_file(file)
    c = site.config
    if as_json:
        emit_json(
            {
                "ok": True,
                "warnings": site.warnings,
                "sources": len(c.sources),
                "apps": len(c.apps),
                "sinks": len(c.sinks),
                "devices": sorted(site.catalog.devices),
            }
        )
        return
    for w in site.warnings:
        err_console.print(f"warning: {w}")
    out.print(
        f"{file}: ok — site {c.site}, gateway {c.gateway}: {len(c.sources)} sources "
        f"({len(site.catalog.devices)} devices), {len(c.apps)} apps, {len(c.sinks)} sinks"
    )
    if dump:
        out.print_json(c.model_dump_json())


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Site YAML file")],
    log_level: Annotated[str | None, typer.Option(help="Override the file's log_level")] = None,
) -> None:
    """Run the gateway until SIGINT or SIGTERM, then stop cleanly, flushing what was accepted."""
    from edge.config.site import load_site
    from edge.gateway import Gateway

    if log_level is not None and log_level.lower() not in LEVELS:
        fail(codes.BAD_VALUE, f"--log-level {log_level!r}: use one of {', '.join(LEVELS)}")
    site = load_site_file(config)
    http = site.config.http
    if http.enabled:  # probe first: a busy port would only make the endpoint restart forever
        check_port(
            http.host, http.port, "the gateway's http endpoint", option=f"http.port in {config}"
        )
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

    asyncio.run(main())


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
    from cloud_bridge.citybrain import cli as cloud_cli
    from edge.face_access import cli as faces_cli
    from provisioning import cli as provisioning_cli
    from sim import cli as simulators_cli
    from sim.junction import cli as junction_cli
    from sim.scenes import vision_cli

    simulators_cli.register(app, simulate_app)
    faces_cli.register(app, simulate_app)
    vision_cli.register(app, simulate_app)
    provisioning_cli.register(app, simulate_app)
    junction_cli.register(app, simulate_app)
    cloud_cli.register(app, simulate_app)


_register_areas()


@app.command()
def demo(
    duration_s: Annotated[
        float | None, typer.Option("--duration-s", help="Stop after this many seconds")
    ] = None,
    plain: Annotated[
        bool | None,
        typer.Option(help="Print lines instead of a live table (default when not a terminal)"),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="JSON lines on stdout: {'event': 'ready', addresses...} once everything runs, "
            "{'event': 'stopped', 'exit': N} at the end; the view goes to stderr",
        ),
    ] = False,
) -> None:
    """A whole site on this machine: simulators, a broker, the gateway, the city brain's view."""
    from sim.demo import run_demo

    setup_logging("warning")
    plain = plain if plain is not None else (as_json or not sys.stdout.isatty())
    kwargs: dict[str, Any] = {}
    if as_json:
        kwargs = {"console": err_console, "on_ready": emit_json_line}
    elif plain:  # lines, never hard-wrapped (the live table keeps the demo's own console)
        kwargs = {"console": out}
    try:
        code = run_demo(duration_s, plain, **kwargs)
    except (OSError, RuntimeError, TimeoutError) as err:
        first, *rest = (str(err) or type(err).__name__).splitlines()
        for line in rest:  # the failed program's last log lines
            err_console.print(f"  {line}")
        fail(codes.NOT_STARTED, f"the demo could not start: {first}")
    if as_json:
        emit_json_line({"event": "stopped", "exit": code})
    raise typer.Exit(code)


@app.command()
def schema(
    write: Annotated[
        bool, typer.Option(help="Write protocols/schemas/ (envelope schema, AsyncAPI document)")
    ] = False,
    check: Annotated[bool, typer.Option(help="Exit 1 if a committed file differs")] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="With --write or --check: the files and their state as JSON (the schema "
            "itself is JSON already)",
        ),
    ] = False,
) -> None:
    """Print (or write, or check) the envelope's JSON Schema and the AsyncAPI document."""
    import json

    from protocols import asyncapi, envelope

    folder = Path(envelope.__file__).parent / "schemas"
    files = {
        folder / "envelope.schema.json": envelope.json_schema(),
        folder / "asyncapi.json": asyncapi.document(),
    }
    texts = {p: json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for p, doc in files.items()}
    if not (write or check):
        sys.stdout.write(texts[folder / "envelope.schema.json"])
        return
    _generated(texts, "cityedge schema --write", write=write, as_json=as_json)


def _generated(texts: dict[Path, str], command: str, *, write: bool, as_json: bool) -> None:
    """Write generated files, or check the committed ones are current (``CE006`` if not)."""
    if write:
        for path, text in texts.items():
            path.write_text(text, encoding="utf-8")
        state = {str(p): "written" for p in texts}
    else:
        stale = [p for p, t in texts.items() if not p.exists() or p.read_text("utf-8") != t]
        state = {str(p): "stale" if p in stale else "current" for p in texts}
        if stale:
            fail(
                codes.OUT_OF_DATE,
                "\n".join(f"{p} is out of date" for p in stale),
                f"run '{command}' and commit the result",
            )
    if as_json:
        emit_json({"ok": True, "files": state})
    else:
        for name, what in state.items():
            out.print(f"{name}: {what}")


@app.command("config-reference")
def config_reference(
    write: Annotated[bool, typer.Option(help="Write docs/configuration.md")] = False,
    check: Annotated[bool, typer.Option(help="Exit 1 if docs/configuration.md differs")] = False,
) -> None:
    """Print the site file reference generated from the models (docs/configuration.md)."""
    from edge.config.reference import render

    text = render()
    if write or check:
        texts = {ROOT / "docs" / "configuration.md": text}
        _generated(texts, "cityedge config-reference --write", write=write, as_json=False)
    else:
        sys.stdout.write(text)


@app.command()
def errors(
    code: Annotated[str | None, typer.Argument(help="One code, e.g. CE003")] = None,
    write: Annotated[bool, typer.Option(help="Write docs/errors.md")] = False,
    check: Annotated[bool, typer.Option(help="Exit 1 if docs/errors.md differs")] = False,
    as_json: AsJson = False,
) -> None:
    """What an error code means, its exit code and what to do; all of them without CODE."""
    if write or check:
        texts = {ROOT / "docs" / "errors.md": codes.markdown()}
        _generated(texts, "cityedge errors --write", write=write, as_json=as_json)
        return
    chosen = list(codes.CODES.values())
    if code is not None:
        if code.upper() not in codes.CODES:
            fail(codes.BAD_VALUE, f"no error code {code!r}", "'cityedge errors' lists them all")
        chosen = [codes.CODES[code.upper()]]
    if as_json:
        emit_json(
            {
                "ok": True,
                "codes": [
                    {"code": c.code, "exit": int(c.exit), "meaning": c.meaning, "hint": c.hint}
                    for c in chosen
                ],
            }
        )
        return
    for c in chosen:
        out.print(f"{c.code} (exit {int(c.exit)}): {c.meaning}\n  hint: {c.hint}")


@app.command()
def profiles(as_json: AsJson = False) -> None:
    """List the device profiles shipped with cityedge."""
    from edge.profiles import ProfileLibrary

    library = ProfileLibrary()
    shipped = [library.load(name) for name in library.names()]
    if as_json:
        emit_json(
            {
                "ok": True,
                "profiles": [
                    {
                        "name": p.name,
                        "description": p.description,
                        "kind": p.kind,
                        "points": [pt.name for pt in p.points],
                    }
                    for p in shipped
                ],
            }
        )
        return
    for p in shipped:
        out.print(f"{p.name}: {p.description} ({len(p.points)} points)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
