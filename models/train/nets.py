"""The small CNN both trained models use, and its export to ONNX without ``torch.onnx``.

``SmallCnn``: input NHWC BGR pixels 0-255 (as OpenCV gives them); in the graph they are scaled
to about [-2, 2], transposed to NCHW, then ``blocks`` of 3x3 convolution + batch norm + ReLU
(stride 2 each), global average pooling and one linear layer. Outputs go through a sigmoid:
each output is an independent probability (or, for the fill level, a fraction).

The export writes the ONNX graph by hand from the trained weights — batch norm folded into the
convolution in float32 numpy — through the shared writer (:mod:`models.onnx_out`), so the same
weights always give the same bytes, and no exporter version (TorchScript or dynamo) changes
them. :func:`check_export` runs both on the same batch and refuses a difference above 1e-4.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from models.onnx_out import finish, save

PIXEL_MEAN = 127.5
PIXEL_SCALE = 1 / 64.0
BN_EPS = 1e-5


class SmallCnn(nn.Module):
    def __init__(self, blocks: Sequence[int], outputs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in blocks:
            layers += [
                nn.Conv2d(channels, width, 3, 2, 1, bias=False),
                nn.BatchNorm2d(width, eps=BN_EPS),
                nn.ReLU(),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from NHWC float pixels 0-255."""
        x = (x - PIXEL_MEAN) * PIXEL_SCALE
        x = x.permute(0, 3, 1, 2)
        y: torch.Tensor = self.head(self.features(x).mean(dim=(2, 3)))
        return y


def to_onnx(
    model: SmallCnn, size: int, input_name: str, output_name: str, graph_name: str
) -> onnx.ModelProto:
    """The trained model as an ONNX graph: NHWC float input, sigmoid outputs."""
    model.eval()
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(value: np.ndarray, name: str) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    x = node("Sub", [input_name, const(np.array(PIXEL_MEAN, np.float32), "mean")], "centred")
    x = node("Mul", [x, const(np.array(PIXEL_SCALE, np.float32), "scale")], "scaled")
    x = node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    mods = list(model.features)
    for i in range(0, len(mods), 3):
        conv, bn = mods[i], mods[i + 1]
        assert isinstance(conv, nn.Conv2d)
        assert isinstance(bn, nn.BatchNorm2d)
        w = conv.weight.detach().numpy().astype(np.float32)
        gamma = bn.weight.detach().numpy().astype(np.float32)
        beta = bn.bias.detach().numpy().astype(np.float32)
        mean = bn.running_mean.detach().numpy().astype(np.float32)  # type: ignore[union-attr]
        var = bn.running_var.detach().numpy().astype(np.float32)  # type: ignore[union-attr]
        k = gamma / np.sqrt(var + np.float32(BN_EPS))
        w_folded = w * k[:, None, None, None]
        b_folded = beta - mean * k
        x = node(
            "Conv",
            [x, const(w_folded, f"conv{i // 3}.w"), const(b_folded, f"conv{i // 3}.b")],
            f"conv{i // 3}",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        )
        x = node("Relu", [x], f"relu{i // 3}")
    x = node("ReduceMean", [x], "pooled", axes=[2, 3], keepdims=0)
    wl = model.head.weight.detach().numpy().astype(np.float32)
    bl = model.head.bias.detach().numpy().astype(np.float32)
    x = node("Gemm", [x, const(wl, "head.w"), const(bl, "head.b")], "logits", transB=1)
    node("Sigmoid", [x], output_name)
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, size, size, 3])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, wl.shape[0]])],
        inits,
    )
    return finish(graph)


def check_export(model: SmallCnn, onnx_model: onnx.ModelProto, batch: np.ndarray) -> float:
    """Largest difference between torch and ONNX Runtime on ``batch``; over 1e-4 is refused."""
    import onnxruntime as ort

    model.eval()
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(batch.astype(np.float32)))).numpy()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    got = session.run(None, {name: batch.astype(np.float32)})[0]
    diff = float(np.abs(got - ref).max())
    if diff > 1e-4:
        raise ValueError(f"ONNX export differs from torch by {diff:.2e} (limit 1e-4)")
    return diff


def export(
    model: SmallCnn, size: int, io: tuple[str, str], name: str, out: Path
) -> onnx.ModelProto:
    onnx_model = to_onnx(model, size, io[0], io[1], name)
    save(onnx_model, out)
    return onnx_model
