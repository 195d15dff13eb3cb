"""The AsyncAPI 3.0 document of the topic tree, generated from the models (pure: a dict).

Committed at ``protocols/schemas/asyncapi.json`` and kept equal to :func:`document` by a test;
``cityedge schema --write`` regenerates it with the envelope schema. Operations are written from
the gateway's side: it *sends* envelopes, births and deaths and command replies, and *receives*
command requests and ingest heartbeats.
"""

from __future__ import annotations

from typing import Any, Final, get_args

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from protocols import envelope as env
from protocols import topics
from protocols.commands import CommandReply, CommandRequest
from protocols.session import GatewayState, HostState

VERSION: Final = "1.0.0"
_REF = "#/components/schemas/{model}"


class SignedEnvelope(BaseModel):
    """The wire form of a signed envelope (see :mod:`protocols.signed`); for commands its
    ``body`` is a :class:`~protocols.commands.CommandRequest` in UTF-8 JSON, base64url."""

    v: int
    alg: str
    purpose: str
    kid: str
    exp: int
    nonce: str
    body: str
    sig: str


def _envelope_models() -> list[type[BaseModel]]:
    return [m for m in get_args(env.EnvelopeModel) if isinstance(m, type)]


def _schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        *_envelope_models(),
        GatewayState,
        CommandRequest,
        CommandReply,
        HostState,
        SignedEnvelope,
    ]
    _, defs = models_json_schema([(m, "serialization") for m in models], ref_template=_REF)
    return dict(sorted(defs.get("$defs", {}).items()))


def _param(description: str) -> dict[str, str]:
    return {"description": description}


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document."""
    gw_params = {
        "site": _param("Site id (1-64 letters, digits, '_', '.', '-')"),
        "gateway": _param("Gateway id within the site"),
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    def add(
        name: str,
        address: str,
        params: dict[str, Any],
        model: str,
        title: str,
        action: str,
        summary: str,
    ) -> None:
        messages[name] = {
            "name": name,
            "title": title,
            "contentType": "application/json",
            "payload": {"$ref": _REF.format(model=model)},
        }
        channels[name] = {
            "address": address,
            "title": title,
            "parameters": params,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"{action}-{name}"] = {
            "action": action,
            "title": summary,
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/{name}"}],
        }

    for model in _envelope_models():
        kind = model.model_fields["kind"].default
        add(
            kind,
            f"{topics.ROOT}/{{site}}/{{gateway}}/{kind}/{{device}}",
            {**gw_params, "device": _param("Device the envelope is about")},
            model.__name__,
            f"{kind} envelopes",
            "send",
            f"The gateway publishes {kind} envelopes (QoS 1, at least once; dedupe by id)",
        )
    add(
        "state",
        f"{topics.ROOT}/{{site}}/{{gateway}}/{topics.STATE}",
        gw_params,
        "GatewayState",
        "birth and death",
        "send",
        "Retained birth on connect; the death is the will (or sent on a clean stop)",
    )
    add(
        "command-request",
        f"{topics.ROOT}/{{site}}/{{gateway}}/{topics.COMMAND}/req",
        gw_params,
        "SignedEnvelope",
        "signed command requests",
        "receive",
        "Commands to the gateway: Ed25519-signed, with key id, expiry and nonce",
    )
    add(
        "command-reply",
        f"{topics.ROOT}/{{site}}/{{gateway}}/{topics.COMMAND}/res",
        gw_params,
        "CommandReply",
        "command replies",
        "send",
        "One reply per request, accepted or refused, with a stable reason",
    )
    add(
        "ingest-heartbeat",
        f"{topics.HOST_ROOT}/{{group}}/{{worker}}",
        {"group": _param("Ingest group"), "worker": _param("Ingest worker")},
        "HostState",
        "ingest heartbeats",
        "receive",
        "Live heartbeats of the city brain's ingest workers (not retained)",
    )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "cityedge gateway ↔ city brain",
            "version": VERSION,
            "description": (
                "The MQTT topic tree between cityedge gateways and the city brain, from the "
                "gateway's side. Generated from protocols/ by `cityedge schema --write`."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": _schemas()},
    }
