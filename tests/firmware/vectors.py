"""The golden vectors shared by the gateway's tests (CPython) and the firmware's tests (CPython
and the MicroPython unix port): ``protocols/vectors/*.json``.

Regenerate after a deliberate format change with ``python -m tests.firmware.vectors --write``;
``test_vectors_are_current`` fails when the committed files differ from what the code makes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import delegation, nodewire, signed
from protocols.nodewire import NodeState, Result
from provisioning import ota
from tests.abuse.forge import SMALL_ORDER, forge

DIR = Path(__file__).resolve().parents[2] / "protocols" / "vectors"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
GW_A = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))  # gateway gw-a's command key
GW_B = Ed25519PrivateKey.from_private_bytes(bytes(range(3, 35)))  # gateway gw-b's
FAR = 4_102_444_800  # 2100-01-01
PAST = 1_700_000_000  # 2023: expired
# RFC 8032, 7.1: TEST 1 (empty message), TEST 2 (one byte), TEST 3 (two bytes)
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", ""),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb", "72"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7", "af82"),
]


def nodewire_vectors() -> dict[str, Any]:
    readings: list[tuple[str, int, int, list[tuple[str, nodewire.Value]]]] = [
        (
            "bin fill",
            1,
            1_795_500_000,
            [("fill_pct", 42.5), ("distance_mm", 640), ("temperature_c", 18.5)],
        ),
        ("water", 65535, 0, [("ph", 7.25), ("turbidity_ntu", 3.5), ("temperature_c", -2.0)]),
        ("gate", 7, 1_795_500_001, [("door_open", True), ("relay_on", False)]),
        ("int32 and negative", 300, 1, [("uptime_s", 100_000), ("rssi_dbm", -67)]),
    ]
    status = [
        ("boot", 2, 1_795_500_000, NodeState.BOOT, (1, 0, 0), ""),
        ("healthy", 3, 1_795_500_000, NodeState.HEALTHY, (1, 2, 3), "ok"),
        ("ota refused", 4, 0, NodeState.OTA_REFUSED, (2, 0, 1), "downgrade: offered 1.0.0"),
        ("offline will", 5, 0, NodeState.OFFLINE, (300, 255, 0), "connection lost"),
    ]
    replies = [
        ("done", 9, 1_795_500_002, "AAAAAAAAAAAAAAAAAAAAAA", Result.DONE, "open"),
        ("refused", 10, 1_795_500_003, "", Result.REFUSED, "bad-signature: no"),
    ]
    malformed = [
        ("empty", ""),
        ("short header", "ce01010001000000"),
        ("wrong magic", "cf010100010000000001" + "0102"),
        ("wrong version", "ce020100010000000001" + "0100"),
        ("unknown type", "ce010900010000000000"),
        ("zero readings", "ce01010001000000000000"[:22]),
        ("unknown point", "ce0101000100000000" + "01" + "6300"),
        ("unknown tag", "ce0101000100000000" + "01" + "0109"),
        ("truncated float", "ce0101000100000000" + "01" + "010442"),
        ("trailing byte", "ce0101000100000000" + "01" + "0601" + "00"),
        ("nan", "ce0101000100000000" + "01" + "01047fc00000"),
        ("unknown state", "ce01020001000000000900010000"),
        ("reply cut in nonce", "ce0103000100000000" + "05" + "4142"),
    ]
    return {
        "points": {name: pid for pid, (name, _unit) in nodewire.POINTS.items()},
        "readings": [
            {
                "name": n,
                "seq": s,
                "time": t,
                "readings": [list(r) for r in rs],
                "hex": nodewire.encode_readings(s, t, rs).hex(),
            }
            for n, s, t, rs in readings
        ],
        "status": [
            {
                "name": n,
                "seq": s,
                "time": t,
                "state": int(st),
                "version": list(v),
                "reason": r,
                "hex": nodewire.encode_status(s, t, st, v, r).hex(),
            }
            for n, s, t, st, v, r in status
        ],
        "reply": [
            {
                "name": n,
                "seq": s,
                "time": t,
                "nonce": no,
                "result": int(res),
                "message": m,
                "hex": nodewire.encode_reply(s, t, no, res, m).hex(),
            }
            for n, s, t, no, res, m in replies
        ],
        "malformed": [{"name": n, "hex": h} for n, h in malformed],
    }


def _tamper(data: bytes, **changes: object) -> str:
    doc = json.loads(data)
    doc.update(changes)
    return json.dumps(doc)


def signed_vectors() -> dict[str, Any]:
    rfc = []
    for seed, msg in RFC8032:
        k = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
        m = bytes.fromhex(msg)
        rfc.append(
            {"public": signed.public_key_raw(k).hex(), "message": msg, "signature": k.sign(m).hex()}
        )
    nonce = bytes(16)

    def cmd(body: bytes, **kw: Any) -> bytes:
        args: dict[str, Any] = {
            "purpose": "command",
            "kid": "ops-1",
            "key": KEY,
            "expires_at": FAR,
            "nonce": nonce,
        }
        args.update(kw)
        return signed.sign(body, **args)

    good = cmd(b'{"node":"gate-1","action":"open"}')
    now = 1_795_500_000
    envelopes = [
        (
            "node open",
            cmd(
                b'{"node":"gate-1","action":"open"}', expires_at=now + 60, nonce=b"open-gate-1-0001"
            ).decode(),
            "command",
            None,
        ),
        (
            "node other node",
            cmd(
                b'{"node":"gate-2","action":"open"}', expires_at=now + 60, nonce=b"open-gate-2-0001"
            ).decode(),
            "command",
            None,
        ),
        ("good", good.decode(), "command", None),
        ("good ota", cmd(b"{}", purpose="ota").decode(), "ota", None),
        ("unsigned", '{"node":"gate-1","action":"open"}', "command", "unsigned"),
        ("not json", "\u0000garbage", "command", "malformed"),
        ("json list", "[1, 2]", "command", "malformed"),
        ("wrong version", _tamper(good, v=2), "command", "malformed"),
        ("exp as text", _tamper(good, exp="soon"), "command", "malformed"),
        ("sig not base64", _tamper(good, sig="!!!"), "command", "malformed"),
        ("short sig", _tamper(good, sig="AAAA"), "command", "malformed"),
        ("unknown key", cmd(b"{}", kid="ops-9").decode(), "command", "unknown-key"),
        ("signed by another key", cmd(b"{}", key=OTHER).decode(), "command", "bad-signature"),
        (
            "body changed",
            _tamper(good, body=signed.b64url(b'{"node":"gate-1","action":"pulse"}')),
            "command",
            "bad-signature",
        ),
        ("expiry changed", _tamper(good, exp=FAR + 1), "command", "bad-signature"),
        ("expired", cmd(b"{}", expires_at=PAST).decode(), "command", "expired"),
        ("command used as ota", good.decode(), "ota", "wrong-purpose"),
        ("purpose relabelled", _tamper(good, purpose="ota"), "ota", "bad-signature"),
    ]
    return {
        "sha512": [
            {"message": m.hex(), "digest": hashlib.sha512(m).hexdigest()}
            for m in (b"", b"abc", bytes(range(256)) * 3, b"a" * 111, b"a" * 112, b"a" * 128)
        ],
        "rfc8032": rfc,
        "keys": {"ops-1": signed.b64url(signed.public_key_raw(KEY))},
        "now": now,
        "envelopes": [
            {"name": n, "data": d, "purpose": p, "refusal": r} for n, d, p, r in envelopes
        ],
        # small-order public keys (every encoding a lenient decoder takes) and, for each, a
        # command and an OTA manifest forged with R = identity, S = 0 that a cofactorless
        # verifier without key checks accepts: both sides refuse the keys and the forgeries
        "small_order": [
            {
                "name": name,
                "key": key,
                "command": forge(
                    b'{"node":"gate-1","action":"open"}',
                    key=bytes.fromhex(key),
                    kid="ops-1",
                    expires_at=FAR,
                ).decode(),
                "ota": forge(
                    ota.manifest_body("9.9.9", b"CEB1"),
                    key=bytes.fromhex(key),
                    kid="ops-1",
                    expires_at=FAR,
                    purpose="ota",
                ).decode(),
            }
            for name, key in SMALL_ORDER.items()
        ],
    }


def delegation_vectors() -> dict[str, Any]:
    """Commands to node gate-1 (site riverside, gateway gw-a) signed by gateway keys, each with
    a delegation: the site key ``ops-1`` (:data:`KEY`) certifies gw-a's and gw-b's keys."""
    now = 1_795_500_000
    count = iter(range(1000))

    def deleg(gw: str = "gw-a", key: Ed25519PrivateKey = GW_A, **kw: Any) -> dict[str, Any]:
        args: dict[str, Any] = {
            "site_key": KEY,
            "site_kid": "ops-1",
            "site": "riverside",
            "gateway": gw,
            "gateway_key": key.public_key(),
            "expires_at": FAR,
            "nonce": f"delegation-{next(count):04d}".encode(),
        }
        args.update(kw)
        doc: dict[str, Any] = json.loads(delegation.issue(**args))
        return doc

    def body_deleg(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """A delegation of ``body`` as the site would sign it (for bodies issue() never makes)."""
        args: dict[str, Any] = {
            "purpose": "delegation",
            "kid": "ops-1",
            "key": KEY,
            "expires_at": FAR,
            "nonce": f"delegation-{next(count):04d}".encode(),
        }
        args.update(kw)
        doc: dict[str, Any] = json.loads(signed.sign(json.dumps(body).encode(), **args))
        return doc

    def kid(key: Ed25519PrivateKey, gw: str = "gw-a") -> str:
        return delegation.command_kid(gw, signed.public_key_raw(key))

    def body_of(gw: str, gk: Ed25519PrivateKey, **kw: str) -> dict[str, Any]:
        return {
            "site": "riverside",
            "gateway": gw,
            "purpose": "command",
            "kid": kid(gk, gw),
            "key": signed.b64url(signed.public_key_raw(gk)),
            **kw,
        }

    def cmd(d: Any, key: Ed25519PrivateKey = GW_A, k: str | None = None) -> str:
        raw = signed.sign(
            b'{"node":"gate-1","action":"open"}',
            purpose="command",
            kid=k or kid(GW_A),
            key=key,
            expires_at=now + 60,
            nonce=f"command-{next(count):04d}".encode(),
        )
        doc = json.loads(raw)
        if d is not None:
            doc["delegation"] = d
        return json.dumps(doc, separators=(",", ":"))

    good = deleg()
    swapped = json.loads(json.dumps(good))
    swapped["body"] = signed.b64url(json.dumps(body_of("gw-a", OTHER, kid=kid(GW_A))).encode())
    weak = next(iter(SMALL_ORDER.values()))
    cases: list[tuple[str, str, str | None, str | None]] = [
        ("its gateway's key", cmd(good), "gw-a", None),
        (
            "another gateway's key",
            cmd(deleg("gw-b", GW_B), GW_B, kid(GW_B, "gw-b")),
            "gw-a",
            "wrong-gateway",
        ),
        ("a node without a gateway", cmd(good), None, "wrong-gateway"),
        ("forged delegation", cmd(deleg(site_key=OTHER)), "gw-a", "bad-delegation"),
        ("delegated key swapped", cmd(swapped, OTHER), "gw-a", "bad-delegation"),
        ("expired delegation", cmd(deleg(expires_at=PAST)), "gw-a", "bad-delegation"),
        (
            "delegates another purpose",
            cmd(body_deleg(body_of("gw-a", GW_A, purpose="ota"))),
            "gw-a",
            "bad-delegation",
        ),
        (
            "signed as a command, not a delegation",
            cmd(body_deleg(body_of("gw-a", GW_A), purpose="command")),
            "gw-a",
            "bad-delegation",
        ),
        ("unknown site key", cmd(deleg(site_kid="ops-9")), "gw-a", "bad-delegation"),
        (
            "for another site",
            cmd(body_deleg(body_of("gw-a", GW_A, site="hillside"))),
            "gw-a",
            "bad-delegation",
        ),
        (
            "for another key id",
            cmd(body_deleg(body_of("gw-a", GW_A, kid="gw-a-cmd-00000000"))),
            "gw-a",
            "bad-delegation",
        ),
        (
            "weak delegated key",
            cmd(body_deleg(body_of("gw-a", GW_A, key=signed.b64url(bytes.fromhex(weak))))),
            "gw-a",
            "bad-delegation",
        ),
        (
            "body not JSON",
            cmd(body_deleg({}) | {"body": signed.b64url(b"{")}),
            "gw-a",
            "bad-delegation",
        ),
        (
            "body without a key",
            cmd(body_deleg({"site": "riverside", "gateway": "gw-a"})),
            "gw-a",
            "bad-delegation",
        ),
        ("delegation not an object", cmd("garbage"), "gw-a", "bad-delegation"),
        ("no delegation", cmd(None), "gw-a", "bad-delegation"),
        ("command forged under a good delegation", cmd(good, OTHER), "gw-a", "bad-signature"),
    ]
    return {
        "site_keys": {"ops-1": signed.b64url(signed.public_key_raw(KEY))},
        "site": "riverside",
        "node": "gate-1",
        "now": now,
        "commands": [{"name": n, "data": d, "gateway": g, "refusal": r} for n, d, g, r in cases],
    }


def ota_vectors() -> dict[str, Any]:
    files = {"cenode/__init__.py": b"", "cenode/hello.py": b"WORD = 'v1.1.0'\n"}

    def upd(version: str, **kw: Any) -> ota.Update:
        args: dict[str, Any] = {"key": KEY, "kid": "ops-1", "expires_at": FAR, "nonce": bytes(16)}
        args.update(kw)
        return ota.make_update(version, files, **args)

    good = upd("1.1.0")
    old = upd("0.9.0", nonce=b"downgrade-0.9.0!")
    corrupt_image = bytearray(good.image)
    corrupt_image[-3] ^= 0xFF
    lying = ota.bundle({**files, "VERSION": b"9.9.9"})
    lying_manifest = signed.sign(
        ota.manifest_body("1.2.0", lying),
        purpose="ota",
        kid="ops-1",
        key=KEY,
        expires_at=FAR,
        nonce=bytes(16),
    )
    return {
        "keys": {"ops-1": signed.b64url(signed.public_key_raw(KEY))},
        "running": "1.0.0",
        "image": good.image.hex(),
        "manifest": good.manifest.decode(),
        "unsigned": ota.manifest_body("1.1.0", good.image).decode(),
        "wrong_key": upd("1.1.0", key=OTHER).manifest.decode(),
        "downgrade": old.manifest.decode(),
        "downgrade_image": old.image.hex(),
        "same_version": upd("1.0.0", nonce=b"same-version-1.0").manifest.decode(),
        "corrupt_image": bytes(corrupt_image).hex(),
        "lying_image": lying.hex(),
        "lying_manifest": lying_manifest.decode(),
    }


def build() -> dict[str, dict[str, Any]]:
    return {
        "nodewire.json": nodewire_vectors(),
        "signed.json": signed_vectors(),
        "ota.json": ota_vectors(),
        "delegation.json": delegation_vectors(),
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=True) + "\n"


if __name__ == "__main__":
    if "--write" in sys.argv:
        for name, doc in build().items():
            (DIR / name).write_text(render(doc))
            print(f"wrote {DIR / name}")
