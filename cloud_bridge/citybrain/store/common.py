"""What both store back ends share: the values the ingest hands them and gets back, the
:class:`Store` protocol, and the pieces of their SQL and bookkeeping that are the same.

Tables (the same in both back ends, and giving the same answers)::

    events        one row per envelope id (the id is unique: duplicates are never stored);
                  ``n`` is the storage order; session, seq and pos come from the envelope's link
    resent        (site, gateway, session, seq) of duplicates that came in a later session than
                  their stored copy, so a gap check counts every sequence number the link used
    dead_letters  what could not be stored, with the reason
    gateways      each gateway's last state (online/offline) and session, from births/deaths
    gaps          sequence numbers missing from ended sessions
    replies       command replies from the gateways
    workers       per ingest worker: stored, duplicates, dead letters

Every :meth:`Store.write` is one transaction; the ingest acknowledges a batch to the broker only
after it returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cloud_bridge.errors import TransientBridgeError
from protocols import envelope as env
from protocols.commands import CommandReply
from protocols.session import GatewayState

SessionKey = tuple[str, str, int]  # site, gateway, session


class StoreError(TransientBridgeError):
    """The database cannot be reached or written; the batch is kept and retried."""


@dataclass(frozen=True)
class Incoming:
    envelope: env.EnvelopeModel
    raw: bytes


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str


@dataclass
class Batch:
    events: list[Incoming] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    states: list[GatewayState] = field(default_factory=list)
    replies: list[CommandReply] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.dead) + len(self.states) + len(self.replies)


@dataclass(frozen=True)
class WriteResult:
    stored: int
    duplicates: int
    sessions: set[SessionKey]


@dataclass(frozen=True)
class Gap:
    site: str
    gateway: str
    session: int
    missing: int
    highest: int


@dataclass
class Summary:
    events: dict[str, int]
    duplicates: int
    dead_letters: int
    gateways: list[dict[str, Any]]
    gaps: list[Gap]
    workers: dict[str, dict[str, int]]

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "gateways": self.gateways,
            "gaps": [g.__dict__ for g in self.gaps],
            "workers": self.workers,
        }


class Store(Protocol):
    async def write(self, batch: Batch, worker: str) -> WriteResult: ...

    async def check_gaps(self, sessions: set[SessionKey]) -> tuple[list[Gap], set[SessionKey]]:
        """Gaps of the given sessions that have ended; returns them and the sessions still open."""
        ...

    async def summary(self) -> Summary: ...

    async def close(self) -> None: ...


def unique(events: Iterable[Incoming]) -> tuple[list[Incoming], list[Incoming]]:
    """First copy of each id, and the copies after it (duplicates inside one batch)."""
    seen: set[Any] = set()
    first: list[Incoming] = []
    again: list[Incoming] = []
    for e in events:
        (again if e.envelope.id in seen else first).append(e)
        seen.add(e.envelope.id)
    return first, again


def link_columns(e: env.EnvelopeModel) -> tuple[int | None, int | None, int | None]:
    return (e.link.session, e.link.seq, e.link.pos) if e.link else (None, None, None)


def resent_rows(
    dups: Iterable[Incoming], stored: dict[str, tuple[int | None, int | None]]
) -> list[tuple[str, str, int, int]]:
    """Duplicates sent in another session than their stored copy: their seq was used too."""
    rows = []
    for d in dups:
        e = d.envelope
        if e.link is None:
            continue
        if stored.get(str(e.id)) != (e.link.session, e.link.seq):
            rows.append((e.site, e.gateway, e.link.session, e.link.seq))
    return rows


def sessions_of(events: Iterable[Incoming]) -> set[SessionKey]:
    return {
        (i.envelope.site, i.envelope.gateway, i.envelope.link.session)
        for i in events
        if i.envelope.link
    }


# The state upsert keeps the highest session; a death counts only for the session it ends.
STATE_WHERE = (
    "WHERE excluded.session > gateways.session OR "
    "(excluded.session = gateways.session AND excluded.state = 'offline')"
)

GAPS_SELECT = """
SELECT site, gateway, session, max(seq) AS top, count(DISTINCT seq) AS seen FROM (
  SELECT site, gateway, session, seq FROM events
   WHERE site = {p} AND gateway = {p} AND session = {p}
  UNION ALL
  SELECT site, gateway, session, seq FROM resent
   WHERE site = {p} AND gateway = {p} AND session = {p}
) s GROUP BY site, gateway, session
"""


def ended(state: tuple[str, int] | None, session: int) -> bool:
    if state is None:
        return False
    current_state, current = state
    return current > session or (current == session and current_state == "offline")


def make_summary(
    events: dict[str, int],
    dead: int,
    gws: Sequence[Sequence[Any]],
    gaps: Sequence[Sequence[Any]],
    workers: Sequence[Sequence[Any]],
) -> Summary:
    def iso(v: Any) -> str:
        return v.isoformat() if isinstance(v, datetime) else str(v)

    return Summary(
        events=events,
        duplicates=sum(int(w[2]) for w in workers),
        dead_letters=dead,
        gateways=[
            {"site": s, "gateway": g, "state": st, "session": int(n), "since": iso(t), "reason": r}
            for s, g, st, n, t, r in gws
        ],
        gaps=[Gap(s, g, int(n), int(m), int(h)) for s, g, n, m, h in gaps],
        workers={
            w: {"stored": int(a), "duplicates": int(b), "dead": int(c)} for w, a, b, c in workers
        },
    )
