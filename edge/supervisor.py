"""Runs the gateway's plug-ins under ``asyncio.TaskGroup`` with a restart policy each.

A child is an ``async`` callable. When it raises, the supervisor logs it once (with its
traceback when it is not one of ours), counts it, records it for ``/healthz`` and ``/metrics``,
waits a capped, jittered backoff on the injected clock and starts it again — unless its policy
says otherwise or the error is a :class:`~edge.errors.PermanentError` (retrying a wrong register
map will not help). A child that ran longer than ``healthy_after_s`` before failing starts again
from the shortest backoff. A crashed child makes the gateway *degraded*
(:meth:`Supervisor.degraded`) while it waits to start again and until it has run
``healthy_after_s`` since.

This module holds the only broad ``except`` in the gateway: a plug-in's bug must not take its
neighbours down. Cancellation is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edge.backoff import Backoff
from edge.clock import Clock
from edge.errors import EdgeError, PermanentError

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Sequence[asyncio.Task[Any]], again_every_s: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again those still running.

    One cancel is not always enough on Python 3.11: ``asyncio.wait_for`` (pymodbus waits for
    each reply with it) returns the result instead of raising when the cancel lands in the same
    loop turn as the reply (CPython gh-86296, fixed in 3.12), and a poll loop then runs on.
    """
    pending = [t for t in tasks if not t.done()]
    while pending:
        for t in pending:
            t.cancel()
        await asyncio.wait(pending, timeout=again_every_s)
        pending = [t for t in pending if not t.done()]


class RestartPolicy(StrEnum):
    ALWAYS = "always"  # restart even after a clean return
    ON_FAILURE = "on_failure"  # restart after an exception, stop after a clean return
    NEVER = "never"  # run once


class ChildState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class ChildSpec:
    name: str
    role: str
    run: Callable[[], Awaitable[None]]
    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    healthy_after_s: float = 60.0


@dataclass
class ChildStatus:
    role: str
    state: ChildState = ChildState.STARTING
    restarts: int = 0
    last_error: str | None = None
    since: float = 0.0
    crashes: int = 0  # ended with an exception (restarted or not)
    crashed_at: float | None = None
    healthy_after_s: float = 60.0


def describe(err: BaseException) -> str:
    """One line for people: the first error inside exception groups (a task group's failure),
    with its notes (which task it was in)."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    text = f"{type(err).__name__}: {err}"
    notes = "; ".join(getattr(err, "__notes__", None) or [])
    return f"{text} ({notes})" if notes else text


@dataclass
class Supervisor:
    clock: Clock
    status: dict[str, ChildStatus] = field(default_factory=dict)

    def healthy(self) -> bool:
        """True unless some child failed for good."""
        return all(s.state is not ChildState.FAILED for s in self.status.values())

    def degraded(self) -> list[str]:
        """Children that crashed and wait to start again, or started again less than their
        ``healthy_after_s`` ago: one reason each (empty: none)."""
        now = self.clock.monotonic()
        out = []
        for name, st in self.status.items():
            if st.crashed_at is None:
                continue
            if st.state is ChildState.BACKOFF:
                out.append(
                    f"{st.role} {name} crashed ({st.last_error}); starting again "
                    f"({st.crashes} crashes)"
                )
            elif st.state is ChildState.RUNNING and now - st.since < st.healthy_after_s:
                out.append(
                    f"{st.role} {name} started again {now - st.crashed_at:.0f} s after a crash "
                    f"({st.last_error}; {st.crashes} crashes)"
                )
        return out

    async def supervise(self, spec: ChildSpec) -> None:
        """Run ``spec`` until it stops for good or the task is cancelled."""
        status = self.status.setdefault(
            spec.name, ChildStatus(role=spec.role, healthy_after_s=spec.healthy_after_s)
        )
        backoff = Backoff(spec.backoff_initial_s, max(spec.backoff_max_s, spec.backoff_initial_s))
        while True:
            status.state, status.since = ChildState.RUNNING, self.clock.monotonic()
            started = status.since
            try:
                await spec.run()
            except asyncio.CancelledError:
                status.state = ChildState.STOPPED
                raise
            except PermanentError as err:
                status.state, status.last_error = ChildState.FAILED, str(err)
                log.error("%s %s stopped: %s", spec.role, spec.name, err.for_humans())
                return
            except Exception as err:  # the supervisor is the one place allowed to catch all
                what = describe(err)
                # the same error again soon after a restart: its traceback is in the log
                again = (
                    what == status.last_error
                    and self.clock.monotonic() - started < spec.healthy_after_s
                )
                status.last_error = what
                status.crashes += 1
                status.crashed_at = self.clock.monotonic()
                if isinstance(err, EdgeError):
                    log.warning("%s %s failed: %s", spec.role, spec.name, err.for_humans())
                elif again:
                    log.error(
                        "%s %s crashed again: %s (%d crashes)",
                        spec.role,
                        spec.name,
                        what,
                        status.crashes,
                    )
                else:
                    log.exception("%s %s crashed", spec.role, spec.name)
                if spec.restart is RestartPolicy.NEVER:
                    status.state = ChildState.FAILED
                    return
            else:
                if spec.restart is not RestartPolicy.ALWAYS:
                    status.state = ChildState.STOPPED
                    return
            if self.clock.monotonic() - started >= spec.healthy_after_s:
                backoff.reset()
            delay = backoff.next_delay()
            status.state, status.restarts = ChildState.BACKOFF, status.restarts + 1
            log.info("%s %s restarts in %.1f s", spec.role, spec.name, delay)
            await self.clock.sleep(delay)

    async def run_until(self, specs: Iterable[ChildSpec], stop: asyncio.Event) -> None:
        """Run ``specs`` in one task group until ``stop`` is set, then cancel them and wait."""
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self.supervise(s), name=s.name) for s in specs]
            await stop.wait()
            await cancel_and_wait(tasks)

    async def run_to_end(self, specs: Iterable[ChildSpec]) -> None:
        """Run ``specs`` in one task group until each returns by itself (drain stages)."""
        async with asyncio.TaskGroup() as tg:
            for s in specs:
                tg.create_task(self.supervise(s), name=s.name)
