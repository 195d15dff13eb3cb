"""Downlink commands: what the city brain asks a gateway, and what the gateway answers.

A request travels on ``cityedge/v1/{site}/{gateway}/cmd/req`` inside a signed envelope
(:mod:`protocols.signed`, purpose ``command``); its signed body is a :class:`CommandRequest` in
UTF-8 JSON. The gateway answers every request, accepted or not, with a :class:`CommandReply` on
``.../cmd/res``. Replies are not signed: only the gateway can publish below its own prefix (the
broker's ACL), which is what makes a reply trustworthy.

The request names its target gateway inside the signature, so a command signed for one gateway
is refused by every other (``wrong-target``) and cannot be replayed across gateways.

:func:`decode_request` checks its limits before parsing (at most :data:`MAX_REQUEST_BYTES`,
nested at most :data:`protocols.boundedjson.MAX_DEPTH` deep, finite numbers, encodable strings)
and raises only :class:`~protocols.errors.DecodeError`.

Reasons for a refusal (``reason``), stable for scripts and audit records: every
:class:`~protocols.signed.Refusal` (``unsigned``, ``malformed``, ``wrong-purpose``, ``unknown-key``,
``bad-signature``, ``expired``, ``too-long``, ``replayed``) and :class:`CommandFailure`
(``wrong-target``, ``unknown-command``, ``bad-args``, ``failed``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    AwareDatetime,
    Field,
    StringConstraints,
    TypeAdapter,
)

from protocols import boundedjson, signed
from protocols.envelope import ContractModel, Ident, decode_with
from protocols.errors import DecodeError

COMMANDS: Final = ("ping", "config.get", "config.apply", "outbox.stats")
MAX_REQUEST_BYTES: Final = 768 * 1024  # the signed body; a config.apply carries a site file
REQUEST_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_REQUEST_ID: Final = re.compile(REQUEST_ID_PATTERN)

RequestId = Annotated[
    str,
    StringConstraints(pattern=REQUEST_ID_PATTERN),
    Field(description="1-64 letters, digits, '_', '.', ':', '-'; echoed in the reply"),
]


class CommandFailure(StrEnum):
    WRONG_TARGET = "wrong-target"
    UNKNOWN_COMMAND = "unknown-command"
    BAD_ARGS = "bad-args"
    FAILED = "failed"


class CommandRequest(ContractModel):
    """The signed body of a command."""

    id: RequestId = Field(description="Request id, echoed in the reply")
    site: Ident = Field(description="Site of the target gateway")
    gateway: Ident = Field(description="The target gateway; any other refuses the command")
    command: str = Field(
        min_length=1, max_length=64, description="ping, config.get, config.apply, outbox.stats"
    )
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments of the command")


class CommandReply(ContractModel):
    """The gateway's answer to one request."""

    request: str | None = Field(
        description="The request's id; null when the request could not be read"
    )
    site: Ident = Field(description="Site of the answering gateway")
    gateway: Ident = Field(description="The answering gateway")
    ok: bool = Field(description="True when the command was carried out")
    reason: str | None = Field(
        default=None, description="Why it was refused or failed (a stable word); null when ok"
    )
    message: str = Field(default="", description="The same for people, in one sentence")
    result: dict[str, Any] | None = Field(
        default=None, description="What the command returned (per command)"
    )
    time: AwareDatetime = Field(description="When the gateway answered")


REQUEST_ADAPTER: Final[TypeAdapter[CommandRequest]] = TypeAdapter(CommandRequest)
REPLY_ADAPTER: Final[TypeAdapter[CommandReply]] = TypeAdapter(CommandReply)


def encode_request(request: CommandRequest) -> bytes:
    return request.model_dump_json().encode()


def decode_request(data: bytes | str) -> CommandRequest:
    try:
        boundedjson.loads(data, max_bytes=MAX_REQUEST_BYTES)
    except DecodeError as err:
        raise DecodeError(f"invalid command request: {err}") from err
    return decode_with(REQUEST_ADAPTER, data, "command request")


def encode_reply(reply: CommandReply) -> bytes:
    return reply.model_dump_json().encode()


def decode_reply(data: bytes | str) -> CommandReply:
    return decode_with(REPLY_ADAPTER, data, "command reply")


def peek_request_id(data: bytes) -> str | None:
    """The request id of a signed command that failed its checks, when one can be read within
    the limits and is a well-formed id: for the reply's correlation only, nothing else of an
    unchecked body is trusted. None when there is none (never raises)."""
    try:
        doc = boundedjson.loads(data, max_bytes=signed.MAX_ENVELOPE_BYTES)
        if not isinstance(doc, dict):
            return None
        body = doc
        if isinstance(doc.get("body"), str):
            body = boundedjson.loads(signed.unb64url(doc["body"]), max_bytes=len(data))
        rid = body.get("id") if isinstance(body, dict) else None
    except (ValueError, TypeError):  # DecodeError, and binascii.Error from base64
        return None
    return rid if isinstance(rid, str) and _REQUEST_ID.fullmatch(rid) else None
