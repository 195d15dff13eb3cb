"""The gateway's control loop for one junction, without I/O: a poll in, writes and events out.

Per poll of the cabinet (:class:`~protocols.signal_controller.ControllerState`):

1. the guard reviews the state: trouble (a failed detector, another timing sheet, a tripped
   conflict monitor) means :class:`~edge.traffic_signal.safety.Fallback` — write ``mode_request 0``
   and report it once; trouble gone for long enough means
   :class:`~edge.traffic_signal.safety.TakeControl`;
2. while the gateway has the junction, the policy proposes, the guard admits, and the
   :class:`~edge.traffic_signal.safety.Command` is written — the whole block with a new ``cmd_seq``
   when the plan changed, otherwise only the heartbeat;
3. every stage the gateway ended is reported as a :class:`PlanChange` (the green it got, what
   follows, why, and what the guard changed), every fallback and every return as a
   :class:`FallbackChange`.

The app (:mod:`edge.traffic_signal.app`) does the I/O: it writes what :meth:`SignalControl.poll`
returns through the actuator path and turns the events into envelopes. The benchmark runs the
same object against the simulated cabinet in-process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edge.traffic_signal.policy import Policy
from edge.traffic_signal.safety import Command, Fallback, Guard
from protocols.junction import JunctionSpec
from protocols.modbus import Value
from protocols.signal_controller import CommandStatus, ControllerState, Interval, Mode


@dataclass(frozen=True)
class PlanChange:
    """The gateway ended a stage: what it got and what comes next."""

    time_s: float  # cabinet time the green ended
    phase: str
    green_s: float
    next_phase: str
    amber_s: float
    all_red_s: float
    controller: str
    reason: str
    adjustments: tuple[str, ...]
    queues: dict[str, int]


@dataclass(frozen=True)
class FallbackChange:
    """The junction went to the cabinet's fixed plan (``entered``), or came back (``left``)."""

    state: str  # "entered" | "left"
    reason: str
    detectors: tuple[str, ...]
    time_s: float | None  # cabinet time, when known


Event = PlanChange | FallbackChange


@dataclass
class Outcome:
    writes: list[dict[str, Value]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    decision_s: float = 0.0


class SignalControl:
    def __init__(self, junction: JunctionSpec, policy: Policy, guard: Guard) -> None:
        self.j = junction
        self.policy = policy
        self.guard = guard
        self.seq = 0
        self.heartbeat = 0
        self.last_command: Command | None = None
        self._seen: tuple[int, Interval, float] | None = None  # phase, interval, green so far
        self._queues: dict[str, int] = {}

    def poll(self, state: ControllerState) -> Outcome:
        started = time.perf_counter()
        out = Outcome()
        review = self.guard.review(state)
        if review is not None:
            out.writes.append(review.registers())
        if isinstance(review, Fallback):
            out.events.append(
                FallbackChange("entered", review.reason, review.detectors, state.time_s)
            )
            self.last_command = None
        if self.guard.controlling:
            ended = self.guard.recovered()
            if ended is not None:
                out.events.append(FallbackChange("left", ended.reason, (), state.time_s))
            self._command(state, out)
        self._report_stage(state, out)
        self._seen = (state.phase, state.interval, state.green_elapsed_s)
        out.decision_s = time.perf_counter() - started
        return out

    def link_lost(self, why: str, now_s: float | None = None) -> Outcome:
        """Polls or writes fail: report the fallback once (the cabinet's watchdog does it)."""
        out = Outcome()
        fallback = self.guard.mark_link_lost(why)
        if fallback is not None:
            out.events.append(FallbackChange("entered", fallback.reason, (), now_s))
        self.last_command = None
        return out

    def _command(self, state: ControllerState, out: Outcome) -> None:
        proposal = self.policy.propose(state)
        command = self.guard.admit(state, proposal)
        self.heartbeat += 1
        if (
            command.same_plan(self.last_command)
            and state.cmd_seq_applied == self.seq % 65536
            and state.cmd_status is CommandStatus.APPLIED
        ):
            out.writes.append({"heartbeat": self.heartbeat % 65536})
        else:
            self.seq += 1
            out.writes.append(command.registers(self.seq, self.heartbeat))
        self.last_command = command
        self._queues = {
            d.name: state.detectors[i].queue
            for i, d in enumerate(self.j.detectors)
            if i < len(state.detectors)
        }

    def _report_stage(self, state: ControllerState, out: Outcome) -> None:
        """One :class:`PlanChange` when a green the gateway shaped gives way."""
        if self._seen is None or state.mode is not Mode.REMOTE:
            return
        was_phase, was_interval, was_green = self._seen
        ended = was_interval is Interval.GREEN and (
            state.interval is not Interval.GREEN or state.phase != was_phase
        )
        if not ended or self.last_command is None:
            return
        nxt = state.next_phase if state.interval is not Interval.GREEN else state.phase
        amber, all_red = self.j.transition(was_phase, nxt)
        # a whole intergreen between two polls: the green is known to the last poll only
        green = state.green_elapsed_s if state.phase == was_phase else was_green
        cmd = self.last_command
        out.events.append(
            PlanChange(
                time_s=state.time_s - state.interval_elapsed_s,
                phase=self.j.phases[was_phase].name,
                green_s=green,
                next_phase=self.j.phases[nxt].name,
                amber_s=amber,
                all_red_s=all_red,
                controller=self.policy.name,
                reason=cmd.reason,
                adjustments=cmd.adjustments,
                queues=dict(self._queues),
            )
        )
