"""``cityedge ingest --status`` is a read-only query: it reads an existing database and creates
no file, not even SQLite's ``-wal``/``-shm`` beside a database no ingest has open."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cloud_bridge.citybrain.store import SqliteStore
from tests.cli.run import run_all


def test_status_reads_an_existing_database_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "city-brain.db"

    async def make() -> None:
        store = await SqliteStore.connect(db)
        await store.close()

    asyncio.run(make())
    before = sorted(p.name for p in tmp_path.iterdir())
    (done,) = run_all([(["cityedge", "ingest", "--status", "--db", str(db)], tmp_path, None)])
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events"] == {} and summary["gateways"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before == ["city-brain.db"]
