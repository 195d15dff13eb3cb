"""App ``traffic_signal``: adaptive control of one junction through its signal controller.

::

    modbus source ──poll──▶ ControllerState ──▶ SignalControl ──▶ writes ──▶ actuators ──▶ cabinet
                                                  │ policy proposes,              (fc 16 plan block,
                                                  │ guard decides                  fc 6 heartbeat)
                                                  └──▶ signal_plan / signal_fallback envelopes

Every poll of the controller device arrives as a reading batch; the control loop
(:class:`~edge.traffic_signal.control.SignalControl`) turns it into register writes — made only by
the safety guard (:mod:`edge.traffic_signal.safety`) — and events. This module only does the I/O: it
writes through ``ctx.actuators`` (the Modbus source owns the connection and reads every write
back) and sends the events. When no poll arrives for ``link_timeout_s``, or a write fails, the
link is lost: the cabinet's watchdog takes the junction back to its fixed plan, and a
``signal_fallback`` event says so.
"""

from __future__ import annotations

import asyncio
import logging

from edge.errors import EdgeError
from edge.plugin import AppContext, Plugin
from edge.readings import ReadingBatch
from edge.traffic_signal.config import TrafficSignalConfig
from edge.traffic_signal.control import Event, FallbackChange, PlanChange, SignalControl
from edge.traffic_signal.policy import AdaptivePolicy, MaxPressurePolicy, Policy
from edge.traffic_signal.safety import Guard
from protocols import envelope as env
from protocols.signal_controller import ControllerState

log = logging.getLogger(__name__)


class TrafficSignalApp(Plugin):
    def __init__(self, config: TrafficSignalConfig, ctx: AppContext) -> None:
        self.config = config
        self.ctx = ctx
        self.junction = config.spec()
        policy: Policy = (
            AdaptivePolicy(self.junction)
            if config.controller == "cityedge"
            else MaxPressurePolicy(self.junction)
        )
        self.guard = Guard(
            self.junction, ped_margin_s=config.ped_margin_s, recover_s=config.recover_s
        )
        self.control = SignalControl(self.junction, policy, self.guard)
        self._last_poll = ctx.clock.monotonic()
        self._last_cabinet_time: float | None = None
        self._link_down = False
        self.polls = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            watchdog = tg.create_task(self._watch_link(), name=f"{self.config.name}-link")
            try:
                async for batch in self.ctx.inbox:
                    if batch.device == self.config.device:
                        await self.handle(batch)
            finally:
                watchdog.cancel()

    async def handle(self, batch: ReadingBatch) -> None:
        values = {r.point: r.value for r in batch.readings}
        try:
            state = ControllerState.from_points(values, len(self.junction.detectors))
        except ValueError as err:
            log.warning("device %s: unusable poll: %s", self.config.device, err)
            return
        self._last_poll = self.ctx.clock.monotonic()
        self._last_cabinet_time = state.time_s
        self._link_down = False
        self.polls += 1
        outcome = self.control.poll(state)
        for write in outcome.writes:
            try:  # one request each; the heartbeat alone is one register, logged at debug
                await self.ctx.actuators.write_many(self.config.device, write)
            except EdgeError as err:
                log.warning("device %s: write failed: %s", self.config.device, err.message)
                lost = self.control.link_lost(f"write failed: {err.message}", state.time_s)
                await self._send(lost.events, batch.time)
                self._link_down = True
                break
        await self._send(outcome.events, batch.time, outcome.decision_s)

    async def _watch_link(self) -> None:
        clock = self.ctx.clock
        timeout = self.config.link_timeout_s
        while True:
            await clock.sleep(timeout / 2)
            silent = clock.monotonic() - self._last_poll
            if silent > timeout and not self._link_down:
                self._link_down = True
                lost = self.control.link_lost(
                    f"no poll of {self.config.device} for {silent:.1f} s", self._last_cabinet_time
                )
                await self._send(lost.events, clock.time())

    async def _send(self, events: list[Event], time: float, decision_s: float = 0.0) -> None:
        emitter = self.ctx.emitter
        name = self.junction.name
        for e in events:
            if isinstance(e, PlanChange):
                log.debug(
                    "junction %s: %s green %.1f s, then %s (%s)",
                    name,
                    e.phase,
                    e.green_s,
                    e.next_phase,
                    e.reason,
                )
                plan = env.SignalPlanPayload(
                    junction=name,
                    controller=e.controller,
                    phase=e.phase,
                    green_s=e.green_s,
                    next_phase=e.next_phase,
                    amber_s=e.amber_s,
                    all_red_s=e.all_red_s,
                    reason=e.reason,
                    adjustments=list(e.adjustments),
                    queues=e.queues,
                    decision_ms=round(decision_s * 1000, 3),
                )
                await emitter.send(
                    emitter.event(env.SignalPlanEnvelope, self.config.device, time, plan)
                )
            elif isinstance(e, FallbackChange):
                (log.warning if e.state == "entered" else log.info)(
                    "junction %s: fallback %s: %s%s",
                    name,
                    e.state,
                    e.reason,
                    f" (detectors {', '.join(e.detectors)})" if e.detectors else "",
                )
                fallback = env.SignalFallbackPayload(
                    junction=name,
                    state=env.SignalFallbackState(e.state),
                    reason=e.reason,
                    detectors=list(e.detectors),
                )
                await emitter.send(
                    emitter.event(env.SignalFallbackEnvelope, self.config.device, time, fallback)
                )
