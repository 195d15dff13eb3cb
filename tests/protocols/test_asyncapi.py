"""The AsyncAPI document: equal to the committed copy, valid AsyncAPI 3.0, complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from protocols import asyncapi, topics
from protocols import envelope as env

COMMITTED = Path(asyncapi.__file__).parent / "schemas" / "asyncapi.json"
OFFICIAL = Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json"


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(OFFICIAL.read_text()))


def test_committed_document_is_the_generated_one() -> None:
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert committed == asyncapi.document(), "run 'cityedge schema --write' and commit the result"


def test_document_is_valid_asyncapi_3() -> None:
    errors = list(validator().iter_errors(asyncapi.document()))
    assert not errors, [e.message for e in errors[:3]]


def test_a_broken_document_is_caught() -> None:
    doc = asyncapi.document()
    doc["channels"]["telemetry"]["address"] = 5
    doc["operations"]["send-alarm"]["action"] = "publish"  # AsyncAPI 2 wording
    assert len(list(validator().iter_errors(doc))) >= 2


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_kind_has_a_channel_and_every_reference_resolves() -> None:
    doc = asyncapi.document()
    kinds = {m.model_fields["kind"].default for m in asyncapi._envelope_models()}
    assert kinds == set(env.json_schema()["discriminator"]["mapping"])
    for kind in kinds:
        assert (
            doc["channels"][kind]["address"]
            == f"{topics.ROOT}/{{site}}/{{gateway}}/{kind}/{{device}}"
        )
    for ref in _refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert node, ref
    # the envelope schemas in the document are the envelope's own
    tele = doc["components"]["schemas"]["TelemetryEnvelope"]
    assert set(tele["properties"]) == set(env.TelemetryEnvelope.model_fields)
