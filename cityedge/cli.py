"""The ``cityedge`` command: one root for the commands of every room.

Exit codes (all commands, :class:`protocols.codes.ExitCode`): 0 success; 1 the input is wrong
(config problems, an out-of-date file, an argument's value); 2 usage error (unknown option,
missing argument); 3 the program could not run (a missing optional dependency, a port in use, a
broker or device unreachable at start, a command that is not part of this install); 4 the work
was done but its check failed (``provision node --wait-s``: the node never reported); 130
stopped by Ctrl-C. No room declares exit codes of its own.

Every error prints ``CEnnn: message`` and ``  hint: ...`` on stderr (one meaning per code,
``docs/errors.md``; ``cityedge errors CODE`` explains one); with ``--json`` it is one JSON
object on stdout instead. ``-h`` and ``--version`` work on every command
(:mod:`cityedge.console`).

Each room adds its commands with its own ``register(app)``: explicit, one line per room. A
gateway's install (``scripts/install-gateway.sh``) has neither :mod:`sim` nor
:mod:`cloud_bridge.citybrain`; there their commands say so in one line (``CE101``, exit 3)
and everything else works.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec

import typer

from cityedge.console import HELP_OPTIONS, CityedgeGroup, fail

app = typer.Typer(
    name="cityedge",
    cls=CityedgeGroup,
    context_settings=HELP_OPTIONS,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
    help="Edge gateway for city services: run it, check its config, simulate devices, demo a site.",
)

# rooms a gateway's install leaves out: their package, its commands, what they are
OPTIONAL_ROOMS = (
    ("sim", ("simulate", "demo"), "the simulators and the demo"),
    (
        "cloud_bridge.citybrain",
        ("ingest", "broker-config", "command-key", "command"),
        "the city brain's side",
    ),
)


def installed(package: str) -> bool:
    """Whether ``package`` is part of this install (a gateway's leaves some rooms out)."""
    try:
        return find_spec(package) is not None
    except ModuleNotFoundError:  # its parent package is missing too
        return False


def _not_installed(name: str, what: str) -> Callable[[], None]:
    def command() -> None:
        fail(
            "CE101",  # an optional part is not installed
            f"'cityedge {name}' is not part of this install: a gateway's install leaves out {what}",
            "run it where cityedge is installed whole: pip install 'cityedge[all]' from a checkout",
        )

    command.__doc__ = f"Not part of this install ({what})."
    return command


def _register_rooms() -> None:
    from edge import cli as gateway_cli
    from edge.face_access import cli as faces_cli
    from provisioning import cli as provisioning_cli

    gateway_cli.register(app)
    faces_cli.register(app)
    provisioning_cli.register(app)
    for package, names, what in OPTIONAL_ROOMS:
        if installed(package):
            continue
        for name in names:
            app.command(
                name,
                add_help_option=False,
                context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
            )(_not_installed(name, what))
    if installed("sim"):
        from sim import cli as sim_cli

        sim_cli.register(app)
    if installed("cloud_bridge.citybrain"):
        from cloud_bridge.citybrain import cli as citybrain_cli

        citybrain_cli.register(app)


_register_rooms()


def main() -> None:
    app(prog_name="cityedge")


if __name__ == "__main__":
    main()
