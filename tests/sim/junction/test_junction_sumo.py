"""The SUMO junction (real SUMO, in-process libsumo): the network, SUMO's own programs, and the
gateway's control loop driving the simulated cabinet."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import pytest

from edge.traffic_signal import load_junction
from edge.traffic_signal.control import FallbackChange, PlanChange
from edge.traffic_signal.policy import AdaptivePolicy
from sim.junction.loop import JunctionSimulation, run_in_process
from sim.junction.scenario import DetectorFailure, load_scenario
from sim.junction.sumo import (
    TLS_ID,
    JunctionRun,
    Layout,
    SumoProgram,
    build_network,
    routes_xml,
)

J = load_junction("four-arm")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_network("four-arm", tmp_path_factory.mktemp("net"))


def test_every_link_belongs_to_a_group(net: Path) -> None:
    layout = Layout.read(net, J)
    assert len(layout.link_groups) == 20
    assert layout.link_groups[:4] == ("N_T", "N_T", "N_T", "N_L")
    assert set(layout.link_groups[16:]) == {"xN", "xE", "xS", "xW"}
    assert layout.group_lanes["N_T"] == ("n_in_1", "n_in_2")
    assert layout.group_lanes["N_L"] == ("n_in_3",)


def test_every_conflict_sumo_finds_is_in_the_timing_sheet(net: Path) -> None:
    """netconvert computes which links cross or merge from the geometry; every such pair of
    groups must be declared a conflict (the sheet may declare more, never fewer)."""
    layout = Layout.read(net, J)
    root = ET.parse(net).getroot()
    logic = root.find(f"junction[@id='{TLS_ID}']")
    assert logic is not None
    found: set[frozenset[str]] = set()
    for req in logic.iter("request"):
        i = int(req.get("index", "0"))
        foes = req.get("foes", "")
        for k, bit in enumerate(reversed(foes)):
            a, b = layout.link_groups[i], layout.link_groups[k]
            if bit == "1" and a != b:
                found.add(frozenset((a, b)))
    assert found, "no conflicts found: the net file changed shape"
    assert found <= J.conflict_pairs, sorted(tuple(sorted(p)) for p in found - J.conflict_pairs)


def test_flows_are_sorted_and_a_shortened_run_ends_its_demand() -> None:
    sc = load_scenario("morning-peak")
    text = routes_xml(sc, {}, until_s=1000)
    begins = [float(b) for b in re.findall(r'begin="([\d.]+)"', text)]
    assert begins == sorted(begins)
    assert max(float(e) for e in re.findall(r'end="([\d.]+)"', text)) == 1000


def test_the_cabinets_fixed_plan_is_sumos_static_program(tmp_path: Path) -> None:
    """Step for step, the cabinet in local mode shows the same heads as SUMO's static program
    generated from the same sheet — so 'fixed-time' means the same in both."""
    sc = load_scenario("off-peak")
    static = JunctionRun(sc, J, tmp_path / "static", program=SumoProgram("static"), duration_s=300)
    static.start()
    shown_static = []
    while static.t < 300:
        static.step()
        shown_static.append(static.state)
    static.finish("static")  # libsumo runs one simulation per process: one after the other
    cab = JunctionSimulation(sc, J, tmp_path / "cabinet", duration_s=300)
    cab.start()
    shown_cabinet = []
    while cab.time_s < 300:
        cab.step()
        shown_cabinet.append(cab.run.state)
    cab.finish("cabinet")
    assert len(set(shown_static)) >= 8  # it went round the plan
    assert shown_cabinet == shown_static


@pytest.mark.parametrize("kind", ["actuated", "delay_based"])
def test_sumos_adaptive_programs_run_on_the_sheet(
    tmp_path: Path, kind: Literal["actuated", "delay_based"]
) -> None:
    run = JunctionRun(
        load_scenario("off-peak"), J, tmp_path, program=SumoProgram(kind), duration_s=600
    )
    run.start()
    while run.running:
        run.step()
    result = run.finish(kind)
    assert result.vehicles > 150 and result.collisions == 0
    assert result.violations == {}


def test_the_gateway_loop_drives_a_morning_peak_safely(tmp_path: Path) -> None:
    run = run_in_process(
        load_scenario("morning-peak"), J, AdaptivePolicy, tmp_path, seed=3, duration_s=900
    )
    r = run.result
    assert r.violations == {} and r.collisions == 0 and r.extra["conflict_trips"] == 0
    assert r.vehicles > 400 and r.unfinished == 0
    plans = [e for e in run.events if isinstance(e, PlanChange)]
    assert len(plans) > 20
    served = {e.phase for e in plans}
    assert served == {p.name for p in J.phases}
    assert all(J.phase_index(e.phase) != J.phase_index(e.next_phase) for e in plans)


def test_a_stuck_detector_hands_the_junction_to_the_fixed_plan_and_back(tmp_path: Path) -> None:
    sc = load_scenario("morning-peak").model_copy(
        update={"detector_failures": [DetectorFailure(detector="d_S_T", at_s=200, duration_s=100)]}
    )
    run = run_in_process(sc, J, AdaptivePolicy, tmp_path, seed=2, duration_s=600)
    fallbacks = [e for e in run.events if isinstance(e, FallbackChange)]
    assert [(e.state, e.detectors) for e in fallbacks] == [("entered", ("d_S_T",)), ("left", ())]
    entered, left = fallbacks
    assert entered.time_s is not None and 220 <= entered.time_s <= 225  # stuck_s = 20
    assert left.time_s is not None and left.time_s >= 299 + 30  # fixed at 300, then recover_s
    assert run.result.violations == {} and run.result.collisions == 0
