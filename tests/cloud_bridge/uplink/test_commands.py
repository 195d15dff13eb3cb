"""The command desk: every request gets one reply and one audit record, and nothing a peer
sends can make it raise."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_bridge.uplink.commands import Audit, CommandDesk, CommandError
from protocols import commands, signed
from protocols.commands import CommandFailure, CommandRequest

NOW = 1_795_000_000.0
OPS = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


def desk() -> tuple[CommandDesk, list[Audit]]:
    audits: list[Audit] = []
    nonces = signed.NonceStore()

    async def check_nonce(nonce: str, exp: int) -> None:
        nonces.check_and_add(nonce, exp, NOW)

    async def record(a: Audit) -> None:
        audits.append(a)

    async def ping(_r: CommandRequest) -> dict[str, Any]:
        return {"pong": True}

    async def picky(r: CommandRequest) -> dict[str, Any]:
        if "n" not in r.args:
            raise CommandError(CommandFailure.BAD_ARGS, "give n")
        return {}

    async def broken(_r: CommandRequest) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    d = CommandDesk(
        site="s",
        gateway="g",
        keys={"ops": OPS.public_key()},
        handlers={"ping": ping, "picky": picky, "broken": broken},
        now=lambda: NOW,
        check_nonce=check_nonce,
        record=record,
        max_ttl_s=3600,
    )
    return d, audits


def body(rid: str = "r1", command: str = "ping", gateway: str = "g", **args: Any) -> bytes:
    return commands.encode_request(
        CommandRequest(id=rid, site="s", gateway=gateway, command=command, args=args)
    )


def sign(
    data: bytes,
    key: Ed25519PrivateKey = OPS,
    kid: str = "ops",
    exp: float = NOW + 60,
    purpose: str = "command",
) -> bytes:
    return signed.sign(data, purpose=purpose, kid=kid, key=key, expires_at=int(exp))


CASES = [
    ("ok", lambda: sign(body()), True, None, "r1"),
    ("unsigned", lambda: body(), False, "unsigned", "r1"),
    ("not json", lambda: b"\xff\x00", False, "malformed", None),
    ("json list", lambda: b"[1, 2]", False, "malformed", None),
    ("bad body", lambda: sign(b'{"id": "r1"}'), False, "malformed", "r1"),
    ("other purpose", lambda: sign(body(), purpose="ota"), False, "wrong-purpose", "r1"),
    ("unknown key", lambda: sign(body(), key=STRANGER, kid="stranger"), False, "unknown-key", "r1"),
    ("forged", lambda: sign(body(), key=STRANGER), False, "bad-signature", "r1"),
    ("expired", lambda: sign(body(), exp=NOW - 1), False, "expired", "r1"),
    ("too long", lambda: sign(body(), exp=NOW + 7200), False, "too-long", "r1"),
    ("other gateway", lambda: sign(body(gateway="h")), False, "wrong-target", "r1"),
    ("unknown command", lambda: sign(body(command="reboot")), False, "unknown-command", "r1"),
    ("bad args", lambda: sign(body(command="picky")), False, "bad-args", "r1"),
    ("handler fails", lambda: sign(body(command="broken")), False, "failed", "r1"),
]


@pytest.mark.parametrize(("name", "make", "ok", "reason", "rid"), CASES, ids=[c[0] for c in CASES])
async def test_each_request_gets_a_reply_with_a_reason_and_an_audit_record(
    name: str, make: Any, ok: bool, reason: str | None, rid: str | None
) -> None:
    d, audits = desk()
    reply = await d.handle(make())
    assert (reply.ok, reply.reason, reply.request) == (ok, reason, rid), reply
    assert reply.message and (reply.gateway, reply.site) == ("g", "s")
    assert [(a.ok, a.reason) for a in audits] == [(ok, reason)]
    if ok:
        assert reply.result == {"pong": True}


async def test_a_replay_is_refused() -> None:
    d, _audits = desk()
    data = sign(body())
    assert (await d.handle(data)).ok
    again = await d.handle(data)
    assert (again.ok, again.reason) == (False, "replayed")
    assert (d.accepted, d.refused) == (1, 1)


async def test_a_failing_audit_store_still_replies() -> None:
    d, _ = desk()

    async def full_disk(_a: Audit) -> None:
        raise OSError("disk full")

    d.record = full_disk
    assert (await d.handle(sign(body()))).ok


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda d: json.dumps(d).encode(),
            st.dictionaries(
                st.text(max_size=8), st.one_of(st.text(max_size=20), st.integers()), max_size=8
            ),
        ),
    )
)
async def test_garbage_always_gets_a_refusal_never_an_exception(data: bytes) -> None:
    d, audits = desk()
    reply = await d.handle(data)
    assert not reply.ok and reply.reason in {"unsigned", "malformed"}
    assert len(audits) == 1
