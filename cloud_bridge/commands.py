"""Downlink commands on the gateway: check, carry out, answer, record.

Every message on the gateway's ``cmd/req`` topic gets exactly one :class:`CommandReply`, and
every one leaves an audit record — refused or not, readable or not. Nothing a peer sends can
raise out of :meth:`CommandDesk.handle`: a failing handler is a ``failed`` reply.

Checks, in order (the first that fails is the reply's ``reason``):

1. the signed envelope (:func:`protocols.signed.verify`, purpose ``command``, trusted key ids,
   expiry, at most ``max_ttl_s`` ahead): ``unsigned``, ``malformed``, ``wrong-purpose``,
   ``unknown-key``, ``bad-signature``, ``expired``, ``too-long``;
2. the body is a :class:`~protocols.commands.CommandRequest`: ``malformed``;
3. it names this gateway: ``wrong-target``;
4. its nonce was never accepted before (kept on disk, so also across restarts): ``replayed``;
5. the command exists: ``unknown-command``; its handler accepts the arguments: ``bad-args``;
   it ran: ``failed`` otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols import signed
from protocols.commands import CommandFailure, CommandReply, CommandRequest, decode_request
from protocols.errors import DecodeError

log = logging.getLogger(__name__)

Handler = Callable[[CommandRequest], Awaitable[dict[str, Any]]]


class CommandError(Exception):
    """Raised by a handler: ``reason`` is ``bad-args`` or ``failed``; the message is the reply's."""

    def __init__(self, reason: CommandFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Audit:
    request: str | None
    kid: str | None
    command: str | None
    ok: bool
    reason: str | None
    message: str


class CommandDesk:
    def __init__(
        self,
        *,
        site: str,
        gateway: str,
        keys: Mapping[str, Ed25519PublicKey],
        handlers: Mapping[str, Handler],
        now: Callable[[], float],
        check_nonce: Callable[[str, int], Awaitable[None]],
        record: Callable[[Audit], Awaitable[None]],
        max_ttl_s: int = 3600,
    ) -> None:
        self.site = site
        self.gateway = gateway
        self.keys = keys
        self.handlers = dict(handlers)
        self.now = now
        self.record = record
        self.max_ttl_s = max_ttl_s
        self._check_nonce = check_nonce
        self.refused = 0
        self.accepted = 0

    def _reply(
        self,
        request: str | None,
        ok: bool,
        reason: str | None = None,
        message: str = "",
        result: dict[str, Any] | None = None,
    ) -> CommandReply:
        return CommandReply(
            request=request,
            site=self.site,
            gateway=self.gateway,
            ok=ok,
            reason=reason,
            message=message,
            result=result,
            time=datetime.fromtimestamp(self.now(), tz=UTC),
        )

    async def handle(self, data: bytes) -> CommandReply:
        """Check and carry out one request; always returns the reply to send."""
        kid: str | None = None
        request: CommandRequest | None = None
        try:
            verified = signed.verify(
                data, purpose="command", keys=self.keys, now=self.now(), max_ttl_s=self.max_ttl_s
            )
            kid = verified.kid
            try:
                request = decode_request(verified.body)
            except DecodeError as err:
                raise signed.SignatureRefused(signed.Refusal.MALFORMED, str(err)) from err
            if (request.site, request.gateway) != (self.site, self.gateway):
                reply = self._reply(
                    request.id,
                    False,
                    CommandFailure.WRONG_TARGET,
                    f"this is {self.site}/{self.gateway}, the command is for "
                    f"{request.site}/{request.gateway}",
                )
                return await self._done(reply, kid, request.command)
            await self._check_nonce(verified.nonce, verified.exp)
        except signed.SignatureRefused as err:
            reply = self._reply(
                _peek_id(data) if request is None else request.id,
                False,
                err.reason.value,
                str(err).split(": ", 1)[-1],
            )
            return await self._done(reply, kid, request.command if request else None)
        return await self._done(await self._run(request), kid, request.command)

    async def _run(self, request: CommandRequest) -> CommandReply:
        handler = self.handlers.get(request.command)
        if handler is None:
            return self._reply(
                request.id,
                False,
                CommandFailure.UNKNOWN_COMMAND,
                f"unknown command {request.command!r}; known: {', '.join(sorted(self.handlers))}",
            )
        try:
            result = await handler(request)
        except CommandError as err:
            return self._reply(request.id, False, err.reason, str(err))
        except Exception as err:
            log.exception("command %s (%s) failed", request.command, request.id)
            return self._reply(request.id, False, CommandFailure.FAILED, f"{err}")
        return self._reply(request.id, True, None, "done", result)

    async def _done(
        self, reply: CommandReply, kid: str | None, command: str | None
    ) -> CommandReply:
        if reply.ok:
            self.accepted += 1
            log.info("command %s (%s, key %s) done", command, reply.request, kid)
        else:
            self.refused += 1
            log.warning(
                "command %s (%s, key %s) refused: %s: %s",
                command,
                reply.request,
                kid,
                reply.reason,
                reply.message,
            )
        audit = Audit(reply.request, kid, command, reply.ok, reply.reason, reply.message)
        try:
            await self.record(audit)
        except Exception:
            log.exception("could not write the audit record of command %s", reply.request)
        return reply


def _peek_id(data: bytes) -> str | None:
    """The request id of an envelope that failed its checks, when one can be read (for the
    reply's correlation only; nothing else of an unchecked body is trusted)."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            return None
        body = json.loads(signed.unb64url(doc["body"])) if "body" in doc else doc
        if not isinstance(body, dict):
            return None
        rid = body.get("id")
        return rid if isinstance(rid, str) and 0 < len(rid) <= 64 else None
    except (ValueError, KeyError, TypeError):
        return None
