"""What every command shares: how errors reach a person, ``-h`` and ``--version`` everywhere,
consoles that never hard-wrap, JSON output, and probes that name a busy port or a missing
serial device before a server library fails with its own words.

The root command's class (:class:`CityedgeGroup`) is the one place an exception becomes what a
person reads: an error with a registered code (:mod:`protocols.codes`) prints
``CEnnn: message`` and ``  hint: ...`` on stderr (or, when ``--json`` is on the command line,
one JSON object on stdout) and exits with that code's exit code. Usage errors are ``CE001``
(exit 2), a file named on the command line that cannot be used ``CE002``, a busy port ``CE003``.
Anything else is a bug: its traceback, then ``CE000``. Sub-commands (also those of other rooms,
which import only :mod:`protocols` and this module) therefore just raise
``HintedError(message, hint=..., code=...)``.

Imports only :mod:`protocols` (and typer, rich): every room's CLI may import it.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import stat
import sys
import traceback
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from protocols import codes
from protocols.codes import ExitCode
from protocols.errors import HintedError, port_error

JSON_FLAG = "--json"
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


@cache
def version() -> str:
    try:
        return metadata.version("cityedge")
    except metadata.PackageNotFoundError:  # a checkout without an install
        return "unknown"


def console(*, stderr: bool = False) -> Console:
    """A console that prints text as given: never hard-wrapped (piped output keeps one line per
    line whatever the terminal width or COLUMNS; a terminal wraps long lines itself, so a
    command printed to be copied stays whole), no markup, no highlighting."""
    return Console(stderr=stderr, soft_wrap=True, markup=False, highlight=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def emit_json(doc: Any) -> None:
    """One JSON document on stdout (indented; times as ISO 8601 UTC strings)."""
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False, default=_json_default) + "\n")
    sys.stdout.flush()


def emit_json_line(doc: Any) -> None:
    """One JSON object on one line of stdout (for commands that report as they go)."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, default=_json_default) + "\n")
    sys.stdout.flush()


def iso_time(t: float | datetime | None) -> str | None:
    """ISO 8601 in UTC to the second (``2026-03-01T08:00:00+00:00``); None stays None."""
    if t is None:
        return None
    when = t if isinstance(t, datetime) else datetime.fromtimestamp(t, UTC)
    return when.astimezone(UTC).isoformat(timespec="seconds")


def fail(code: str, message: str, hint: str | None = None) -> NoReturn:
    """Stop the command with a registered error (printed and mapped to its exit code by the
    root command)."""
    raise HintedError(message, hint=hint, code=code)


class Failed(HintedError):
    """An error whose ``--json`` form also carries what was done before it (``details``)."""

    def __init__(self, code: str, message: str, details: dict[str, Any], hint: str | None = None):
        super().__init__(message, hint=hint, code=code)
        self.details = details

    def as_json(self) -> dict[str, object]:
        return {**super().as_json(), **self.details}


def readable_file(path: Path, what: str) -> Path:
    """``path`` when it is a file this user may read, else ``CE002`` saying which and why."""
    if not path.exists():
        fail(codes.BAD_PATH, f"cannot read {what} {path}: no such file")
    if not path.is_file():
        fail(codes.BAD_PATH, f"cannot read {what} {path}: it is not a file")
    if not os.access(path, os.R_OK):
        fail(codes.BAD_PATH, f"cannot read {what} {path}: permission denied")
    return path


def writable_target(path: Path, what: str) -> Path:
    """``path`` when a file may be written there (its folder exists and is writable)."""
    folder = path.parent
    if path.is_dir():
        fail(codes.BAD_PATH, f"cannot write {what} {path}: it is a folder")
    if not folder.is_dir():
        fail(codes.BAD_PATH, f"cannot write {what} {path}: no folder {folder}", "create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(codes.BAD_PATH, f"cannot write {what} {path}: {folder} is not writable")
    return path


# -- probes: say what is wrong before a library says it in its own words ------------------------


def check_port(
    host: str, port: int, what: str, *, udp: bool = False, option: str = "--port"
) -> None:
    """Bind the port once and let it go: :func:`port_error` when that fails. Binds as the
    servers do (``SO_REUSEADDR`` for TCP, so a port in TIME_WAIT counts as free); port 0
    (any free port) is never busy."""
    if not 0 <= port <= 65535:
        fail(codes.BAD_VALUE, f"{option} {port}: a port is 1-65535 (0: any free port)")
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        )
    except socket.gaierror as err:
        raise port_error(host, port, what, err, udp=udp, option=option) from None
    family, kind, _proto, _name, address = infos[0]
    with socket.socket(family, kind) as s:
        if not udp:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as err:
            raise port_error(host, port, what, err, udp=udp, option=option) from None


def check_serial(path: str) -> None:
    """``CE004`` when ``path`` is not a character device this user may read and write."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        fail(codes.SERIAL, f"serial device {path}: {(err.strerror or str(err)).lower()}")
    if not stat.S_ISCHR(mode):
        fail(codes.SERIAL, f"{path} is not a serial device (not a character device)")
    if not os.access(path, os.R_OK | os.W_OK):
        fail(codes.SERIAL, f"serial device {path}: permission denied")


# -- the root command ---------------------------------------------------------------------------


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"cityedge {version()}")
        raise typer.Exit


@cache
def _version_option() -> Any:
    """A ``--version`` option built by typer itself (the one declared on this probe command),
    appended to every command of the tree that has no ``--version`` of its own."""
    probe = typer.Typer()

    @probe.command()
    def _probe(
        show: Annotated[
            bool,
            typer.Option(
                "--version",
                help="Print cityedge's version and exit",
                callback=_show_version,
                is_eager=True,
            ),
        ] = False,
    ) -> None:
        del show

    (param,) = [p for p in typer.main.get_command(probe).params if p.name == "show"]
    param.expose_value = False  # the command functions do not take it
    return param


def _tree(command: Any) -> Iterator[Any]:
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _tree(sub)


def _add_version_everywhere(root: Any) -> None:
    option = _version_option()
    for command in _tree(root):
        if not any("--version" in getattr(p, "opts", ()) for p in command.params):
            command.params.append(option)


def _json_requested(argv: list[str]) -> bool:
    return JSON_FLAG in (argv[: argv.index("--")] if "--" in argv else argv)


class CityedgeGroup(TyperGroup):
    """The root command: ``--version`` on every command, and every exception reported by
    :func:`report` (also under ``typer.testing.CliRunner``, which calls :meth:`main`)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            _add_version_everywhere(self)
            rv = super().main(argv, prog_name, complete_var, False, windows_expand_args, **extra)
            code = rv if isinstance(rv, int) else 0
        except BaseException as err:  # noqa: BLE001 - the one place errors become messages
            code = report(err, as_json=_json_requested(argv), command=_command_path(self, argv))
        if standalone_mode:
            sys.exit(code)
        return code


def _command_path(root: Any, argv: list[str]) -> str:
    """``cityedge simulate water-sonde`` for ``simulate water-sonde --port 1``."""
    words = ["cityedge"]
    command = root
    for arg in argv:
        command = getattr(command, "commands", {}).get(arg)
        if command is None:
            break
        words.append(arg)
    return " ".join(words)


def as_hinted(err: BaseException) -> HintedError | None:
    """The registered error ``err`` stands for; None for a bug."""
    if isinstance(err, HintedError):
        return err
    if hasattr(err, "format_message") and hasattr(err, "exit_code"):  # click's own errors
        message = str(err.format_message())
        if err.exit_code == ExitCode.USAGE:
            return HintedError(message, code=codes.USAGE)
        return HintedError(
            message, code=codes.BAD_PATH if hasattr(err, "filename") else codes.BAD_VALUE
        )
    if isinstance(err, OSError) and err.errno == errno.EADDRINUSE:
        return HintedError(f"a port is in use: {err.strerror}", code=codes.PORT_IN_USE)
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return HintedError(f"{err.filename}: {err.strerror.lower()}", code=codes.BAD_PATH)
    return None


def report(err: BaseException, *, as_json: bool, command: str = "cityedge") -> int:
    """Print ``err`` for a person (or as JSON) and return the exit code. A usage error or a
    wrong value without a hint of its own points at ``command``'s help."""
    if isinstance(err, SystemExit):
        return err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    if isinstance(err, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(err, typer.Abort):
        return 1
    if isinstance(err, BrokenPipeError):  # the reader went away (| head): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
    if type(err).__name__ == "NoArgsIsHelpError":  # a group without its command: its help
        typer.echo(str(err.format_message()) if hasattr(err, "format_message") else "", err=True)
        return ExitCode.USAGE
    hinted = as_hinted(err)
    if hinted is None:
        traceback.print_exception(err)
        hinted = HintedError(f"{type(err).__name__}: {err}", code=codes.UNEXPECTED)
    if hinted.hint is None and hinted.code in (codes.USAGE, codes.BAD_VALUE):
        hinted.hint = f"see '{command} -h'"
    if as_json:
        emit_json(hinted.as_json())
    else:
        sys.stdout.flush()
        sys.stderr.write(hinted.for_humans() + "\n")
        sys.stderr.flush()
    return hinted.exit_code


# -- python -m ... (argparse) -------------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the conventions of every command: ``-h``, ``--version``, and usage errors
    as ``CE001`` (exit 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s (cityedge {version()})")

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(codes.for_humans(codes.USAGE, message, f"see '{self.prog} -h'") + "\n")
        sys.exit(ExitCode.USAGE)
