"""What every converter does last: wrap the graph in a model the same way, check it, and write
it byte-for-byte reproducibly (the built file's sha256 is pinned in the manifest)."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper

OPSET = 13
IR_VERSION = 8  # what ONNX Runtime 1.18+ reads; fixed so a newer onnx package writes the same bytes


def finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="cityedge-models",
        producer_version="1",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, out: Path) -> None:
    out.write_bytes(model.SerializeToString(deterministic=True))
