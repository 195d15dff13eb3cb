"""Commands to gate-relay nodes: the gateway's command key, and one write in flight per node.

The key hierarchy is in ``docs/protocol.md`` ("Commands to a node") and
:mod:`protocols.delegation`: the site delegates this gateway's command key to it; a node obeys
commands signed with it only when the node belongs to this gateway. A write of ``relay_on``:

1. sign ``{"node": ..., "action": "open" | "close"}`` with the command key (expiry
   ``command_ttl_s``, a fresh nonce), the delegation beside it, and publish it on the node's
   ``cmd`` topic;
2. wait ``reply_timeout_s`` for the node's reply frame with that nonce on ``res``: ``refused``
   is an :class:`~edge.actuators.ActuationError` (the node's reason in the message), ``failed``
   a :class:`~edge.errors.DeviceError`, no reply a :class:`NodeNoReply` (as Modbus writes);
3. wait ``readback_timeout_s`` for a report of the node taken after its reply (node time at
   or after the reply's; the node reports at once after a command) and return its ``relay_on``.
   A report from the same second that still shows the old value may predate the command and is
   skipped; a later one that differs is the read-back (the caller sees a value it did not
   write: a :class:`~edge.errors.DeviceError`).

Deadlines run on the injected clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_bridge.aio import done_within
from edge.clock import Clock
from edge.errors import PermanentError
from edge.node_mqtt.config import NodeCommandsConfig
from edge.polling import NoAnswer
from protocols import delegation, nodewire, signed

T = TypeVar("T")


class CommandKeyError(PermanentError):
    """The gateway's command key or its delegation cannot be used."""

    code = "CE200"


class NodeNoReply(NoAnswer):
    """A node did not answer a command, or did not report the relay back, in time."""


@dataclass(frozen=True)
class CommandKey:
    key: Ed25519PrivateKey = field(repr=False)
    delegation: delegation.Delegation

    def sign(self, node: str, action: str, expires_at: int, nonce: bytes) -> bytes:
        body = json.dumps({"node": node, "action": action}, separators=(",", ":")).encode()
        return delegation.sign_command(
            body, key=self.key, delegation=self.delegation, expires_at=expires_at, nonce=nonce
        )


def load_command_key(config: NodeCommandsConfig, gateway: str, now: float) -> CommandKey:
    """The key and its delegation, checked against each other, this gateway and ``now``."""
    hint = "run 'cityedge provision gateway' for this gateway again and use the files it writes"
    try:
        pem = config.key_file.read_bytes()
        text = config.delegation_file.read_text()
    except OSError as err:
        raise CommandKeyError(
            f"commands: cannot read {err.filename}: {(err.strerror or str(err)).lower()}",
            hint=hint,
        ) from None
    mode = os.stat(config.key_file).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CommandKeyError(
            f"commands: {config.key_file} may be read by others (mode {stat.filemode(mode)})",
            hint=f"chmod 600 {config.key_file}",
        )
    try:
        key = serialization.load_pem_private_key(pem, None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise CommandKeyError(f"commands: {config.key_file} is not an Ed25519 key", hint=hint)
    try:
        granted = delegation.read(text)
    except delegation.DelegationRefused as err:
        raise CommandKeyError(f"commands: {config.delegation_file}: {err}", hint=hint) from None
    if granted.key != signed.public_key_raw(key):
        raise CommandKeyError(
            f"commands: {config.delegation_file} delegates another key than {config.key_file}",
            hint=hint,
        )
    if granted.gateway != gateway:
        raise CommandKeyError(
            f"commands: the key is delegated to gateway {granted.gateway}, this is {gateway}",
            hint=hint,
        )
    if granted.expires_at <= now:
        raise CommandKeyError(
            f"commands: the delegation of {granted.kid} expired; nodes refuse its commands",
            hint=hint,
        )
    return CommandKey(key, granted)


@dataclass
class Pending:
    """A write to a node in flight: its reply by nonce, then the report that reads it back."""

    nonce: str
    want: bool
    reply: asyncio.Future[nodewire.ReplyFrame]
    readback: asyncio.Future[bool]
    replied_at: int | None = None  # node time of a "done" reply

    def replied(self, frame: nodewire.ReplyFrame) -> None:
        if frame.nonce != self.nonce or self.reply.done():
            return
        if frame.result is nodewire.Result.DONE:
            self.replied_at = frame.time
        self.reply.set_result(frame)

    def reported(self, frame: nodewire.ReadingsFrame) -> None:
        if self.replied_at is None or self.readback.done() or frame.time < self.replied_at:
            return
        for r in frame.readings:
            if r.point == "relay_on" and isinstance(r.value, bool):
                if r.value == self.want or frame.time > self.replied_at:
                    self.readback.set_result(r.value)
                return


async def within(clock: Clock, fut: asyncio.Future[T], seconds: float, what: str) -> T:
    """``fut``'s result, or :class:`NodeNoReply` after ``seconds`` on ``clock``."""
    if await done_within(clock, fut, seconds):
        return fut.result()
    raise NodeNoReply(
        f"{what} within {seconds:g} s",
        hint="check that the node is up (its status), belongs to this gateway and has its clock set",
    )
