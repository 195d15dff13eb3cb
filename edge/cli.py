"""The gateway's commands: ``run``, ``check-config``, ``profiles``, ``schema``,
``config-reference`` and ``errors`` (the umbrella command :mod:`cityedge.cli` adds them).

Errors reach a person as for every command (:mod:`cityedge.console`, exit codes in
:mod:`protocols.codes`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cityedge.console import check_port, console, emit_json, fail, readable_file
from edge.logs import LEVELS, setup_logging
from protocols import codes

if TYPE_CHECKING:
    from edge.config.site import LoadedSite

err_console = console(stderr=True)
out = console()
log = logging.getLogger("edge.cli")

AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON on stdout)")]
ROOT = Path(__file__).resolve().parents[1]


def load_site_file(path: Path) -> LoadedSite:
    """A site file, read and checked: ``CE002`` when it cannot be read, ``CE100`` (one line per
    problem, the hint naming the command that checks it again) when it is wrong."""
    from edge.config.site import load_site
    from edge.errors import ConfigError

    readable_file(path, "site file")
    try:
        return load_site(path)
    except ConfigError as err:
        err.hint = f"fix each line, then check again with 'cityedge check-config {path}'"
        raise


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


def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Site YAML file")],
    log_level: Annotated[str | None, typer.Option(help="Override the file's log_level")] = None,
) -> None:
    """Run the gateway until SIGINT or SIGTERM, then stop cleanly, flushing what was accepted."""
    from cloud_bridge.heap import settle_heap
    from edge.config.site import load_site
    from edge.gateway import Gateway
    from edge.mqtt_sink.config import MqttSinkConfig

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
            s.commands.rollback_after_s
            for s in site.config.sinks
            if isinstance(s, MqttSinkConfig)  # the sink that takes downlink commands
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
                    gateway = Gateway(current, remote=remote)
                    settle_heap()  # start-up done: its objects out of the collector's way
                    await gateway.run(halt)
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


def register(app: typer.Typer) -> None:
    """Add the gateway's commands to the root command."""
    app.command("check-config")(check_config)
    app.command("run")(run)
    app.command("schema")(schema)
    app.command("config-reference")(config_reference)
    app.command("errors")(errors)
    app.command("profiles")(profiles)
