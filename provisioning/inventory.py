"""The device inventory: one SQLite file per site, keyed by hardware id.

Provisioning a hardware id that is already known updates its row (new certificate, revision + 1)
instead of adding a second device; a name already held by another hardware id is refused.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import ProvisionInputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    hwid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,              -- node | gateway
    kind TEXT NOT NULL,              -- bin-fill, water, gate-relay, gateway
    target TEXT NOT NULL,            -- esp32, rp2, unix, balena
    identity TEXT NOT NULL,          -- certificate common name = MQTT user
    cert_serial TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL,
    firmware TEXT NOT NULL,
    revision INTEGER NOT NULL,
    first_provisioned TEXT NOT NULL,
    last_provisioned TEXT NOT NULL
)
"""
_HWID = re.compile(r"^[0-9a-f]{6,64}$")


def normalize_hwid(text: str) -> str:
    """``AA:BB:CC:DD:EE:FF`` / ``aabbccddeeff`` / ``e6-61-41-04`` -> lower-case hex."""
    h = re.sub(r"[:\-\s]", "", text).lower()
    if not _HWID.match(h):
        raise ProvisionInputError(
            f"hardware id {text!r} is not 6-64 hex digits",
            hint="use the MAC address or machine.unique_id() printed on the board's label",
        )
    return h


@dataclass(frozen=True)
class Device:
    hwid: str
    name: str
    role: str
    kind: str
    target: str
    identity: str
    cert_serial: str
    cert_sha256: str
    firmware: str
    revision: int
    first_provisioned: str
    last_provisioned: str


class Inventory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.execute(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def get(self, hwid: str) -> Device | None:
        row = self.db.execute(
            "SELECT * FROM devices WHERE hwid = ?", (normalize_hwid(hwid),)
        ).fetchone()
        return Device(*row) if row else None

    def by_name(self, name: str) -> Device | None:
        row = self.db.execute("SELECT * FROM devices WHERE name = ?", (name,)).fetchone()
        return Device(*row) if row else None

    def all(self) -> list[Device]:
        return [Device(*r) for r in self.db.execute("SELECT * FROM devices ORDER BY role, name")]

    def check_name(self, hwid: str, name: str) -> None:
        other = self.by_name(name)
        if other is not None and other.hwid != normalize_hwid(hwid):
            raise ProvisionInputError(
                f"name {name!r} already belongs to hardware id {other.hwid}",
                hint="pick another name, or re-provision that board by its hardware id",
            )

    def record(
        self,
        *,
        hwid: str,
        name: str,
        role: str,
        kind: str,
        target: str,
        identity: str,
        cert_serial: str,
        cert_sha256: str,
        firmware: str,
        now: dt.datetime | None = None,
    ) -> tuple[Device, bool]:
        """Insert or update; returns the row and whether it is new."""
        hwid = normalize_hwid(hwid)
        self.check_name(hwid, name)
        at = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
        old = self.get(hwid)
        with self.db:
            if old is None:
                self.db.execute(
                    "INSERT INTO devices VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        hwid,
                        name,
                        role,
                        kind,
                        target,
                        identity,
                        cert_serial,
                        cert_sha256,
                        firmware,
                        1,
                        at,
                        at,
                    ),
                )
            else:
                self.db.execute(
                    "UPDATE devices SET name=?, role=?, kind=?, target=?, identity=?, cert_serial=?,"
                    " cert_sha256=?, firmware=?, revision=revision+1, last_provisioned=? WHERE hwid=?",
                    (
                        name,
                        role,
                        kind,
                        target,
                        identity,
                        cert_serial,
                        cert_sha256,
                        firmware,
                        at,
                        hwid,
                    ),
                )
        device = self.get(hwid)
        assert device is not None
        return device, old is None
