"""What tells the open operator pages that a section changed.

The feed asks the store for its fingerprints (:meth:`OperatorReads.versions`) when nudged — the
ingest of this process stored states, dead letters or alarms (:meth:`Feed.on_batch`) — and every
``poll_s`` anyway, for what other ingest workers stored and for gaps (found by the gap check, not
by a batch). Every open page then hears the names of the sections that changed and fetches them
again. Bursts are coalesced: checks are at least ``min_interval_s`` apart, and a page that has
not yet taken its news gets the union of what changed since (a set of at most four names: the
overflow policy is *merge*, nothing is queued without bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from cloud_bridge.citybrain.store import Batch, StoreError
from cloud_bridge.citybrain.store.operator_common import OperatorReads, Versions

log = logging.getLogger(__name__)


class Listener:
    """One open page's pending news."""

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.closed = False
        self._event = asyncio.Event()

    def tell(self, sections: list[str]) -> None:
        self.pending.update(sections)
        self._event.set()

    def wake(self) -> None:
        self._event.set()

    async def next(self, timeout_s: float) -> set[str]:
        """The sections changed since the last call (empty: woken, or ``timeout_s`` passed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._event.wait()
        self._event.clear()
        news, self.pending = self.pending, set()
        return news


class Feed:
    def __init__(
        self,
        reads: OperatorReads,
        *,
        poll_s: float = 1.0,
        min_interval_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reads = reads
        self.poll_s = poll_s
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.versions: Versions | None = None
        self.healthy = False
        self._listeners: set[Listener] = set()
        self._nudged = asyncio.Event()

    def listen(self) -> Listener:
        listener = Listener()
        self._listeners.add(listener)
        return listener

    def leave(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def wake_all(self) -> None:
        """Let every open page check that its operator is still signed in."""
        for listener in self._listeners:
            listener.wake()

    def close(self) -> None:
        for listener in self._listeners:
            listener.closed = True
            listener.wake()

    def nudge(self) -> None:
        self._nudged.set()

    def on_batch(self, batch: Batch) -> None:
        """The ingest's hook (``Ingest.on_batch``): called after a batch was committed."""
        if batch.states or batch.dead or any(i.envelope.kind == "alarm" for i in batch.events):
            self.nudge()

    async def check(self) -> list[str]:
        """Ask the store once; tell every open page what changed. Returns the sections."""
        try:
            now = await self.reads.versions()
        except StoreError as err:
            if self.healthy:
                log.warning("operator page: cannot read the store: %s", err)
            self.healthy = False
            return []
        if not self.healthy:
            log.info("operator page: the store answers")
        self.healthy = True
        changed = now.changed(self.versions)
        self.versions = now
        if changed:
            for listener in self._listeners:
                listener.tell(changed)
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = self.clock()
            self._nudged.clear()
            await self.check()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._nudged.wait()
            spent = self.clock() - started
            if spent < self.min_interval_s:
                await asyncio.sleep(self.min_interval_s - spent)
