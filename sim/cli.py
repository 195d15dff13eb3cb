"""``cityedge simulate <profile>``, ``cityedge simulate modbus`` and ``cityedge simulate fleet``:
Modbus devices from profiles, over TCP or RTU (``--serial``); ``coap-air``,
``hj212-platform`` and ``card-reader``; the junction and the vision scenes' commands (:mod:`sim.junction.cli`,
:mod:`sim.scenes.vision_cli`); and ``cityedge demo``.

Before a server starts, its ports (and its serial device) are probed, so a busy port or a
missing device is one ``CE003``/``CE004`` line naming it, not a library's traceback."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from cityedge.console import check_port, check_serial, console, emit_json_line, fail
from edge.logs import setup_logging
from protocols import codes
from protocols.errors import HintedError

PARITIES = ("N", "E", "O")

err_console = console(stderr=True)
out = console()


@dataclass(frozen=True)
class Line:
    """RTU options of a simulator (``serial`` None: Modbus TCP)."""

    serial: str | None = None
    baudrate: int = 9600
    parity: str = "E"
    dead: tuple[int, ...] = ()


def _line(serial: str | None, baudrate: int, parity: str, dead: str | None) -> Line:
    if parity.upper() not in PARITIES:
        fail(codes.BAD_VALUE, f"--parity {parity!r}: use N, E or O")
    return Line(serial, baudrate, parity.upper(), _dead_units(dead))


def _probe(host: str, port: int, control_port: int | None, serial: str | None = None) -> None:
    """The serial device or the TCP port, and the control port: usable, or one error line."""
    if serial is not None:
        check_serial(serial)
    else:
        check_port(host, port, "Modbus TCP")
    if control_port is not None:
        check_port(host, control_port, "control API", option="--control-port")


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
    from sim.devices.faults import FaultSchedule, parse_fault
    from sim.devices.modbus_device import DeviceSim, LineTiming, SerialLine, serve

    library = ProfileLibrary(profiles_dir)
    try:
        prof = library.load(profile)
    except KeyError:
        fail(
            codes.BAD_VALUE,
            f"no profile {profile!r}; known: {', '.join(library.names())}",
            "'cityedge profiles' lists the shipped ones; --profiles-dir adds a folder",
        )
    except ValueError as err:  # a profile file with problems (file:line: what)
        fail(codes.BAD_VALUE, str(err), "fix the profile file")
    try:
        faults = FaultSchedule([parse_fault(f) for f in fault])
    except ValueError as err:
        fail(codes.BAD_VALUE, f"--fault: {err}")
    _probe(host, port, control_port, line.serial)
    setup_logging("info")
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

    if line.serial:
        serve_until_stopped(main, f"serial device {line.serial}", codes.SERIAL)
    else:
        serve_until_stopped(main, f"{host}:{port}")


def serve_until_stopped(
    main: Callable[[], Coroutine[Any, Any, None]], where: str, code: str = codes.PORT_IN_USE
) -> None:
    """Run a simulator until SIGINT/SIGTERM. The ports were probed first; when a server still
    cannot start (another program took the port in between), one line names ``where``."""

    async def run() -> None:
        _stop_on_signals()
        await main()

    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        pass
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "listen" not in str(err):
            raise  # not a server that could not start: a bug, reported as one
        raise HintedError(f"cannot serve on {where}", code=code) from None


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
        fail(codes.BAD_VALUE, f"--dead takes unit ids like 3,7,11 (got {text!r})")


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
    line = _line(serial, baudrate, parity, dead)
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
    from sim.devices.modbus_device import DeviceSim, fleet_layout, serve

    dead_units = frozenset(_dead_units(dead))
    for p in port:
        _probe(host, p, None)
    setup_logging("warning")
    library = ProfileLibrary()
    buses: list[dict[int, DeviceSim]] = [{} for _ in port]
    for i, (bus, unit, profile, _name) in enumerate(fleet_layout(devices, len(port))):
        buses[bus][unit] = DeviceSim(library.load(profile), seed=seed + i)

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            for p, sims in zip(port, buses, strict=True):
                if sims:
                    tg.create_task(serve(sims, host, p, dead=dead_units))

    serve_until_stopped(main, f"{host} ports {', '.join(map(str, port))}")


def simulate_gateways(
    broker: Annotated[
        str,
        typer.Option(help="Broker nodes as host:port,host:port (gateway i starts on node i mod n)"),
    ] = "127.0.0.1:1883",
    count: Annotated[int, typer.Option(min=1, max=20_000, help="Gateways to simulate")] = 100,
    rate: Annotated[
        float, typer.Option(min=0.01, max=1000, help="Envelopes per second per gateway")
    ] = 1.0,
    site: Annotated[str, typer.Option(help="Site of the gateways")] = "sim",
    prefix: Annotated[
        str, typer.Option(help="Gateway ids are PREFIX-00000, PREFIX-00001, ...")
    ] = "gw",
    duration_s: Annotated[
        float | None, typer.Option(help="Stop making envelopes after this long (default: SIGTERM)")
    ] = None,
    drain_s: Annotated[
        float, typer.Option(help="After the stop, send what is unacknowledged for up to this long")
    ] = 30.0,
    protocol: Annotated[str, typer.Option(help="MQTT version: 3.1.1 (NATS), 5 or auto")] = "3.1.1",
    report: Annotated[
        Path | None, typer.Option(help="Also write the report (JSON) to this file")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Many light gateway sessions for load tests: birth, will, telemetry with link session and
    sequence numbers; prints per gateway what the city brain must hold (JSON) when it stops."""
    import time

    from protocols.errors import TopicError
    from protocols.topics import gateway_prefix
    from sim.gateways import FleetSettings, dump, parse_endpoints, run_fleet

    try:
        endpoints = parse_endpoints(broker)
    except ValueError as err:
        fail(codes.BAD_VALUE, f"--broker {err}", hint="e.g. --broker 127.0.0.1:1883,127.0.0.1:1884")
    if protocol not in ("3.1.1", "5", "auto"):
        fail(codes.BAD_VALUE, f"--protocol {protocol!r}: use 3.1.1, 5 or auto")
    try:
        gateway_prefix(site, f"{prefix}-{count - 1:05d}")
    except TopicError as err:
        fail(codes.BAD_VALUE, str(err))
    setup_logging(log_level)
    logging.getLogger("cloud_bridge.link").setLevel(logging.WARNING)  # a line per connect
    settings = FleetSettings(
        endpoints,
        count,
        site=site,
        prefix=prefix,
        rate_per_gateway=rate,
        protocol=protocol,  # type: ignore[arg-type]  # checked above
        drain_s=drain_s,
    )
    started = time.monotonic()

    async def main() -> str:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return dump(await run_fleet(settings, stop, duration_s), started)

    text = asyncio.run(main())
    if report is not None:
        report.write_text(text + "\n")
    sys.stdout.write(text + "\n")


def simulate_coap_air(
    port: Annotated[int, typer.Option(help="UDP port")] = 5683,
    host: Annotated[str, _HOST] = "127.0.0.1",
    name: Annotated[str, typer.Option(help="Sensor name (the SenML base name)")] = "air-1",
    seed: Annotated[int, _SEED] = 1,
    period_s: Annotated[float, typer.Option(min=0.01, help="Seconds between samples")] = 1.0,
) -> None:
    """A CoAP air-quality sensor: /air (SenML JSON/CBOR or JSON, observable), /air/<point>
    (text), /air/history (block-wise)."""
    from sim.devices.coap_air import AirSensor, serve

    check_port(host, port, "CoAP", udp=True)
    setup_logging("info")

    serve_until_stopped(
        lambda: serve(host, port, AirSensor(name, seed), period_s), f"{host}:{port}"
    )


def simulate_card_reader(
    port: Annotated[int, typer.Option(help="TCP port gateways connect to")] = 4001,
    control_port: Annotated[
        int, typer.Option(help="Port of the control API that presents cards and keys")
    ] = 4002,
    host: Annotated[str, _HOST] = "127.0.0.1",
    serial: Annotated[
        str | None, typer.Option(help="Send down this serial device (a socat pty) instead")
    ] = None,
    baudrate: Annotated[int, typer.Option(help="Serial line speed (8N1)")] = 9600,
) -> None:
    """A Wiegand card reader and keypad behind an RS-485/TCP interface: POST /card, /keys."""
    from sim.devices.card_reader import serve

    if serial is not None:
        check_serial(serial)
    else:
        check_port(host, port, "card reader")
    check_port(host, control_port, "control API", option="--control-port")
    setup_logging("info")
    where = f"serial device {serial}" if serial else f"{host}:{port}"
    serve_until_stopped(
        lambda: serve(host, None if serial else port, control_port, serial, baudrate),
        where,
        codes.SERIAL if serial else codes.PORT_IN_USE,
    )


def simulate_hj212_platform(
    port: Annotated[int, typer.Option(help="TCP port stations connect to")] = 9212,
    host: Annotated[str, _HOST] = "127.0.0.1",
    control_port: Annotated[int | None, _CTL] = None,
    pw: Annotated[str | None, typer.Option(help="Refuse frames with another PW")] = None,
    mn: Annotated[list[str] | None, typer.Option(help="Accept only these MN; repeatable")] = None,
) -> None:
    """An environment bureau's HJ 212 platform: receives, checks and answers frames."""
    from sim.devices.hj212_platform import Platform, serve

    check_port(host, port, "HJ 212 platform")
    if control_port is not None:
        check_port(host, control_port, "control API", option="--control-port")
    setup_logging("info")

    platform = Platform(pw=pw, mns=frozenset(mn or []))
    serve_until_stopped(lambda: serve(platform, host, port, control_port), f"{host}:{port}")


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


def register(app: typer.Typer) -> None:
    """``cityedge simulate ...`` (devices, the junction, the vision scenes) and ``cityedge demo``."""
    from sim.junction import cli as junction_cli
    from sim.scenes import vision_cli

    simulate_app = typer.Typer(
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        help="Simulated field devices for tests and demos.",
    )
    app.add_typer(simulate_app, name="simulate")
    _register_devices(simulate_app)
    vision_cli.register(simulate_app)
    junction_cli.register(simulate_app)
    app.command("demo")(demo)


def _register_devices(simulate_app: typer.Typer) -> None:
    """``cityedge simulate modbus PROFILE`` and one command per shipped profile."""
    simulate_app.command("modbus")(simulate_modbus)
    simulate_app.command("fleet")(simulate_fleet)
    simulate_app.command("gateways")(simulate_gateways)
    simulate_app.command("coap-air")(simulate_coap_air)
    simulate_app.command("hj212-platform")(simulate_hj212_platform)
    simulate_app.command("card-reader")(simulate_card_reader)
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
            line = _line(serial, baudrate, parity, dead)
            _simulate(name, host, port, unit_id, seed, control_port, fault or [], [], units, line)

        return command

    for name in library.names():
        if name in BUILTIN:  # contracts with a simulator of their own (signal-controller: junction)
            continue
        description = library.load(name).description
        simulate_app.command(
            name, help=f"{description} (profile {name!r}) over Modbus TCP, or RTU with --serial."
        )(command_for(name))
