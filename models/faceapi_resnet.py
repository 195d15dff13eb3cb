"""face-api.js's port of dlib's face-recognition ResNet → one ONNX graph.

Source: ``@vladmandic/face-api`` ``model/face_recognition_model.bin`` with its
``-weights_manifest.json`` (tfjs weights: uint8 quantised as ``q * scale + min``, or raw float32
where the manifest gives no quantisation), and the architecture in
``src/faceRecognitionNet/`` of the same package:

- input 150x150 RGB, minus the mean (122.782, 117.001, 104.298), divided by 255;
- ``convDown`` 7x7/2 valid → max-pool 3x3/2 valid → residual blocks (32x3, 64 down + 3,
  128 down + 2, 256 down + 2, 256 down) → mean over H, W → ``fc`` (256→128);
- each conv is conv + bias, then a per-channel scale layer (``x * w + b``); ReLU except on the
  second conv of a residual block. A down block adds a 2x2/2 average pool of its input, with
  zero channels appended when the width grows and the conv output zero-padded by one row and
  column when it is smaller than the pooled input (as ``residualDown`` does).

The scale layer is folded into the conv: ``W' = W * s``, ``b' = b * s + t`` (float32).
The graph takes NHWC float pixels 0-255 and returns ``embedding`` [N, 128].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.onnx_out import finish, save
from models.tfjs_weights import decode_weights

MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SIZE = 150


def read_weights(manifest_path: Path, bin_path: Path) -> dict[str, np.ndarray]:
    """The named float32 tensors of a tfjs weights manifest + its one binary shard."""
    groups = json.loads(manifest_path.read_text(encoding="utf-8"))
    return decode_weights(groups, bin_path.read_bytes(), str(bin_path))


@dataclass
class _Graph:
    weights: dict[str, np.ndarray]
    nodes: list[onnx.NodeProto]
    inits: list[onnx.TensorProto]
    counter: int = 0

    def name(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, prefix: str, stride: int, relu: bool, same: bool) -> str:
        filters = self.weights[f"{prefix}/conv/filters"]  # [kh, kw, in, out]
        bias = self.weights[f"{prefix}/conv/bias"]
        s = self.weights[f"{prefix}/scale/weights"]
        t = self.weights[f"{prefix}/scale/biases"]
        w = np.transpose(filters, (3, 2, 0, 1)) * s[:, None, None, None]
        b = bias * s + t
        k = filters.shape[0]
        pads = [k // 2] * 4 if same else [0, 0, 0, 0]
        y = self.node(
            "Conv",
            [
                x,
                self.const(f"{prefix}/W", w.astype(np.float32)),
                self.const(f"{prefix}/B", b.astype(np.float32)),
            ],
            prefix.replace("/", "_"),
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=pads,
        )
        return self.node("Relu", [y], "relu") if relu else y


def _out(size: int, k: int, s: int) -> int:
    return (size - k) // s + 1


def build_graph(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = _Graph(weights, [], [])
    mean = np.array(MEAN_RGB, dtype=np.float32).reshape(1, 1, 1, 3)
    x = g.node("Sub", ["image", g.const("mean_rgb", mean)], "centre")
    x = g.node("Mul", [x, g.const("inv255", np.array(1 / 255, dtype=np.float32))], "norm")
    x = g.node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    x = g.conv(x, "conv32_down", 2, True, same=False)
    size = _out(INPUT_SIZE, 7, 2)
    x = g.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2])
    size = _out(size, 3, 2)
    channels = 32

    def residual(x: str, prefix: str) -> str:
        y = g.conv(x, f"{prefix}/conv1", 1, True, same=True)
        y = g.conv(y, f"{prefix}/conv2", 1, False, same=True)
        return g.node("Relu", [g.node("Add", [y, x], "add")], "relu")

    def residual_down(x: str, prefix: str, size: int, cin: int) -> tuple[str, int, int]:
        y = g.conv(x, f"{prefix}/conv1", 2, True, same=False)
        y = g.conv(y, f"{prefix}/conv2", 1, False, same=True)
        cout = int(weights[f"{prefix}/conv2/conv/bias"].shape[0])
        conv_size = _out(size, 3, 2)
        pooled = g.node("AveragePool", [x], "avgpool", kernel_shape=[2, 2], strides=[2, 2])
        pool_size = _out(size, 2, 2)
        if pool_size != conv_size:  # residualDown pads the conv output by one row and column
            pads = np.array([0, 0, 0, 0, 0, 0, pool_size - conv_size, pool_size - conv_size])
            y = g.node("Pad", [y, g.const("pads", pads.astype(np.int64))], "padhw")
        if cout != cin:  # ...and the pooled input with zero channels
            pads = np.array([0, 0, 0, 0, 0, cout - cin, 0, 0])
            pooled = g.node("Pad", [pooled, g.const("pads", pads.astype(np.int64))], "padc")
        out = g.node("Relu", [g.node("Add", [pooled, y], "add")], "relu")
        return out, pool_size, cout

    for p in ("conv32_1", "conv32_2", "conv32_3"):
        x = residual(x, p)
    x, size, channels = residual_down(x, "conv64_down", size, channels)
    for p in ("conv64_1", "conv64_2", "conv64_3"):
        x = residual(x, p)
    x, size, channels = residual_down(x, "conv128_down", size, channels)
    for p in ("conv128_1", "conv128_2"):
        x = residual(x, p)
    x, size, channels = residual_down(x, "conv256_down", size, channels)
    for p in ("conv256_1", "conv256_2"):
        x = residual(x, p)
    x, size, channels = residual_down(x, "conv256_down_out", size, channels)
    x = g.node("ReduceMean", [x], "gap", axes=[2, 3], keepdims=0)
    fc = weights["fc"]  # [256, 128] after the tfjs transpose in extractParams
    fc_in = fc if fc.shape == (256, 128) else fc.T
    g.nodes.append(
        helper.make_node(
            "MatMul", [x, g.const("fc", fc_in.astype(np.float32))], ["embedding"], name="fc"
        )
    )
    graph = helper.make_graph(
        g.nodes,
        "dlib_resnet_embedding",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["N", INPUT_SIZE, INPUT_SIZE, 3]
            )
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 128])],
        g.inits,
    )
    return finish(graph)


def convert(manifest_path: Path, bin_path: Path, out: Path) -> None:
    model = build_graph(read_weights(manifest_path, bin_path))
    save(model, out)
