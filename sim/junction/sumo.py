"""The SUMO side of the junction: build the network, generate demand and detectors, run it
in-process with libsumo, and report delays and safety records.

The network is built at run time with ``netconvert`` from the plain XML in ``net/`` (nodes,
edges, connections; nothing generated is committed). Signal groups of the timing sheet map to
SUMO link indices by their movements (``from`` arm → ``to`` arm is a link from ``<from>_in``
to ``<to>_out``) and by the arm a crossing crosses, so the sheet is the only place a group is
defined.

Signals are shown in one of two ways:

- ``program=None``: the caller drives the heads (:meth:`JunctionRun.show`) — the cabinet does,
  from the gateway's commands;
- a :class:`SumoProgram`: SUMO's own controller runs them (``static`` fixed time, ``actuated``
  gap-based, ``delay_based`` time-loss based), generated from the same timing sheet: the same
  phases, minimum and maximum greens, ambers and all-reds.

Every step, the heads SUMO actually shows are read back and fed to the independent
:class:`~edge.traffic_signal.monitor.SafetyMonitor`; SUMO's own collision check (junctions included)
and its emergency braking counts are the second witness.

Delay per vehicle is SUMO's ``timeLoss`` plus its ``departDelay`` (time spent waiting to
enter the network, so a controller that backs queues up to the network edge is charged).
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

from edge.errors import MissingExtraError
from edge.traffic_signal.monitor import SafetyMonitor
from protocols.junction import Aspect, GroupKind, JunctionSpec
from sim.junction.cabinet import DetectorReading
from sim.junction.scenario import Scenario

NET_DIR = Path(__file__).parent / "net"
TLS_ID = "C"
_CHAR = {Aspect.GREEN: "G", Aspect.AMBER: "y", Aspect.RED: "r"}
_ASPECT = {"G": Aspect.GREEN, "g": Aspect.GREEN, "y": Aspect.AMBER, "Y": Aspect.AMBER}


def _libsumo() -> Any:
    try:
        import libsumo
    except ImportError as err:
        raise MissingExtraError(
            "the junction simulator needs SUMO's Python bindings (libsumo)",
            hint="pip install 'cityedge[traffic]'",
        ) from err
    return libsumo


def sumo_binary(name: str) -> str:
    """Path of a SUMO program (``netconvert``, ``sumo``) from the eclipse-sumo package."""
    try:
        import sumo

        candidate = Path(sumo.SUMO_HOME) / "bin" / name
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise MissingExtraError(
            f"SUMO's {name} is not installed", hint="pip install 'cityedge[traffic]'"
        )
    return found


def build_network(network: str, out_dir: Path) -> Path:
    """Run netconvert on ``net/<network>.{nod,edg,con}.xml``; returns the ``.net.xml``."""
    out = out_dir / f"{network}.net.xml"
    sources = [NET_DIR / f"{network}.{kind}.xml" for kind in ("nod", "edg", "con")]
    for s in sources:
        if not s.is_file():
            raise FileNotFoundError(f"network source {s} is missing")
    cmd = [
        sumo_binary("netconvert"),
        "--node-files",
        str(sources[0]),
        "--edge-files",
        str(sources[1]),
        "--connection-files",
        str(sources[2]),
        "--no-turnarounds",
        "true",
        "--tls.default-type",
        "static",
        "--output-file",
        str(out),
        "--no-warnings",
    ]
    done = subprocess.run(  # noqa: S603 - our own argv: SUMO's binary and our files
        cmd, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"netconvert failed ({done.returncode}): {done.stderr.strip()}")
    return out


@dataclass(frozen=True)
class Layout:
    """Where the timing sheet's groups are in the SUMO network."""

    link_groups: tuple[str, ...]  # group of each TLS link index
    group_lanes: dict[str, tuple[str, ...]]  # vehicle group -> approach lanes
    lane_length: dict[str, float]
    crossing_edges: dict[str, str]  # crossing edge id -> pedestrian group
    walkingareas: tuple[str, ...]

    @classmethod
    def read(cls, net_file: Path, junction: JunctionSpec) -> Layout:
        root = ET.parse(net_file).getroot()  # noqa: S314 - netconvert's output, made by us
        lane_length: dict[str, float] = {}
        crossing_edges: dict[str, str] = {}
        walkingareas: list[str] = []
        by_arm = {g.crosses: g.name for g in junction.groups if g.crosses}
        for edge in root.iter("edge"):
            eid = edge.get("id", "")
            for el in edge.iter("lane"):
                lane_length[el.get("id", "")] = float(el.get("length", "0"))
            if edge.get("function") == "crossing":
                arms = {e.rsplit("_", 1)[0] for e in edge.get("crossingEdges", "").split()}
                for arm in arms:
                    if arm in by_arm:
                        crossing_edges[eid] = by_arm[arm]
            elif edge.get("function") == "walkingarea" and eid.startswith(f":{TLS_ID}_"):
                walkingareas.append(eid)
        movements = {(m.from_arm, m.to_arm): g.name for g in junction.groups for m in g.movements}
        links: dict[int, str] = {}
        lanes: dict[str, list[str]] = {g.name: [] for g in junction.groups}
        for c in root.iter("connection"):
            if c.get("tl") != TLS_ID:
                continue
            index = int(c.get("linkIndex", "-1"))
            frm, to = c.get("from", ""), c.get("to", "")
            if to in crossing_edges:  # walkingarea -> crossing
                links[index] = crossing_edges[to]
                continue
            group = movements.get((frm.removesuffix("_in"), to.removesuffix("_out")))
            if group is None:
                raise ValueError(f"link {frm} -> {to} belongs to no group of {junction.name}")
            links[index] = group
            lane_id = f"{frm}_{c.get('fromLane')}"
            if lane_id not in lanes[group]:
                lanes[group].append(lane_id)
        missing = [i for i in range(len(links)) if i not in links]
        if missing or not links:
            raise ValueError(f"TLS link indices without a group: {missing}")
        return cls(
            link_groups=tuple(links[i] for i in range(len(links))),
            group_lanes={g: tuple(v) for g, v in lanes.items() if v},
            lane_length=lane_length,
            crossing_edges=crossing_edges,
            walkingareas=tuple(sorted(walkingareas)),
        )

    def state_string(self, aspects: Mapping[str, Aspect]) -> str:
        return "".join(_CHAR[aspects[g]] for g in self.link_groups)

    def aspects_of(self, state: str) -> dict[str, Aspect]:
        """Each group's aspect from a SUMO state string; a group whose links disagree shows
        its most permissive one (the safe reading for a monitor)."""
        out: dict[str, Aspect] = {}
        rank = {Aspect.RED: 0, Aspect.AMBER: 1, Aspect.GREEN: 2}
        for group, char in zip(self.link_groups, state, strict=True):
            a = _ASPECT.get(char, Aspect.RED)
            if group not in out or rank[a] > rank[out[group]]:
                out[group] = a
        return out


@dataclass(frozen=True)
class SumoProgram:
    """One of SUMO's own controllers, built from the timing sheet."""

    kind: Literal["static", "actuated", "delay_based"]
    greens: Mapping[str, float] | None = None  # static: green per phase (default: fixed plan)

    @property
    def label(self) -> str:
        return self.kind


def tls_program(junction: JunctionSpec, layout: Layout, program: SumoProgram) -> str:
    """The ``<tlLogic>`` additional file for ``program``: the fixed plan's phase order, each
    green followed by its amber and all-red phases from the sheet."""
    j = junction
    order = [j.phase_index(n) for n in j.fixed_plan]
    lines = [f'<tlLogic id="{TLS_ID}" programID="{program.kind}" offset="0" type="{program.kind}">']
    if program.kind == "actuated":
        lines += [
            '  <param key="max-gap" value="3.0"/>',
            '  <param key="detector-gap" value="2.0"/>',
            '  <param key="passing-time" value="2.0"/>',
        ]
    if program.kind == "delay_based":
        lines += ['  <param key="detectorRange" value="100"/>']
    for i, p in enumerate(order):
        phase = j.phases[p]
        q = order[(i + 1) % len(order)]
        green = {g: Aspect.RED for g in (x.name for x in j.groups)}
        for g in phase.groups:
            green[g] = Aspect.GREEN
        state = layout.state_string(green)
        walk = p in j.ped_phases
        if program.kind == "static":
            duration = (program.greens or {}).get(phase.name, phase.fixed_green_s)
            lines.append(f'  <phase duration="{duration:g}" state="{state}" name="{phase.name}"/>')
        elif walk:  # SUMO's controllers have no pedestrian detection: a fixed walk
            d = phase.fixed_green_s
            lines.append(
                f'  <phase duration="{d:g}" minDur="{d:g}" maxDur="{d:g}" state="{state}" '
                f'name="{phase.name}"/>'
            )
        else:
            lines.append(
                f'  <phase duration="{phase.fixed_green_s:g}" minDur="{phase.min_green_s:g}" '
                f'maxDur="{phase.max_green_s:g}" state="{state}" name="{phase.name}"/>'
            )
        amber, all_red = j.transition(p, q)
        following = j.phases[q].groups
        if amber > 0:
            shown = dict(green)
            for g in phase.groups:
                if g not in following:
                    kind = j.group(g).kind
                    shown[g] = Aspect.AMBER if kind is GroupKind.VEHICLE else Aspect.RED
            lines.append(f'  <phase duration="{amber:g}" state="{layout.state_string(shown)}"/>')
        if all_red > 0:
            shown = {
                g: (Aspect.GREEN if g in following and g in phase.groups else Aspect.RED)
                for g in green
            }
            lines.append(f'  <phase duration="{all_red:g}" state="{layout.state_string(shown)}"/>')
    lines.append("</tlLogic>")
    return "<additional>\n" + "\n".join(lines) + "\n</additional>\n"


def routes_xml(scenario: Scenario, length: Mapping[str, float], until_s: float) -> str:
    """Vehicle flows per origin-destination and slice, pedestrian flows per crossing; nothing
    departs after ``until_s`` (a shortened run). Flows are sorted by their begin time, as SUMO
    reads route files incrementally and drops what comes out of order."""
    d = scenario.demand
    flows: list[tuple[float, str]] = []
    for od, rates in d.vehicles_per_hour.items():
        frm, _, to = od.partition("-")
        for k, rate in enumerate(rates):
            begin, end = k * d.slice_s, min((k + 1) * d.slice_s, until_s)
            if rate <= 0 or end <= begin:
                continue
            flows.append(
                (
                    begin,
                    f'  <flow id="{od}.{k}" type="car" from="{frm}_in" to="{to}_out" '
                    f'begin="{begin:g}" end="{end:g}" period="exp({rate / 3600:.6f})" '
                    'departLane="best" departSpeed="max"/>',
                )
            )
    for arm, rates in d.pedestrians_per_hour.items():
        near = length.get(f"{arm}_in_0", 300.0) - 45.0  # 45 m before the crossing
        for k, rate in enumerate(rates):
            begin, end = k * d.slice_s, min((k + 1) * d.slice_s, until_s)
            if rate <= 0 or end <= begin:
                continue
            half = rate / 2 / 3600
            for tag, frm, to, dep, arr in (
                ("a", f"{arm}_in", f"{arm}_out", near, 45.0),
                ("b", f"{arm}_out", f"{arm}_in", 45.0, near),
            ):
                flows.append(
                    (
                        begin,
                        f'  <personFlow id="ped-{arm}{tag}.{k}" begin="{begin:g}" end="{end:g}" '
                        f'period="exp({half:.6f})"><walk from="{frm}" to="{to}" '
                        f'departPos="{dep:.1f}" arrivalPos="{arr:.1f}"/></personFlow>',
                    )
                )
    flows.sort(key=lambda f: f[0])
    head = (
        '  <vType id="car" accel="2.6" decel="4.5" sigma="0.5" length="5" minGap="2.5" '
        'maxSpeed="16.7" speedDev="0.1"/>'
    )
    return "\n".join(["<routes>", head, *(f for _, f in flows), "</routes>"]) + "\n"


def detectors_xml(junction: JunctionSpec, layout: Layout) -> str:
    """A lane-area (zone) detector and a stop-line loop on every lane of every detector."""
    out = ["<additional>"]
    for d in junction.detectors:
        for lane in layout.group_lanes[d.group]:
            length = layout.lane_length[lane]
            start = max(0.0, length - d.zone_m)
            out.append(
                f'  <laneAreaDetector id={quoteattr(f"{d.name}@{lane}")} lane="{lane}" '
                f'pos="{start:.2f}" endPos="{length - 0.1:.2f}" period="3600" file="NUL"/>'
            )
            out.append(
                f'  <inductionLoop id={quoteattr(f"{d.name}@{lane}@stop")} lane="{lane}" '
                f'pos="{length - 1.0:.2f}" period="3600" file="NUL"/>'
            )
    out.append("</additional>")
    return "\n".join(out) + "\n"


@dataclass
class RunResult:
    """What one run measured."""

    controller: str
    scenario: str
    seed: int
    vehicles: int
    mean_delay_s: float
    p95_delay_s: float
    pedestrians: int
    mean_ped_delay_s: float
    collisions: int
    emergency_stops: int
    emergency_braking: int
    teleports: int
    unfinished: int
    violations: dict[str, int]
    sim_time_s: float
    wall_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class JunctionRun:
    """One SUMO run of a scenario (libsumo, in this process; one run at a time)."""

    def __init__(
        self,
        scenario: Scenario,
        junction: JunctionSpec,
        workdir: Path,
        *,
        seed: int = 1,
        program: SumoProgram | None = None,
        duration_s: float | None = None,
        monitor_tolerance_s: float | None = None,
    ) -> None:
        self.scenario = scenario
        self.junction = junction
        self.workdir = workdir
        self.seed = seed
        self.program = program
        self.demand_s = duration_s if duration_s is not None else scenario.demand_s
        self.step_s = scenario.step_s
        self.t = 0.0
        self.monitor = SafetyMonitor(
            junction,
            tolerance_s=self.step_s if monitor_tolerance_s is None else monitor_tolerance_s,
        )
        self.collisions = 0
        self._shown: str | None = None
        self.state = ""  # the heads as SUMO showed them in the last step
        self._counts = [0] * len(junction.detectors)
        self._last_pass = [-math.inf] * len(junction.detectors)
        self._loop_ids: dict[str, set[str]] = {}
        self._frozen: dict[int, DetectorReading] = {}
        self._waiting: dict[str, float] = {}  # crossing -> first time a pedestrian waited
        self.kerb: set[str] = set()  # crossings with a pedestrian waiting, this step
        self.ls: Any = None
        self.layout: Layout | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        ls = _libsumo()
        self.workdir.mkdir(parents=True, exist_ok=True)
        net = build_network(self.scenario.network, self.workdir)
        self.layout = layout = Layout.read(net, self.junction)
        routes = self.workdir / "routes.rou.xml"
        routes.write_text(
            routes_xml(self.scenario, layout.lane_length, self.demand_s), encoding="utf-8"
        )
        detectors = self.workdir / "detectors.add.xml"
        detectors.write_text(detectors_xml(self.junction, layout), encoding="utf-8")
        additional = [str(detectors)]
        if self.program is not None:
            tls = self.workdir / "tls.add.xml"
            tls.write_text(tls_program(self.junction, layout, self.program), encoding="utf-8")
            additional.append(str(tls))
        end = self.demand_s + self.scenario.drain_s
        ls.start(
            [
                "sumo",
                "--net-file",
                str(net),
                "--route-files",
                str(routes),
                "--additional-files",
                ",".join(additional),
                "--tripinfo-output",
                str(self.workdir / "tripinfo.xml"),
                "--statistic-output",
                str(self.workdir / "statistics.xml"),
                "--step-length",
                f"{self.step_s:g}",
                "--seed",
                str(self.seed),
                "--end",
                f"{end:g}",
                "--collision.check-junctions",
                "true",
                "--collision.action",
                "warn",
                "--time-to-teleport",
                "300",
                "--no-step-log",
                "true",
                "--no-warnings",
                "true",
                "--duration-log.disable",
                "true",
            ]
        )
        self.ls = ls

    @property
    def running(self) -> bool:
        if self.ls is None:
            return False
        if self.t >= self.demand_s + self.scenario.drain_s:
            return False
        if self.t < self.demand_s:
            return True
        return bool(self.ls.simulation.getMinExpectedNumber() > 0)

    def step(self) -> None:
        """One SUMO step, then read back the heads for the monitor."""
        ls = self.ls
        ls.simulationStep()
        self.t = float(ls.simulation.getTime())
        self.collisions += int(ls.simulation.getCollidingVehiclesNumber())
        assert self.layout is not None
        self.state = ls.trafficlight.getRedYellowGreenState(TLS_ID)  # in force this step
        shown = self.layout.aspects_of(self.state)
        self.kerb = self.waiting_pedestrians()
        self._track_waiting(shown)
        self.monitor.observe(self.t, shown, self._waiting)

    def show(self, aspects: Mapping[str, Aspect]) -> None:
        """Drive the heads (only when SUMO's own program does not)."""
        assert self.layout is not None
        state = self.layout.state_string(aspects)
        if state != self._shown:
            self.ls.trafficlight.setRedYellowGreenState(TLS_ID, state)
            self._shown = state

    # -- sensing -------------------------------------------------------------------------

    def waiting_pedestrians(self) -> set[str]:
        """Crossings with a pedestrian waiting at the kerb (who presses the button)."""
        assert self.layout is not None
        ls = self.ls
        out: set[str] = set()
        for wa in self.layout.walkingareas:
            for pid in ls.edge.getLastStepPersonIDs(wa):
                nxt = ls.person.getNextEdge(pid)
                if nxt in self.layout.crossing_edges and ls.person.getSpeed(pid) < 0.1:
                    out.add(self.layout.crossing_edges[nxt])
        return out

    def _track_waiting(self, shown: Mapping[str, Aspect]) -> None:
        """Button presses as the monitor sees them (for SUMO's own programs too)."""
        for crossing in self.kerb:
            if shown[crossing] is not Aspect.GREEN:
                self._waiting.setdefault(crossing, self.t)
        for crossing in list(self._waiting):
            if shown[crossing] is Aspect.GREEN:
                del self._waiting[crossing]

    def detector_readings(self) -> list[DetectorReading]:
        """Each timing-sheet detector's zone and stop-line reading (with injected failures)."""
        assert self.layout is not None
        ls = self.ls
        out: list[DetectorReading] = []
        for i, d in enumerate(self.junction.detectors):
            failure = next(
                (f for f in self.scenario.detector_failures if f.detector == d.name), None
            )
            if failure is not None and failure.active(self.t):
                frozen = self._frozen.setdefault(i, DetectorReading(self._counts[i], 0, 0, 100.0))
                out.append(DetectorReading(frozen.count, frozen.queue, frozen.vehicles, 100.0))
                continue
            self._frozen.pop(i, None)
            queue = vehicles = 0
            occupancy = 0.0
            lanes = self.layout.group_lanes[d.group]
            for lane in lanes:
                det = f"{d.name}@{lane}"
                halted = int(ls.lanearea.getLastStepHaltingNumber(det))
                queue += halted
                vehicles += max(halted, int(ls.lanearea.getLastStepVehicleNumber(det)))
                occupancy += float(ls.lanearea.getLastStepOccupancy(det))
                loop = f"{det}@stop"
                ids = set(ls.inductionloop.getLastStepVehicleIDs(loop))
                new = len(ids - self._loop_ids.get(loop, set()))
                if new:
                    self._counts[i] += new
                    self._last_pass[i] = self.t
                self._loop_ids[loop] = ids
            out.append(
                DetectorReading(
                    self._counts[i],
                    queue,
                    vehicles,
                    occupancy / len(lanes),
                    min(self.t - self._last_pass[i], 6553.5),
                )
            )
        return out

    # -- results -------------------------------------------------------------------------

    def finish(self, controller: str) -> RunResult:
        unfinished = 0
        if self.ls is not None:
            unfinished = int(self.ls.simulation.getMinExpectedNumber())
            self.ls.close()
            self.ls = None
        trips = ET.parse(self.workdir / "tripinfo.xml").getroot()  # noqa: S314 - SUMO's output
        delays = sorted(
            float(t.get("timeLoss", "0")) + float(t.get("departDelay", "0"))
            for t in trips.iter("tripinfo")
        )
        peds = [
            float(w.get("timeLoss", "0")) for p in trips.iter("personinfo") for w in p.iter("walk")
        ]
        stats = ET.parse(self.workdir / "statistics.xml").getroot()  # noqa: S314 - SUMO's output
        safety = stats.find("safety")
        teleports = stats.find("teleports")

        def attr(el: ET.Element | None, key: str) -> int:
            return int(float(el.get(key, "0"))) if el is not None else 0

        return RunResult(
            controller=controller,
            scenario=self.scenario.name,
            seed=self.seed,
            vehicles=len(delays),
            mean_delay_s=statistics.fmean(delays) if delays else math.nan,
            p95_delay_s=_percentile(delays, 0.95),
            pedestrians=len(peds),
            mean_ped_delay_s=statistics.fmean(peds) if peds else math.nan,
            collisions=max(self.collisions, attr(safety, "collisions")),
            emergency_stops=attr(safety, "emergencyStops"),
            emergency_braking=attr(safety, "emergencyBraking"),
            teleports=attr(teleports, "total"),
            unfinished=unfinished,
            violations=self.monitor.summary(),
            sim_time_s=self.t,
        )


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return math.nan
    k = max(0, math.ceil(q * len(values)) - 1)
    return values[k]


def sumo_env() -> dict[str, str]:
    """Environment for SUMO child processes (SUMO_HOME from the eclipse-sumo package)."""
    env = dict(os.environ)
    try:
        import sumo

        env.setdefault("SUMO_HOME", str(sumo.SUMO_HOME))
    except ImportError:
        pass
    return env
