"""The safety guard: the only way a plan reaches a signal controller.

Controllers (:mod:`edge.traffic_signal.policy`) *propose*; this module *decides*. Everything the
gateway writes to a cabinet is a :class:`Decision` made here — a :class:`Command` (a plan),
:class:`TakeControl` or :class:`Fallback` — and those classes cannot be built anywhere else
(their constructor checks a token private to this module). The writer
(:mod:`edge.traffic_signal.app`) writes ``decision.registers()`` and nothing else.

Rules, for any proposal and any cabinet state:

1. **Conflicting movements are never green together**: commands name phases of the timing
   sheet, whose groups were checked pairwise against the conflict list when it was loaded; a
   proposal that names no phase, or the phase itself as its successor, becomes the fixed
   plan's successor.
2. **Minimum and maximum green**: every green in a command lies within the phase's
   ``[min_green_s, max_green_s]``.
3. **Intergreens**: the amber and all-red of every command are the sheet's
   :meth:`~protocols.junction.JunctionSpec.transition` for that pair of phases — never the
   proposal's.
4. **Pedestrians served within their maximum wait**: while a button waits, the committed plan
   must reach the walk by ``ped_max_wait_s`` (less ``ped_margin_s`` for the poll and write
   latency) — even if the gateway vanished right after writing it (the cabinet then serves a
   waiting pedestrian first). If it would not, the guard makes the walk phase next and, if that
   is still too late, shortens the green to the latest end that is in time (never below the
   minimum green, nor before now).
5. **Fallback to the cabinet's fixed plan** when a detector fails (the cabinet's fault bits,
   or readings no detector can produce), when the cabinet runs a timing sheet other than ours,
   when its conflict monitor tripped, or when the gateway lost the cabinet (no poll, a failed
   write, or the cabinet's watchdog expired). Control is taken back only after ``recover_s``
   without any of these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from protocols.junction import JunctionSpec
from protocols.modbus import Value
from protocols.signal_controller import ControllerState, Fault, Interval, Mode

_TOKEN: Final = object()


def _check(token: object) -> None:
    if token is not _TOKEN:
        raise TypeError("decisions are made by edge.traffic_signal.safety.Guard only")


@dataclass(frozen=True)
class Proposal:
    """What a controller would like: the green of the phase it addresses (the one running, or
    the one being entered during an intergreen), then ``next_phase`` for ``next_green_s``."""

    green_s: float
    next_phase: int
    next_green_s: float
    reason: str = ""


@dataclass(frozen=True)
class Command:
    """A plan the guard admitted (times in seconds)."""

    phase: int
    green_s: float
    next_phase: int
    amber_s: float
    all_red_s: float
    next_green_s: float
    reason: str
    adjustments: tuple[str, ...]
    _token: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(self._token)

    def registers(self, seq: int, heartbeat: int) -> dict[str, Value]:
        """The command block (written with one fc 16)."""
        return {
            "heartbeat": heartbeat % 65536,
            "cmd_seq": seq % 65536,
            "cmd_phase": self.phase,
            "cmd_green": self.green_s,
            "cmd_next_phase": self.next_phase,
            "cmd_amber": self.amber_s,
            "cmd_all_red": self.all_red_s,
            "cmd_next_green": self.next_green_s,
        }

    def same_plan(self, other: Command | None) -> bool:
        return other is not None and (
            self.phase,
            self.green_s,
            self.next_phase,
            self.next_green_s,
        ) == (other.phase, other.green_s, other.next_phase, other.next_green_s)


@dataclass(frozen=True)
class TakeControl:
    """Ask the cabinet to follow the gateway (mode_request 1)."""

    _token: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(self._token)

    def registers(self) -> dict[str, Value]:
        return {"mode_request": 1}


@dataclass(frozen=True)
class Fallback:
    """Hand the junction to the cabinet's fixed plan (mode_request 0), and why."""

    reason: str
    detectors: tuple[str, ...]
    _token: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(self._token)

    def registers(self) -> dict[str, Value]:
        return {"mode_request": 0}


Decision = Command | TakeControl | Fallback


class Guard:
    """Admits proposals as :class:`Command` s and decides when to fall back (see module doc)."""

    def __init__(
        self,
        junction: JunctionSpec,
        *,
        ped_margin_s: float = 2.0,
        recover_s: float = 30.0,
    ) -> None:
        if len(junction.ped_phases) > 1:
            raise ValueError(
                f"junction {junction.name}: the guard supports one pedestrian phase "
                f"(an all-round walk stage); the sheet has {len(junction.ped_phases)}"
            )
        self.j = junction
        self.ped_margin_s = ped_margin_s
        self.recover_s = recover_s
        self.table_id = junction.table_id()
        self._trouble_until: float | None = None  # cabinet time before which we stay out
        self._link_was_lost = False
        self.falling_back: Fallback | None = None
        self.controlling = False

    # -- fallback ------------------------------------------------------------------------

    def trouble(self, state: ControllerState) -> Fallback | None:
        """A reason to leave the junction to the cabinet, judged from one poll."""
        j = self.j
        if state.table_id != self.table_id or state.phase_count != len(j.phases):
            return self._fallback(
                f"the cabinet runs timing sheet {state.table_id:08x} with {state.phase_count} "
                f"phases; ours is {self.table_id:08x} with {len(j.phases)}",
            )
        if Fault.CONFLICT in state.faults:
            return self._fallback("the cabinet's conflict monitor tripped")
        failed = [d.name for i, d in enumerate(j.detectors) if state.detector_faults & (1 << i)]
        if failed:
            return self._fallback("detector failed (cabinet fault flag)", tuple(failed))
        implausible = [
            d.name
            for d, s in zip(j.detectors, state.detectors, strict=False)
            if not 0 <= s.occupancy_pct <= 100
        ]
        if implausible:
            return self._fallback("detector readings no detector can produce", tuple(implausible))
        if not (0 <= state.phase < len(j.phases) and 0 <= state.next_phase < len(j.phases)):
            return self._fallback(f"the cabinet reports phase {state.phase}, not in the sheet")
        return None

    def link_lost(self, why: str) -> Fallback:
        """The gateway cannot reach the cabinet: its watchdog takes the junction back."""
        return self._fallback(f"controller link lost ({why}); the cabinet's watchdog falls back")

    def _fallback(self, reason: str, detectors: tuple[str, ...] = ()) -> Fallback:
        return Fallback(reason, detectors, _TOKEN)

    def review(self, state: ControllerState) -> Fallback | TakeControl | None:
        """Per poll: a :class:`Fallback` to send (at the first sight of a trouble),
        :class:`TakeControl` once the trouble has been gone for ``recover_s`` and the cabinet
        is not following us, or None. Sets :attr:`controlling`."""
        problem = self.trouble(state)
        if self._link_was_lost:
            self._link_was_lost = False
            self._trouble_until = state.time_s + self.recover_s
        if problem is not None:
            self.controlling = False
            self._trouble_until = state.time_s + self.recover_s
            if self.falling_back is None or self.falling_back.reason != problem.reason:
                self.falling_back = problem
                return problem
            return None
        if state.mode is Mode.FALLBACK and self.controlling:
            # we thought we had the junction, but our writes came too late for the watchdog
            self.controlling = False
            self._trouble_until = state.time_s + self.recover_s
            late = self._fallback("the cabinet's watchdog expired: the gateway's writes came late")
            if self.falling_back is None:
                self.falling_back = late
                return late
            return None
        if self._trouble_until is not None and state.time_s < self._trouble_until:
            self.controlling = False
            return None
        self._trouble_until = None
        self.controlling = True
        if state.mode is not Mode.REMOTE:
            return TakeControl(_TOKEN)
        return None

    def mark_link_lost(self, why: str) -> Fallback | None:
        """The link is down: one :class:`Fallback` per outage (None while already out).
        Control is taken back ``recover_s`` after the link works again."""
        fallback = self.link_lost(why)
        self.controlling = False
        self._link_was_lost = True
        if self.falling_back is not None and self.falling_back.reason == fallback.reason:
            return None
        self.falling_back = fallback
        return fallback

    def recovered(self) -> Fallback | None:
        """The fallback that just ended, once the gateway has control again."""
        ended, self.falling_back = self.falling_back, None
        return ended

    # -- plans ---------------------------------------------------------------------------

    def admit(self, state: ControllerState, proposal: Proposal) -> Command:
        """The safe command closest to ``proposal`` for the cabinet in ``state``."""
        j = self.j
        n = len(j.phases)
        notes: list[str] = []
        if state.interval is Interval.GREEN:
            p = state.phase
            green_start = state.time_s - state.green_elapsed_s
        else:
            p = state.next_phase
            amber, all_red = j.transition(state.phase, p)
            left = amber + all_red - state.interval_elapsed_s
            if state.interval is Interval.ALL_RED:
                left = all_red - state.interval_elapsed_s
            green_start = state.time_s + max(0.0, left)
        q = proposal.next_phase
        if not (isinstance(q, int) and 0 <= q < n) or q == p:
            q = self._successor(p)
            notes.append(
                f"next phase {proposal.next_phase!r} is not allowed after {p}; fixed plan's"
            )
        g = self._clamp(p, proposal.green_s, notes, "green")
        gq = self._clamp(q, proposal.next_green_s, notes, "next green")
        if state.ped_demand and j.ped_phases and p not in j.ped_phases:
            (walk,) = j.ped_phases
            deadline = state.time_s + j.ped_max_wait_s - state.ped_wait_s - self.ped_margin_s
            ran = state.time_s - green_start  # a green cannot end before now
            if q != walk and self._walk_after(green_start, p, max(g, ran), q, gq) > deadline:
                q, gq = walk, j.phases[walk].min_green_s
                notes.append("pedestrians waiting: walk next")
            latest = deadline - sum(j.transition(p, q)) - green_start
            if q == walk and g > latest:
                g = max(j.phases[p].min_green_s, ran, latest)
                notes.append("pedestrians waiting: green ends early")
        amber, all_red = j.transition(p, q)
        return Command(
            phase=p,
            green_s=round(g, 1),
            next_phase=q,
            amber_s=amber,
            all_red_s=all_red,
            next_green_s=round(gq, 1),
            reason=proposal.reason,
            adjustments=tuple(notes),
            _token=_TOKEN,
        )

    def _walk_after(self, green_start: float, p: int, g: float, q: int, gq: float) -> float:
        """When walk starts at the latest under the plan p(g) → q(gq) → walk."""
        j = self.j
        (walk,) = j.ped_phases
        return green_start + g + sum(j.transition(p, q)) + gq + sum(j.transition(q, walk))

    def _clamp(self, phase: int, green: float, notes: list[str], what: str) -> float:
        ph = self.j.phases[phase]
        try:
            value = float(green)
        except (TypeError, ValueError):
            value = ph.min_green_s
        if not math.isfinite(value):
            value = ph.min_green_s if value != math.inf else ph.max_green_s
        clamped = min(max(value, ph.min_green_s), ph.max_green_s)
        if clamped != value:
            notes.append(f"{what} {value:g} s held to {clamped:g} s ({ph.name} limits)")
        return clamped

    def _successor(self, phase: int) -> int:
        j = self.j
        order = [j.phase_index(n) for n in j.fixed_plan]
        return order[(order.index(phase) + 1) % len(order)] if phase in order else order[0]
