"""The bin, collection and hygiene envelope kinds: round trips and the malformed cases."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from protocols import envelope as env
from protocols.errors import DecodeError

HEAD = {
    "id": "01938f2e-6a4b-7c3d-9e1f-0a2b3c4d5e6f",
    "site": "depot",
    "gateway": "gw-1",
    "time": "2026-11-24T08:00:00Z",
    "schema_version": 1,
}
BIN = {
    **HEAD,
    "device": "bin-12",
    "kind": "bin",
    "payload": {
        "event": "needs_collection",
        "fill": 0.81,
        "fill_camera": 0.8,
        "fill_sensor": 0.82,
        "threshold": 0.8,
        "overflow": 0.01,
        "camera": "cam-1",
        "models": {"bin-fill": "bin-fill@1+5d1340adf971"},
    },
}
COLLECTION = {
    **HEAD,
    "device": "gw-1",
    "kind": "collection",
    "payload": {
        "reason": "change",
        "watched": 3,
        "bins": [
            {"bin": "bin-12", "fill": 0.81, "since": "2026-11-24T07:00:00Z", "overflowing": False}
        ],
    },
}
HYGIENE = {
    **HEAD,
    "device": "cam-1",
    "kind": "hygiene",
    "payload": {
        "camera": "cam-1",
        "zone": "clean-1",
        "track": 3,
        "violations": ["no_mask", "no_hair_cover"],
        "since": "2026-11-24T07:59:55Z",
        "duration_s": 5.0,
        "mask": 0.02,
        "hair_cover": 0.1,
        "person_score": 0.6,
        "evidence": {
            "id": "cam-1-1-3",
            "sha256": "a" * 64,
            "width": 200,
            "height": 320,
            "faces_blurred": 1,
            "jpeg_base64": None,
        },
        "models": {},
    },
}


@pytest.mark.parametrize("doc", [BIN, COLLECTION, HYGIENE], ids=lambda d: d["kind"])
def test_round_trip(doc: dict[str, Any]) -> None:
    e = env.decode(json.dumps(doc))
    assert e.kind == doc["kind"]
    assert env.decode(env.encode(e)) == e


def changed(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (changed(BIN, "payload.fill", 1.5), "bin.payload.fill"),
        (changed(BIN, "payload.event", "full"), "bin.payload.event"),
        (changed(BIN, "payload.camera", "cam 1"), "bin.payload.camera"),
        (changed(COLLECTION, "payload.reason", "because"), "collection.payload.reason"),
        (changed(COLLECTION, "payload.watched", -1), "collection.payload.watched"),
        (changed(HYGIENE, "payload.violations", []), "hygiene.payload.violations"),
        (changed(HYGIENE, "payload.violations", ["no_gloves"]), "hygiene.payload.violations"),
        (changed(HYGIENE, "payload.evidence.sha256", "xyz"), "hygiene.payload.evidence.sha256"),
        (changed(HYGIENE, "payload.person_score", 2), "hygiene.payload.person_score"),
    ],
)
def test_malformed_payloads_name_the_field(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(DecodeError, match=where.replace(".", r"\.")):
        env.decode(json.dumps(doc))
