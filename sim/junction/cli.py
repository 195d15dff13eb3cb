"""``cityedge simulate junction --scenario NAME``: the SUMO junction behind a Modbus cabinet."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from cityedge.console import check_port, fail, writable_target
from edge.logs import setup_logging
from protocols import codes
from sim.cli import serve_until_stopped


def _parse_detector_fault(text: str) -> tuple[str, float, float | None]:
    """``NAME@START[+DURATION]`` (simulation seconds)."""
    name, sep, when = text.partition("@")
    start, plus, duration = when.partition("+")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(start), float(duration) if plus else None
    except ValueError:
        raise ValueError(
            f"bad detector fault {text!r}: use NAME@START[+DURATION], e.g. d_N_T@90+60"
        ) from None


def simulate_junction(
    scenario: Annotated[str, typer.Option(help="Scenario name (see --list)")] = "morning-peak",
    port: Annotated[int, typer.Option(help="Modbus TCP port")] = 5020,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    unit_id: Annotated[int, typer.Option(help="Unit id the cabinet answers to")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the traffic demand")] = 1,
    speed: Annotated[
        float, typer.Option(min=0.1, max=100, help="Simulation seconds per wall-clock second")
    ] = 1.0,
    duration_s: Annotated[
        float | None,
        typer.Option("--duration-s", min=1, help="Shorten the demand to this many seconds"),
    ] = None,
    drain_s: Annotated[
        float | None,
        typer.Option("--drain-s", min=0, help="After the demand, run at most this many seconds"),
    ] = None,
    watchdog_s: Annotated[
        float, typer.Option(help="Cabinet falls back this long after the gateway's last write")
    ] = 5.0,
    control_port: Annotated[
        int | None, typer.Option(help="Port of the control API; off when not given")
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="Modbus fault, repeatable, simulation seconds: silent@120+20"),
    ] = None,
    detector_fault: Annotated[
        list[str] | None,
        typer.Option(help="Detector sticks 'occupied', repeatable: d_N_T@90[+60]"),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write the run's JSON report here at the end")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Folder for SUMO's files (default: a temporary one)")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the scenarios and exit")] = False,
) -> None:
    """A signal controller on Modbus TCP that drives a SUMO junction (needs the traffic extra)."""
    from edge.traffic_signal import load_junction
    from sim.devices.faults import FaultSchedule, parse_fault
    from sim.junction.scenario import (
        DetectorFailure,
        load_scenario,
        scenario_names,
    )

    if list_:
        for name in scenario_names():
            typer.echo(f"{name}: {load_scenario(name).description}")
        return
    try:
        sc = load_scenario(scenario)
    except KeyError:
        fail(codes.BAD_VALUE, f"no scenario {scenario!r}; known: {', '.join(scenario_names())}")
    try:
        junction = load_junction(sc.junction)
        faults = FaultSchedule([parse_fault(f) for f in [*sc.link_faults, *(fault or [])]])
        extra = []
        for text in detector_fault or []:
            name, start, length = _parse_detector_fault(text)
            if name not in {d.name for d in junction.detectors}:
                known = ", ".join(d.name for d in junction.detectors)
                raise ValueError(f"no detector {name!r} at {junction.name}; it has {known}")
            extra.append(DetectorFailure(detector=name, at_s=start, duration_s=length))
    except ValueError as err:
        fail(codes.BAD_VALUE, str(err))
    if report is not None:
        writable_target(report, "--report")
    check_port(host, port, "the cabinet's Modbus TCP")
    if control_port is not None:
        check_port(host, control_port, "control API", option="--control-port")
    setup_logging("info")
    update: dict[str, object] = {"detector_failures": [*sc.detector_failures, *extra]}
    if drain_s is not None:
        update["drain_s"] = drain_s
    sc = sc.model_copy(update=update)

    async def main(folder: Path) -> None:
        from sim.junction.loop import JunctionSimulation
        from sim.junction.server import serve_junction

        sim = JunctionSimulation(
            sc, junction, folder, seed=seed, duration_s=duration_s, watchdog_s=watchdog_s
        )
        await serve_junction(
            sim,
            host=host,
            port=port,
            unit_id=unit_id,
            speed=speed,
            faults=faults,
            control_port=control_port,
            report_path=report,
            seed=seed,
        )

    with tempfile.TemporaryDirectory(prefix="cityedge-junction-") as tmp:
        serve_until_stopped(lambda: main(workdir or Path(tmp)), f"{host}:{port}")


def register(simulate_app: typer.Typer) -> None:
    """``cityedge simulate junction``."""
    simulate_app.command("junction")(simulate_junction)
