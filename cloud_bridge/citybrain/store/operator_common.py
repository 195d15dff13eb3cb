"""What the operator's page asks of the city brain's store: read-only queries, the indexes they
need, and one table of its own. Both back ends answer the same questions the same way
(:mod:`.operator_sqlite`, :mod:`.operator_pg`); the page opens its own read-only connection
(:func:`open_reads`), so its queries never wait behind, or block, the ingest's writes.

The table it adds (written by the ingest in the same transaction as the gateways' states)::

    gateway_sessions  one row per (site, gateway, session): the birth's time and outbox figures
                      (depth, drops, ...) and, once the session ended, the death's time and reason

The indexes its queries need (made with the ingest's schema; a partitioned ``events`` table
carries them on every partition — PostgreSQL makes an index on the parent on each partition)::

    events_alarm_time      events (time) WHERE kind = 'alarm'        alarm history, open alarms
                           (SQLite: julianday(time), its times are text with any UTC offset)
    events_alarm_received  events (received_at) WHERE kind = 'alarm' has a new alarm come?
    events_device_time     events (site, gateway, device, kind, time) a point's time series
                           (SQLite: julianday(time))
    dead_letters_topic     dead_letters (topic)                       why a gateway has a gap
                           (PostgreSQL: text_pattern_ops, for LIKE 'prefix%')

and the ones the ingest already has: ``events_session`` (site, gateway, session, seq) gives a
gateway's last envelope (last seen) and its recent points; ``dead_letters`` by ``n``; the
``gateways`` and ``gaps`` tables by their keys. The two alarm indexes are partial: they cost a
write only for an alarm. ``events_device_time`` is on every envelope: it is the price of a time
series of any point (the benchmarks measure the ingest with it).

Open alarms: the latest alarm event of each (site, gateway, device, rule), in event time (then
id), whose state is ``raised``. "Last seen" of a gateway: the later of its last state message
and the envelope with the highest sequence number of its current session.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from protocols.session import GatewayState

#: Severities, most urgent first (the page's order).
SEVERITIES: Final = ("critical", "major", "minor", "warning", "info")
SECTIONS: Final = ("gateways", "alarms", "dead_letters", "gaps")
MAX_LIMIT: Final = 1000
MAX_BUCKETS: Final = 1000
PREVIEW_BYTES: Final = 240
#: Dead letters read to explain one gap (the newest of the gateway's prefix).
GAP_EVIDENCE_ROWS: Final = 500
#: Envelopes of a gateway's current session read to list its devices' points.
RECENT_FOR_POINTS: Final = 500

StateFilter = Literal["online", "offline"] | None


def iso(value: Any) -> str | None:
    """A time from either back end (datetime or ISO text) as ISO 8601 in UTC; None stays."""
    if value is None:
        return None
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat()


def as_json_value(value: Any) -> Any:
    """A JSON column as Python (PostgreSQL's jsonb is parsed already, SQLite's is text)."""
    if value is None or isinstance(value, dict | list):
        return value
    return json.loads(value)


@dataclass(frozen=True)
class Versions:
    """One fingerprint per section of the page: a section whose fingerprint changed is sent
    again to the open pages."""

    gateways: str
    alarms: str
    dead_letters: str
    gaps: str

    def changed(self, before: Versions | None) -> list[str]:
        if before is None:
            return list(SECTIONS)
        return [s for s in SECTIONS if getattr(self, s) != getattr(before, s)]


@dataclass(frozen=True)
class GatewayRow:
    site: str
    gateway: str
    state: str
    session: int
    since: str | None
    reason: str
    last_seen: str | None
    born_at: str | None
    outbox: dict[str, Any] | None  # the birth's OutboxStats (depth, dropped, classes, ...)


@dataclass(frozen=True)
class GatewayPage:
    total: int
    offset: int
    rows: list[GatewayRow]


@dataclass(frozen=True)
class AlarmRow:
    id: str
    site: str
    gateway: str
    device: str
    time: str | None
    received_at: str | None
    rule: str
    point: str
    state: str
    severity: str
    value: float
    limit: float
    direction: str
    unit: str | None
    since: str | None


@dataclass(frozen=True)
class DeadLetterRow:
    n: int
    received_at: str | None
    worker: str
    topic: str
    reason: str
    size: int
    preview: str  # the first PREVIEW_BYTES bytes, undecodable bytes replaced


@dataclass(frozen=True)
class GapRow:
    site: str
    gateway: str
    session: int
    missing: int
    highest: int
    noticed_at: str | None
    born_at: str | None
    ended_at: str | None
    end_reason: str | None
    #: dead letters of this gateway's session, by reason (what is known of the missing ones)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PointRef:
    device: str
    point: str
    unit: str | None


@dataclass(frozen=True)
class SeriesPoint:
    t: str  # start of the bucket
    min: float
    max: float
    avg: float
    count: int


@dataclass(frozen=True)
class Series:
    site: str
    gateway: str
    device: str
    point: str
    unit: str | None
    since: str
    until: str
    bucket_s: float
    points: list[SeriesPoint]


@dataclass(frozen=True)
class Overview:
    gateways: dict[str, int]  # online, offline
    open_alarms: dict[str, int]  # per severity
    dead_letters: int
    gaps: int
    missing: int


def to_json(value: Any) -> Any:
    """A value of this module as JSON-ready data."""
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return asdict(value)


class OperatorReads(Protocol):
    """The page's questions; every answer is read-only."""

    async def versions(self) -> Versions: ...

    async def overview(self) -> Overview: ...

    async def gateways(
        self, *, state: StateFilter = None, search: str = "", offset: int = 0, limit: int = 100
    ) -> GatewayPage: ...

    async def open_alarms(self, *, limit: int = 500) -> list[AlarmRow]: ...

    async def alarm_history(
        self, *, site: str | None = None, gateway: str | None = None, limit: int = 100
    ) -> list[AlarmRow]: ...

    async def dead_letters(self, *, limit: int = 100) -> tuple[int, list[DeadLetterRow]]: ...

    async def gaps(self, *, limit: int = 200) -> list[GapRow]: ...

    async def points(self, site: str, gateway: str) -> list[PointRef]: ...

    async def series(
        self,
        site: str,
        gateway: str,
        device: str,
        point: str,
        since: datetime,
        until: datetime,
        buckets: int = 300,
    ) -> Series: ...

    async def close(self) -> None: ...


async def open_reads(url: str, *, timeout_s: float = 10.0) -> OperatorReads:
    """A read-only connection for the page to the database at ``url`` (as ``--db``)."""
    if url.startswith(("postgresql://", "postgres://")):
        from cloud_bridge.citybrain.store.operator_pg import PgReads

        return await PgReads.connect(url, timeout_s=timeout_s)
    from cloud_bridge.citybrain.store import sqlite_path
    from cloud_bridge.citybrain.store.operator_sqlite import SqliteReads

    return await SqliteReads.connect(sqlite_path(url), timeout_s=timeout_s)


# --- shaping rows (the same for both back ends) --------------------------------------------


def bounded(limit: int, most: int = MAX_LIMIT) -> int:
    return max(1, min(int(limit), most))


def session_rows(
    states: Iterable[GatewayState],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(births, deaths) of a batch as rows for ``gateway_sessions``: births carry their
    outbox figures as JSON, deaths their reason."""
    births: list[tuple[Any, ...]] = []
    deaths: list[tuple[Any, ...]] = []
    for s in states:
        if s.state.value == "online":
            outbox = s.outbox.model_dump_json(exclude_none=True) if s.outbox else None
            births.append((s.site, s.gateway, s.session, s.time, outbox))
        else:
            deaths.append((s.site, s.gateway, s.session, s.time, s.reason))
    return births, deaths


def gateway_row(r: Sequence[Any]) -> GatewayRow:
    """From (site, gateway, state, session, since, reason, updated_at, born_at, outbox,
    last_event)."""
    site, gateway, state, session, since, reason, updated, born, outbox, last_event = r
    seen = [t for t in (iso(updated), iso(last_event)) if t is not None]
    return GatewayRow(
        site=site,
        gateway=gateway,
        state=state,
        session=int(session),
        since=iso(since),
        reason=reason or "",
        last_seen=max(seen, key=datetime.fromisoformat) if seen else None,
        born_at=iso(born),
        outbox=as_json_value(outbox),
    )


def alarm_row(r: Sequence[Any]) -> AlarmRow:
    """From (id, site, gateway, device, time, received_at, envelope)."""
    eid, site, gateway, device, time, received, envelope = r
    p = as_json_value(envelope)["payload"]
    return AlarmRow(
        id=str(eid),
        site=site,
        gateway=gateway,
        device=device,
        time=iso(time),
        received_at=iso(received),
        rule=str(p["rule"]),
        point=str(p["point"]),
        state=str(p["state"]),
        severity=str(p["severity"]),
        value=float(p["value"]),
        limit=float(p["limit"]),
        direction=str(p["direction"]),
        unit=p.get("unit"),
        since=iso(p.get("since")),
    )


def sort_open(alarms: Iterable[AlarmRow]) -> list[AlarmRow]:
    """Most urgent first, then the oldest first within a severity."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(
        alarms,
        key=lambda a: (rank.get(a.severity, len(rank)), a.since or a.time or "", a.id),
    )


def count_open(alarms: Iterable[AlarmRow]) -> dict[str, int]:
    counts = Counter(a.severity for a in alarms)
    return {s: counts.get(s, 0) for s in SEVERITIES}


def dead_letter_row(r: Sequence[Any]) -> DeadLetterRow:
    """From (n, received_at, worker, topic, reason, size, head bytes)."""
    n, received, worker, topic, reason, size, head = r
    return DeadLetterRow(
        n=int(n),
        received_at=iso(received),
        worker=worker,
        topic=topic,
        reason=reason,
        size=int(size),
        preview=bytes(head or b"").decode("utf-8", errors="replace"),
    )


def gap_prefix(site: str, gateway: str) -> str:
    return f"cityedge/v1/{site}/{gateway}/"


def gap_evidence(rows: Iterable[tuple[str, bytes]], session: int) -> list[dict[str, Any]]:
    """Dead letters (reason, payload) of a gateway's prefix that carry ``session`` in their
    link: what is known of the sequence numbers a gap misses (most frequent reason first)."""
    reasons: Counter[str] = Counter()
    for reason, payload in rows:
        try:
            link = json.loads(bytes(payload)).get("link") or {}
        except (ValueError, AttributeError, RecursionError):
            continue
        if isinstance(link, dict) and link.get("session") == session:
            reasons[reason] += 1
    return [{"reason": r, "count": n} for r, n in reasons.most_common(5)]


def gap_row(r: Sequence[Any], evidence: list[dict[str, Any]]) -> GapRow:
    """From (site, gateway, session, missing, highest, noticed_at, born_at, died_at,
    death_reason)."""
    site, gateway, session, missing, highest, noticed, born, died, why = r
    return GapRow(
        site=site,
        gateway=gateway,
        session=int(session),
        missing=int(missing),
        highest=int(highest),
        noticed_at=iso(noticed),
        born_at=iso(born),
        ended_at=iso(died),
        end_reason=why,
        dead_letters=evidence,
    )


def point_refs(rows: Iterable[tuple[str, Any]]) -> list[PointRef]:
    """Devices' points from (device, readings JSON) of recent telemetry."""
    seen: dict[tuple[str, str], str | None] = {}
    for device, readings in rows:
        for r in as_json_value(readings) or []:
            if isinstance(r, dict) and isinstance(r.get("point"), str):
                seen.setdefault((device, r["point"]), r.get("unit"))
    return [PointRef(d, p, u) for (d, p), u in sorted(seen.items())]


def bucket_width(since: datetime, until: datetime, buckets: int) -> float:
    if until <= since:
        raise ValueError("the window's end must be after its start")
    return max(1.0, (until - since).total_seconds() / max(1, min(buckets, MAX_BUCKETS)))


def series_points(
    rows: Iterable[Sequence[Any]], width: float
) -> tuple[list[SeriesPoint], str | None]:
    """From (bucket number, min, max, avg, count, unit), in bucket order."""
    points: list[SeriesPoint] = []
    unit: str | None = None
    for b, lo, hi, avg, n, u in rows:
        points.append(
            SeriesPoint(
                t=datetime.fromtimestamp(int(b) * width, UTC).isoformat(),
                min=float(lo),
                max=float(hi),
                avg=float(avg),
                count=int(n),
            )
        )
        unit = u if u is not None else unit
    return points, unit


def make_series(
    key: tuple[str, str, str, str],
    since: datetime,
    until: datetime,
    width: float,
    rows: Iterable[Sequence[Any]],
) -> Series:
    points, unit = series_points(rows, width)
    site, gateway, device, point = key
    return Series(
        site, gateway, device, point, unit, iso(since) or "", iso(until) or "", width, points
    )


def overview_of(
    states: Mapping[str, int], open_alarms: list[AlarmRow], dead: int, gaps: int, missing: int
) -> Overview:
    return Overview(
        gateways={"online": int(states.get("online", 0)), "offline": int(states.get("offline", 0))},
        open_alarms=count_open(open_alarms),
        dead_letters=int(dead),
        gaps=int(gaps),
        missing=int(missing),
    )
