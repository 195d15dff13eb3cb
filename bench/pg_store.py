"""PostgreSQL store writes: the earlier one-statement insert (``unnest`` of arrays into a plain
``events``) against ``COPY`` into a staging table then ``INSERT … ON CONFLICT`` into the
partitioned ``events`` (and the earlier insert into the partitioned table, to tell the two
changes apart), through :class:`~cloud_bridge.citybrain.store.PgStore`'s whole write
(one transaction per batch, the worker counters). Two writers, batches of ``BATCH``.

Not part of ``make bench`` (nothing is written to docs/benchmarks.md); run it by hand::

    .venv/bin/python -m bench.pg_store [envelopes per writer per round] [rounds]

It prints envelopes/s per round for each way and the ratio; on a shared machine compare the
ratio, not the figures.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud_bridge.citybrain.store import Batch, Incoming, PgStore
from cloud_bridge.citybrain.store.pg_partitions import PLAIN_EVENTS
from protocols import envelope as env
from protocols.ids import Uuid7Generator
from sim.localsite import Postgres

BATCH = 500
WRITERS = 2
PLAIN = "unnest into a plain events (before)"
UNNEST = "unnest into the partitioned events"
COPY = "COPY + staging into the partitioned events (now)"

_WORKERS = """
CREATE TABLE workers (
  worker TEXT PRIMARY KEY, stored BIGINT NOT NULL DEFAULT 0, duplicates BIGINT NOT NULL DEFAULT 0,
  dead BIGINT NOT NULL DEFAULT 0, updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""

_OLD_INSERT = """
INSERT INTO events (id, site, gateway, device, kind, time, session, seq, pos, worker, envelope)
SELECT id, site, gateway, device, kind, time, session, seq, pos, %s, envelope::jsonb
FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],
            %s::bigint[], %s::bigint[], %s::bigint[], %s::text[])
     WITH ORDINALITY AS t(id, site, gateway, device, kind, time, session, seq, pos, envelope, o)
ORDER BY o ON CONFLICT (id) DO NOTHING RETURNING id
"""


class UnnestStore(PgStore):
    """The store as it wrote before COPY: one statement with the batch as arrays."""

    async def _insert_events(self, first: list[Incoming], worker: str) -> set[str]:
        cols: list[list[Any]] = [[] for _ in range(10)]
        for i in first:
            e = i.envelope
            link = e.link
            row = (e.id, e.site, e.gateway, e.device, e.kind, e.time,
                   link and link.session, link and link.seq, link and link.pos, i.raw.decode())  # fmt: skip
            for col, v in zip(cols, row, strict=True):
                col.append(v)
        cur = await self.conn.execute(_OLD_INSERT, [worker, *cols])
        return {str(r[0]) for r in await cur.fetchall()}


def envelopes(ids: Uuid7Generator, gateway: str, n: int, start: datetime) -> list[Incoming]:
    out = []
    for k in range(n):
        t = start + timedelta(milliseconds=k)
        e = env.TelemetryEnvelope(
            id=ids.new(int(t.timestamp() * 1000)),
            site="bench",
            gateway=gateway,
            device=f"d{k % 20}",
            time=t,
            payload=env.TelemetryPayload(
                readings=[env.PointValue(point="t", value=20.0 + k % 7, unit="Cel")]
            ),
            link=env.LinkInfo(session=1, seq=k + 1, pos=k + 1),
        )
        out.append(Incoming(e, e.model_dump_json().encode()))
    return out


async def plain(url: str) -> PgStore:
    """An :class:`UnnestStore` on the plain ``events`` of before (which ``connect`` refuses)."""
    import psycopg

    conn = await psycopg.AsyncConnection.connect(url)
    store = UnnestStore(conn)
    store._next_pass = float("inf")  # no partitions to look after
    return store


async def run(way: str, url: str, work: list[list[Incoming]]) -> float:
    if way == PLAIN:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PLAIN_EVENTS + _WORKERS)
        stores = [await plain(url) for _ in work]
    else:
        cls = UnnestStore if way == UNNEST else PgStore
        stores = [await cls.connect(url) for _ in work]
    try:

        async def writer(store: PgStore, items: list[Incoming], name: str) -> None:
            for k in range(0, len(items), BATCH):
                await store.write(Batch(events=items[k : k + BATCH]), name)

        t0 = time.perf_counter()
        await asyncio.gather(
            *(writer(s, w, f"w{i}") for i, (s, w) in enumerate(zip(stores, work, strict=True)))
        )
        return sum(len(w) for w in work) / (time.perf_counter() - t0)
    finally:
        for s in stores:
            await s.close()


def main(argv: list[str]) -> int:
    per_writer = int(argv[0]) if argv else 50_000
    rounds = int(argv[1]) if len(argv) > 1 else 2
    ids = Uuid7Generator()
    now = datetime.now(UTC)
    pg = Postgres.start()
    try:
        for r in range(rounds):
            rates = {}
            for k, way in enumerate((PLAIN, UNNEST, COPY)):
                url = pg.create_database(f"bench_pg_store_{r}_{k}")
                work = [envelopes(ids, f"gw{w}", per_writer, now) for w in range(WRITERS)]
                rates[way] = asyncio.run(run(way, url, work))
                print(f"round {r + 1}: {way}: {rates[way]:,.0f} envelopes/s", flush=True)
            print(
                f"round {r + 1}: {COPY} / {PLAIN} = {rates[COPY] / rates[PLAIN]:.2f}; "
                f"{COPY} / {UNNEST} = {rates[COPY] / rates[UNNEST]:.2f}",
                flush=True,
            )
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
