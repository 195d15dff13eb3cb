"""The device inventory: one SQLite file per site, keyed by hardware id.

Provisioning a hardware id that is already known updates its row (new certificate, revision + 1)
instead of adding a second device; a name already held by another hardware id is refused. A row
is written only once everything before it worked (certificate, image, flash or copy): a failed
step leaves no row (:func:`provisioning.provision.provision_node`).

What the nodes say updates their rows (:meth:`Inventory.seen`): the firmware version and state
of their status frames and when they were last heard from; the self-test's verdict is kept with
its time (:meth:`Inventory.self_tested`). Times are ISO 8601 UTC text. An inventory made by an
older version of the tool gains the new columns when it is opened.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from dataclasses import dataclass, fields
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
# added after the first release: (column, declaration); ALTER TABLE adds them to old files
ADDED = (
    ("report_interval_s", "REAL"),
    ("last_seen", "TEXT"),  # the last frame from the node (its own clock, else when received)
    ("state", "TEXT"),  # the last status frame's state: boot, healthy, offline, ...
    ("self_test", "TEXT"),  # ok | failed | NULL (never run for this provisioning)
    ("self_test_at", "TEXT"),
)
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


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


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
    report_interval_s: float | None = None
    last_seen: str | None = None
    state: str | None = None
    self_test: str | None = None
    self_test_at: str | None = None


_COLUMNS = ", ".join(f.name for f in fields(Device))


class Inventory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path)
        have = {r[1] for r in self.db.execute("PRAGMA table_info(devices)")}
        if not have:
            self.db.execute(SCHEMA)
        for column, decl in ADDED:
            if column not in have:
                self.db.execute(f"ALTER TABLE devices ADD COLUMN {column} {decl}")
        if self.db.in_transaction:
            self.db.commit()

    def close(self) -> None:
        self.db.close()

    def _one(self, where: str, arg: str) -> Device | None:
        query = f"SELECT {_COLUMNS} FROM devices WHERE {where} = ?"  # noqa: S608 - ours
        row = self.db.execute(query, (arg,)).fetchone()
        return Device(*row) if row else None

    def get(self, hwid: str) -> Device | None:
        return self._one("hwid", normalize_hwid(hwid))

    def by_name(self, name: str) -> Device | None:
        return self._one("name", name)

    def all(self) -> list[Device]:
        return [
            Device(*r)
            for r in self.db.execute(f"SELECT {_COLUMNS} FROM devices ORDER BY role, name")  # noqa: S608
        ]

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
        report_interval_s: float | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[Device, bool]:
        """Insert or update; returns the row and whether it is new. A re-provisioned device's
        self-test verdict is cleared (it was about the old certificate and image)."""
        hwid = normalize_hwid(hwid)
        self.check_name(hwid, name)
        at = iso(now or dt.datetime.now(dt.UTC))
        old = self.get(hwid)
        with self.db:
            if old is None:
                self.db.execute(
                    "INSERT INTO devices (hwid, name, role, kind, target, identity, cert_serial,"
                    " cert_sha256, firmware, revision, first_provisioned, last_provisioned,"
                    " report_interval_s) VALUES (?,?,?,?,?,?,?,?,?,1,?,?,?)",
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
                        at,
                        at,
                        report_interval_s,
                    ),
                )
            else:
                self.db.execute(
                    "UPDATE devices SET name=?, role=?, kind=?, target=?, identity=?, cert_serial=?,"
                    " cert_sha256=?, firmware=?, revision=revision+1, last_provisioned=?,"
                    " report_interval_s=?, self_test=NULL, self_test_at=NULL WHERE hwid=?",
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
                        report_interval_s,
                        hwid,
                    ),
                )
        device = self.get(hwid)
        assert device is not None
        return device, old is None

    def self_tested(self, name: str, ok: bool, now: dt.datetime | None = None) -> None:
        with self.db:
            self.db.execute(
                "UPDATE devices SET self_test=?, self_test_at=? WHERE name=?",
                ("ok" if ok else "failed", iso(now or dt.datetime.now(dt.UTC)), name),
            )

    def seen(
        self,
        name: str,
        *,
        at: dt.datetime | None,
        version: str | None = None,
        state: str | None = None,
    ) -> bool:
        """What a node's frame says: its firmware ``version`` and ``state`` (status frames), and
        ``at`` when it sent it (kept only if later than what is known). False for no such node."""
        dev = self.by_name(name)
        if dev is None or dev.role != "node":
            return False
        last = dev.last_seen
        if at is not None and (last is None or dt.datetime.fromisoformat(last) < at):
            last = iso(at)
        with self.db:
            self.db.execute(
                "UPDATE devices SET firmware=?, state=?, last_seen=? WHERE name=?",
                (version or dev.firmware, state or dev.state, last, name),
            )
        return True
