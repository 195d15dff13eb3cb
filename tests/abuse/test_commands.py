"""The command entry point under abuse: the gateway's bridge on the real mosquitto, with the real
``config.get``/``config.apply`` handlers, sent wrong, hostile and huge messages on its
``cmd/req`` topic. Each row is refused with the right reason, and after each one a good command
is still answered (the listener keeps running). Forged commands with small-order keys, the
old ``AAAA…`` fallback of the river-station example among them, change nothing."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloud_bridge.link import LinkSettings, MqttLink
from cloud_bridge.uplink.bridge import Bridge, BridgeSettings
from cloud_bridge.uplink.commands import Audit, CommandDesk
from cloud_bridge.uplink.outbox import Outbox, OutboxSettings
from edge.remote_config import RemoteConfig
from protocols import commands, signed, topics
from protocols.commands import CommandReply
from sim.localsite import Broker
from tests.abuse.forge import FORGED_SIG, SMALL_ORDER, forge
from tests.edge.test_config import GOOD as GOOD_SITE

SITE, GW = "riverside", "gw-1"
OPS = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()
SITE_FILE = GOOD_SITE.replace("${BROKER_PASSWORD}", "pw")  # riverside/gw-1, valid
_ids = iter(range(1_000_000))


def body(
    rid: str | None = None,
    command: str = "ping",
    gateway: str = GW,
    args: dict[str, Any] | None = None,
) -> bytes:
    request = commands.CommandRequest(
        id=rid or f"r-{next(_ids)}", site=SITE, gateway=gateway, command=command, args=args or {}
    )
    return commands.encode_request(request)


def raw_body(rid: str, args_json: str, command: str = "ping") -> bytes:
    """A request body written by hand (for what the models would never encode)."""
    return (
        f'{{"id":"{rid}","site":"{SITE}","gateway":"{GW}","command":"{command}",'
        f'"args":{args_json}}}'
    ).encode()


def sign(
    data: bytes, key: Ed25519PrivateKey = OPS, kid: str = "ops", ttl: int = 60, **kw: Any
) -> bytes:
    args: dict[str, Any] = {"purpose": "command", "kid": kid, "key": key}
    args.update(kw)
    return signed.sign(data, expires_at=int(time.time()) + ttl, **args)


def tamper(data: bytes, **changes: object) -> bytes:
    doc = json.loads(data)
    doc.update(changes)
    return json.dumps(doc).encode()


def with_r_of_small_order(data: bytes) -> bytes:
    """The real key's envelope with its signature swapped for R = identity, S = 0."""
    return tamper(data, sig=signed.b64url(FORGED_SIG))


@dataclass
class Desk:
    bridge: Bridge
    brain: MqttLink
    site_file: Path

    async def ask(self, data: bytes, timeout_s: float = 10.0) -> CommandReply:
        await self.brain.publish(topics.command_request_topic(SITE, GW), data)
        return commands.decode_reply((await self.brain.receive(timeout_s)).payload)

    async def still_answers(self) -> None:
        rid = f"alive-{next(_ids)}"
        reply = await self.ask(sign(body(rid)))
        assert (reply.request, reply.ok, reply.result and reply.result["pong"]) == (
            rid,
            True,
            True,
        ), reply


async def open_desk(
    mosquitto: Broker, tmp_path: Path, keys: dict[str, Ed25519PublicKey]
) -> AsyncIterator[Desk]:
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE_FILE, encoding="utf-8")
    remote = RemoteConfig(site_file)
    settings = BridgeSettings(
        site=SITE,
        gateway=GW,
        link=LinkSettings("127.0.0.1", mosquitto.port, client_id="gw", connect_timeout_s=5),
        outbox_path=tmp_path / "outbox.db",
        group_commit_ms=10,
        reconnect_initial_s=0.1,
        reconnect_max_s=0.5,
        command_keys=keys,
    )
    async with (
        Bridge.open(settings, handlers=remote.handlers()) as bridge,
        MqttLink.open(LinkSettings("127.0.0.1", mosquitto.port, client_id="brain")) as brain,
    ):
        run = asyncio.create_task(bridge.run())
        await brain.subscribe(topics.command_reply_topic(SITE, GW))
        async with asyncio.timeout(20):
            await bridge.connected.wait()
        try:
            yield Desk(bridge, brain, site_file)
        finally:
            bridge.close_intake()
            await asyncio.wait_for(run, 20)
            remote.stop()


@pytest.fixture
async def desk(mosquitto: Broker, tmp_path: Path) -> AsyncIterator[Desk]:
    async for d in open_desk(mosquitto, tmp_path, {"ops": OPS.public_key()}):
        yield d


def b64(data: bytes) -> str:
    return signed.b64url(data)


@functools.cache
def good() -> bytes:
    """The valid command the hostile rows are made from, and then replayed: signed when first
    asked for (in the test), not when the module is collected (minutes earlier under xdist)."""
    return sign(body("r-replay"), ttl=600)


# name, message, reason, the request id the reply must carry
ROWS: list[tuple[str, Callable[[], bytes], str, str | None]] = [
    ("depth bomb in an unsigned body", lambda: json.dumps({"body": b64(b"[" * 100_000)}).encode(), "unsigned", None),
    ("depth bomb as the envelope", lambda: b"[" * 100_000, "malformed", None),
    ("object depth bomb as the envelope", lambda: b'{"a":' * 100_000, "malformed", None),
    ("depth bomb as a signed body", lambda: sign(b"[" * 100_000), "malformed", None),
    ("args nested 100 deep", lambda: sign(raw_body("r-deep", '{"a":' * 100 + "1" + "}" * 100)), "malformed", None),
    ("2 MiB of spaces", lambda: b" " * (2 << 20), "malformed", None),
    ("a signed body over the size limit", lambda: sign(body("r-big", args={"pad": "x" * 900_000})), "malformed", None),
    ("empty message", lambda: b"", "malformed", None),
    ("not UTF-8", lambda: b"\xff\xfe{}", "malformed", None),
    ("UTF-16 JSON", lambda: good().decode().encode("utf-16"), "malformed", None),
    ("a JSON list", lambda: b"[1, 2]", "malformed", None),
    ("a JSON string", lambda: b'"ping"', "malformed", None),
    ("exp as text", lambda: tamper(sign(body("r-exp-text")), exp="soon"), "malformed", "r-exp-text"),
    ("exp with 5000 digits", lambda: good().replace(b'"exp":', b'"exp":' + b"9" * 5000), "malformed", None),
    ("kid as a number", lambda: tamper(sign(body("r-kid")), kid=7), "malformed", "r-kid"),
    ("NaN as exp", lambda: good().replace(b'"exp":', b'"exp":NaN,"x":'), "malformed", None),
    ("body not base64", lambda: tamper(good(), body="!!!"), "malformed", None),
    ("sig not base64", lambda: tamper(sign(body("r-sig64")), sig="@@"), "malformed", "r-sig64"),
    ("short sig", lambda: tamper(sign(body("r-sig")), sig="AAAA"), "malformed", "r-sig"),
    ("lone surrogate id, unsigned", lambda: b'{"id":"\\ud800","command":"ping"}', "malformed", None),
    ("lone surrogate id, signed", lambda: sign(raw_body("\\udfff", "{}")), "malformed", None),
    ("lone surrogate field name", lambda: sign(raw_body("r-sk", '{"\\ud800":1}')), "malformed", None),
    ("NaN in args", lambda: sign(raw_body("r-nan", '{"x":NaN}')), "malformed", None),
    ("1e400 in args", lambda: sign(raw_body("r-inf", '{"x":1e400}')), "malformed", None),
    ("id with a line break", lambda: sign(raw_body("r-1\\nforged", "{}")), "malformed", None),
    ("id as a number", lambda: sign(raw_body("r-n", "{}").replace(b'"r-n"', b"17")), "malformed", None),
    ("command as a list", lambda: sign(raw_body("r-cl", "{}").replace(b'"ping"', b'["ping"]')), "malformed", "r-cl"),
    ("args as a list", lambda: sign(raw_body("r-al", "[1]")), "malformed", "r-al"),
    ("an unknown field", lambda: sign(raw_body("r-x", "{}")[:-1] + b',"sudo":true}'), "malformed", "r-x"),
    ("unsigned request", lambda: body("r-unsigned"), "unsigned", "r-unsigned"),
    ("signed for OTA", lambda: sign(body("r-ota"), purpose="ota"), "wrong-purpose", "r-ota"),
    ("unknown key id", lambda: sign(body("r-who"), key=STRANGER, kid="stranger"), "unknown-key", "r-who"),
    ("signed by another key", lambda: sign(body("r-forged"), key=STRANGER), "bad-signature", "r-forged"),
    ("R of small order", lambda: with_r_of_small_order(sign(body("r-small-r"))), "bad-signature", "r-small-r"),
    ("S not reduced", lambda: tamper(good(), sig=b64(signed.unb64url(json.loads(good())["sig"])[:32] + b"\xff" * 32)), "bad-signature", "r-replay"),
    ("body swapped", lambda: tamper(sign(body("r-swap")), body=b64(body("r-swap", "config.get"))), "bad-signature", "r-swap"),
    ("expired", lambda: sign(body("r-old"), ttl=-5), "expired", "r-old"),
    ("valid for a week", lambda: sign(body("r-week"), ttl=7 * 86_400), "too-long", "r-week"),
    ("for another gateway", lambda: sign(body("r-other", gateway="gw-2")), "wrong-target", "r-other"),
    ("unknown command", lambda: sign(body("r-reboot", "reboot")), "unknown-command", "r-reboot"),
    ("config.apply without yaml", lambda: sign(body("r-apply", "config.apply")), "bad-args", "r-apply"),
    ("config.apply of a bad site file", lambda: sign(body("r-bad-yaml", "config.apply", args={"yaml": "site: [\n"})), "bad-args", "r-bad-yaml"),
]  # fmt: skip


async def test_the_first_depth_bomb_of_the_issue_no_longer_stops_the_uplink(desk: Desk) -> None:
    bomb = json.dumps({"body": b64(b"[" * 100_000)}).encode()
    reply = await desk.ask(bomb)
    assert (reply.ok, reply.reason) == (False, "unsigned")
    await desk.still_answers()
    assert desk.bridge.connected.is_set()


async def test_every_hostile_message_is_refused_with_its_reason_and_the_desk_keeps_answering(
    desk: Desk,
) -> None:
    before = desk.site_file.read_bytes()
    seen = []
    for name, make, reason, rid in ROWS:
        reply = await desk.ask(make())
        seen.append((name, reply.ok, reply.reason, reply.request))
        assert (name, reply.ok, reply.reason, reply.request) == (name, False, reason, rid), reply
        assert reply.message and len(reply.message) <= 500
        await desk.still_answers()
    # a replay, after the original was accepted
    assert (await desk.ask(good())).ok
    replayed = await desk.ask(good())
    assert (replayed.ok, replayed.reason, replayed.request) == (False, "replayed", "r-replay")
    # every message left exactly one audit record, all readable
    audit = await desk.bridge.audit_log(1000)
    assert len(audit) == 2 * len(ROWS) + 2
    assert desk.site_file.read_bytes() == before
    assert desk.bridge.commands.refused_by_reason["malformed"] == sum(
        r[2] == "malformed" for r in ROWS
    )


@pytest.mark.parametrize("name", ["order 4 (all zero)", "identity", "order 8 a", "y = p + 1"])
async def test_forged_commands_with_a_small_order_key_are_refused(
    mosquitto: Broker, tmp_path: Path, name: str
) -> None:
    """A gateway that trusts a small-order key (as the river-station example's fallback made
    it): forged ``ping``, ``config.get`` and ``config.apply`` are refused, the site file stays."""
    weak = bytes.fromhex(SMALL_ORDER[name])
    keys = {"ops": OPS.public_key(), "ops-2026": Ed25519PublicKey.from_public_bytes(weak)}
    async for d in open_desk(mosquitto, tmp_path, keys):
        before = d.site_file.read_bytes()
        exp = int(time.time()) + 60
        new_site = SITE_FILE.replace("5020", "5099")
        answers = []
        for command, args in [
            ("ping", {}),
            ("config.get", {}),
            ("config.apply", {"yaml": new_site, "rollback_after_s": 3600}),
        ]:
            rid = f"forged-{command}"
            data = forge(body(rid, command, args=args), key=weak, kid="ops-2026", expires_at=exp)
            reply = await d.ask(data)
            answers.append((reply.request, reply.ok, reply.reason, "not trusted" in reply.message))
        assert answers == [
            ("forged-ping", False, "unknown-key", True),
            ("forged-config.get", False, "unknown-key", True),
            ("forged-config.apply", False, "unknown-key", True),
        ]
        assert d.site_file.read_bytes() == before
        assert not d.site_file.with_name("site.yaml.trial").exists()
        await d.still_answers()  # the real key still works


NOW = 1_800_000_000.0


def offline_desk(clock: list[float]) -> CommandDesk:
    async def nonce(_n: str, _e: int) -> None:
        return None

    async def record(_a: Audit) -> None:
        return None

    return CommandDesk(
        site=SITE,
        gateway=GW,
        keys={"ops": OPS.public_key()},
        handlers={},
        now=lambda: clock[0],
        check_nonce=nonce,
        record=record,
        log_interval_s=10,
    )


async def test_refusals_are_logged_rate_limited_with_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [NOW]
    d = offline_desk(clock)
    caplog.set_level(logging.WARNING, logger="cloud_bridge.uplink.commands")
    for i in range(4000):  # 10 s of a flood: 400 per second, two kinds
        clock[0] = NOW + i / 400
        await d.handle(b"\x00" if i % 2 else body(f"r-{i}"))
    clock[0] = NOW + 10
    await d.handle(b"\x00")  # the next window: counts of the last one, then the first again
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert "refused: malformed" in lines[0] or "refused: malformed" in lines[1]
    assert "refused: unsigned" in lines[0] or "refused: unsigned" in lines[1]
    assert lines[2].startswith("3998 more refusals in the last 10 s")
    assert "malformed 1999, unsigned 1999" in lines[2]
    assert "refused: malformed" in lines[3]
    assert d.refused == 4001 and d.refused_by_reason == {"malformed": 2001, "unsigned": 2000}


async def test_an_unforeseen_error_is_answered_and_the_desk_keeps_serving() -> None:
    d = offline_desk([NOW])

    async def broken_nonce_store(_n: str, _e: int) -> None:
        raise OSError("disk I/O error")

    d._check_nonce = broken_nonce_store
    reply = await d.handle(
        signed.sign(body("r-1"), purpose="command", kid="ops", key=OPS, expires_at=int(NOW) + 60)
    )
    assert (reply.ok, reply.reason) == (False, "failed")


def test_a_lone_surrogate_never_leaves_the_audit_transaction_open(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", OutboxSettings(), lambda: NOW)
    with pytest.raises(UnicodeEncodeError):
        outbox.audit(request="\ud800", kid=None, command=None, ok=False, reason="x", message="m")
    outbox.audit(request="r-2", kid=None, command=None, ok=False, reason="x", message="m")
    assert outbox.next_session() == 1
    assert [a["request"] for a in outbox.audit_log()] == ["r-2"]
    outbox.close()
