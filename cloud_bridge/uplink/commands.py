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

Limits come before any parsing (:mod:`protocols.boundedjson`: size, nesting, NaN, lone
surrogates), so a hostile message costs at most a bounded parse and is refused as
``malformed``; what is echoed from an unchecked message (the request id) is echoed only when it
is a well-formed id. Should a check still raise something unforeseen, the request is answered
``failed`` and the desk keeps answering: nothing a peer sends stops the listener.

Refusals are logged rate-limited (:class:`RefusalLog`): the first of each reason in a window at
WARNING, then one line per window with the counts by reason; every refusal still has its audit
record and is counted in :attr:`CommandDesk.refused_by_reason`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_bridge.errors import PermanentBridgeError
from protocols import signed
from protocols.commands import (
    CommandFailure,
    CommandReply,
    CommandRequest,
    decode_request,
    peek_request_id,
)
from protocols.errors import DecodeError

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS: Final = 500  # of a reply's message (and its audit record and log line)

Handler = Callable[[CommandRequest], Awaitable[dict[str, Any]]]


class CommandError(PermanentBridgeError):
    """Raised by a handler: ``reason`` is ``bad-args`` or ``failed``; the message is the reply's."""

    def __init__(self, reason: CommandFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class RefusalLog:
    """Refused commands in the log without flooding it: in each window of ``interval_s`` the
    first refusal of each reason is logged whole at WARNING; the others are counted, and the
    counts by reason are logged once the window is over (with the next refusal, or
    :meth:`flush`)."""

    now: Callable[[], float]
    interval_s: float = 60.0
    suppressed: dict[str, int] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)
    _window_start: float | None = None

    def note(self, reason: str, line: str, *args: object, exc_info: bool = False) -> None:
        now = self.now()
        if self._window_start is None or now - self._window_start >= self.interval_s:
            self.flush()
            self._window_start = now
        if reason in self._seen:
            self.suppressed[reason] = self.suppressed.get(reason, 0) + 1
            return
        self._seen.add(reason)
        log.warning(line, *args, exc_info=exc_info)

    def flush(self) -> None:
        """Log the counts not yet logged, and start a new window."""
        if self.suppressed:
            counts = ", ".join(f"{r} {n}" for r, n in sorted(self.suppressed.items()))
            log.warning(
                "%d more refusals in the last %.0f s, not logged one by one: %s",
                sum(self.suppressed.values()),
                self.now() - (self._window_start or self.now()),
                counts,
            )
        self.suppressed = {}
        self._seen = set()
        self._window_start = None


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
        log_interval_s: float = 60.0,
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
        self.refused_by_reason: dict[str, int] = {}
        self.refusal_log = RefusalLog(now, log_interval_s)

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
            message=_printable(message),
            result=result,
            time=datetime.fromtimestamp(self.now(), tz=UTC),
        )

    async def handle(self, data: bytes) -> CommandReply:
        """Check and carry out one request; always returns the reply to send, whatever
        ``data`` holds."""
        try:
            return await self._handle(data)
        # a bug, not the peer's doing: logged with its traceback (rate-limited), answered, and
        # the desk keeps serving
        except Exception:  # noqa: BLE001
            self.refusal_log.note(
                "internal-error",
                "command of %d bytes: unexpected error while checking it; answered 'failed'",
                len(data),
                exc_info=True,
            )
            reply = self._reply(
                None, False, CommandFailure.FAILED, "the gateway could not check this request"
            )
            return await self._done(reply, None, None)

    async def _handle(self, data: bytes) -> CommandReply:
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
                peek_request_id(data) if request is None else request.id,
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
            reason = reply.reason or "?"
            self.refused_by_reason[reason] = self.refused_by_reason.get(reason, 0) + 1
            self.refusal_log.note(
                reason,
                "command %s (%s, key %s) refused: %s: %s (the first %s refusal in %.0f s; "
                "the next are counted)",
                command,
                reply.request,
                kid,
                reason,
                reply.message,
                reason,
                self.refusal_log.interval_s,
            )
        audit = Audit(reply.request, kid, command, reply.ok, reply.reason, reply.message)
        try:
            await self.record(audit)
        except Exception:
            log.exception("could not write the audit record of command %s", reply.request)
        return reply


def _printable(text: str) -> str:
    """``text`` as it may go into a reply, an audit record and a log line: bounded, encodable
    (a lone surrogate escaped) and on one line."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = text.replace("\r", " ").replace("\n", " ")
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text
