"""Where the city-brain ingest keeps what it received: PostgreSQL
(:mod:`~cloud_bridge.citybrain.store.postgres`), or SQLite as the embedded default
(:mod:`~cloud_bridge.citybrain.store.sqlite`). Both hold the same tables and give the same
answers (:mod:`~cloud_bridge.citybrain.store.common` draws them); :func:`open_store` picks one by
the URL.
"""

from __future__ import annotations

import json
from pathlib import Path

from cloud_bridge.citybrain.store.common import (
    Batch,
    DeadLetter,
    Gap,
    Incoming,
    SessionKey,
    Store,
    StoreError,
    Summary,
    WriteResult,
)
from cloud_bridge.citybrain.store.pg_partitions import PartitionOptions
from cloud_bridge.citybrain.store.postgres import PgStore
from cloud_bridge.citybrain.store.sqlite import SqliteStore

__all__ = [
    "Batch",
    "DeadLetter",
    "Gap",
    "Incoming",
    "PgStore",
    "SessionKey",
    "SqliteStore",
    "Store",
    "StoreError",
    "Summary",
    "WriteResult",
    "dump",
    "open_store",
    "sqlite_path",
]


async def open_store(
    url: str,
    *,
    read_only: bool = False,
    partitions: PartitionOptions | None = None,
    migrate: bool = False,
) -> Store:
    """``postgresql://...`` for PostgreSQL; a file path (or ``sqlite:///path``) for SQLite.
    ``read_only`` (``--status``): an existing database only, nothing created or written.
    ``partitions`` and ``migrate``: PostgreSQL's ``events`` (SQLite has no partitions)."""
    if url.startswith(("postgresql://", "postgres://")):
        return await PgStore.connect(
            url, read_only=read_only, partitions=partitions, migrate=migrate
        )
    return await SqliteStore.connect(sqlite_path(url), read_only=read_only)


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite://") if url.startswith("sqlite://") else url)


def dump(summary: Summary) -> str:
    return json.dumps(summary.as_json(), indent=2, default=str)
