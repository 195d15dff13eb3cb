"""The tfjs and Keras converters and the trained-model export, on small graphs whose answers
torch computes independently (plus a byte table for the tfjs weight encodings)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import h5py
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from models import keras_h5, tfjs_graph
from models.tfjs_weights import decode_weights
from models.train.nets import SmallCnn, check_export, to_onnx


def run_onnx(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    out: np.ndarray = s.run(None, {s.get_inputs()[0].name: x})[0]
    return out


# -- tfjs weights -------------------------------------------------------------------------------
def test_weight_encodings_table() -> None:
    groups = [
        {
            "weights": [
                {
                    "name": "q8",
                    "shape": [2],
                    "dtype": "float32",
                    "quantization": {"dtype": "uint8", "min": -1.0, "scale": 0.5},
                },
                {
                    "name": "f16",
                    "shape": [1],
                    "dtype": "float32",
                    "quantization": {"dtype": "float16"},
                },
                {"name": "f32", "shape": [], "dtype": "float32"},
                {"name": "i32", "shape": [2], "dtype": "int32"},
            ]
        }
    ]
    data = (
        bytes([0, 4])
        + np.float16(1.5).tobytes()
        + np.float32(-2.25).tobytes()
        + np.array([7, -1], "<i4").tobytes()
    )
    w = decode_weights(groups, data, "t")
    assert w["q8"].tolist() == [-1.0, 1.0]
    assert w["f16"].tolist() == [1.5] and float(w["f32"]) == -2.25
    assert w["i32"].tolist() == [7, -1] and w["i32"].dtype == np.int32
    with pytest.raises(ValueError, match="1 bytes left"):
        decode_weights(groups, data + b"\0", "t")
    bad = [
        {
            "weights": [
                {"name": "x", "shape": [1], "dtype": "float32", "quantization": {"dtype": "int4"}}
            ]
        }
    ]
    with pytest.raises(ValueError, match="unsupported quantisation"):
        decode_weights(bad, b"\0", "t")


# -- tfjs graph ---------------------------------------------------------------------------------
def _s(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _conv_attrs(stride: int, padding: str, fused: list[str] | None = None) -> dict[str, object]:
    attrs: dict[str, object] = {
        "strides": {"list": {"i": ["1", str(stride), str(stride), "1"]}},
        "padding": {"s": _s(padding)},
        "data_format": {"s": _s("NHWC")},
        "dilations": {"list": {"i": ["1", "1", "1", "1"]}},
    }
    if fused:
        attrs["fused_ops"] = {"list": {"s": [_s(f) for f in fused]}}
    return attrs


def test_tfjs_graph_matches_torch() -> None:
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (3, 3, 3, 4)).astype(np.float32)  # HWIO
    b1 = rng.normal(0, 0.1, (4,)).astype(np.float32)
    dw = rng.normal(0, 0.3, (3, 3, 4, 1)).astype(np.float32)
    k = rng.normal(0, 1, (4,)).astype(np.float32)
    nodes = [
        {"name": "x", "op": "Placeholder"},
        {"name": "w1", "op": "Const"},
        {"name": "b1", "op": "Const"},
        {
            "name": "conv",
            "op": "_FusedConv2D",
            "input": ["x", "w1", "b1"],
            "attr": _conv_attrs(2, "SAME", ["BiasAdd", "Relu6"]),
        },
        {"name": "dw", "op": "Const"},
        {
            "name": "dconv",
            "op": "DepthwiseConv2dNative",
            "input": ["conv", "dw"],
            "attr": _conv_attrs(1, "SAME"),
        },
        {"name": "k", "op": "Const"},
        {"name": "scaled", "op": "Mul", "input": ["k", "dconv"]},
        {"name": "axes", "op": "Const"},
        {
            "name": "mean",
            "op": "Mean",
            "input": ["scaled", "axes"],
            "attr": {"keep_dims": {"b": True}},
        },
        {"name": "sig", "op": "Sigmoid", "input": ["mean"]},
        {"name": "out", "op": "Identity", "input": ["sig"]},
    ]
    model = {"format": "graph-model", "modelTopology": {"node": nodes}, "weightsManifest": []}
    weights = {"w1": w1, "b1": b1, "dw": dw, "k": k, "axes": np.array([1, 2], np.int32)}
    onnx_model = tfjs_graph._Converter(model, weights).convert(
        "x", [None, 9, 9, 3], {"out": "y"}, None, "t"
    )
    x = rng.uniform(0, 1, (2, 9, 9, 3)).astype(np.float32)
    got = run_onnx(onnx_model.SerializeToString(), x)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    t = F.pad(t, (0, 1, 0, 1))  # TF SAME, stride 2, 9 -> 5: padding 1 at the end only... plus
    t = F.pad(t, (1, 0, 1, 0))  # ...1 at the start (total 2: 1 before, 1 after)
    y = F.conv2d(t, torch.from_numpy(w1).permute(3, 2, 0, 1), torch.from_numpy(b1), stride=2).clamp(
        0, 6
    )
    y = F.conv2d(y, torch.from_numpy(dw).permute(2, 3, 0, 1), padding=1, groups=4)
    y = torch.sigmoid((y * torch.from_numpy(k)[None, :, None, None]).mean(dim=(2, 3), keepdim=True))
    assert np.abs(got - y.permute(0, 2, 3, 1).numpy()).max() < 1e-5


def test_tfjs_graph_refuses_an_unknown_op() -> None:
    nodes = [{"name": "x", "op": "Placeholder"}, {"name": "y", "op": "Erf", "input": ["x"]}]
    model = {"format": "graph-model", "modelTopology": {"node": nodes}, "weightsManifest": []}
    with pytest.raises(tfjs_graph.UnsupportedOp, match="Erf"):
        tfjs_graph._Converter(model, {}).convert("x", [1, 4, 4, 3], {"y": "y"}, None, "t")


# -- Keras HDF5 ---------------------------------------------------------------------------------
def write_keras(
    path: Path, w: dict[str, dict[str, np.ndarray]], layers: list[dict[str, object]]
) -> None:
    config = {
        "class_name": "Model",
        "config": {
            "layers": layers,
            "input_layers": [["in", 0, 0]],
            "output_layers": [[layers[-1]["name"], 0, 0]],
        },
    }
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config).encode()
        mw = f.create_group("model_weights")
        for layer, tensors in w.items():
            g = mw.create_group(layer)
            names = [f"{layer}/{k}:0" for k in tensors]
            g.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, v in zip(names, tensors.values(), strict=True):
                g.create_dataset(n, data=v)


def layer(name: str, kind: str, src: str | None, **cfg: object) -> dict[str, object]:
    return {
        "name": name,
        "class_name": kind,
        "config": {"name": name, **cfg},
        "inbound_nodes": [[[src, 0, 0, {}]]] if src else [],
    }


def test_keras_h5_matches_torch(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    kernel = rng.normal(0, 0.2, (3, 3, 3, 4)).astype(np.float32)
    bn = {
        k: rng.uniform(0.5, 1.5, 4).astype(np.float32)
        for k in ("gamma", "beta", "moving_mean", "moving_variance")
    }
    dense = rng.normal(0, 0.2, (4 * 4 * 4, 2)).astype(np.float32)
    layers = [
        layer("in", "InputLayer", None, batch_input_shape=[None, 8, 8, 3]),
        layer("pad", "ZeroPadding2D", "in", padding=[[0, 1], [0, 1]]),
        layer(
            "conv",
            "Conv2D",
            "pad",
            strides=[2, 2],
            padding="valid",
            dilation_rate=[1, 1],
            activation="linear",
            use_bias=False,
        ),
        layer("bn", "BatchNormalization", "conv", axis=[3], epsilon=0.001),
        layer("relu", "ReLU", "bn", max_value=6.0),
        layer("flat", "Flatten", "relu"),
        layer("drop", "Dropout", "flat", rate=0.5),
        layer("dense", "Dense", "drop", activation="softmax", use_bias=False),
    ]
    write_keras(
        tmp_path / "m.h5",
        {"conv": {"kernel": kernel}, "bn": bn, "dense": {"kernel": dense}},
        layers,
    )
    keras_h5.convert(tmp_path / "m.h5", tmp_path / "m.onnx", "t")
    x = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    got = run_onnx((tmp_path / "m.onnx").read_bytes(), x)
    t = torch.from_numpy(x / 127.5 - 1).permute(0, 3, 1, 2)
    t = F.conv2d(F.pad(t, (0, 1, 0, 1)), torch.from_numpy(kernel).permute(3, 2, 0, 1), stride=2)
    g, b, m, v = (
        torch.from_numpy(bn[k])[None, :, None, None]
        for k in ("gamma", "beta", "moving_mean", "moving_variance")
    )
    t = ((t - m) / torch.sqrt(v + 0.001) * g + b).clamp(0, 6)
    flat = t.permute(0, 2, 3, 1).reshape(2, -1)  # Keras flattens channels-last
    want = torch.softmax(flat @ torch.from_numpy(dense), dim=1).numpy()
    assert np.abs(got - want).max() < 1e-5


def test_keras_h5_refuses_an_unknown_layer(tmp_path: Path) -> None:
    layers = [
        layer("in", "InputLayer", None, batch_input_shape=[None, 4, 4, 3]),
        layer("lstm", "LSTM", "in"),
    ]
    write_keras(tmp_path / "m.h5", {}, layers)
    with pytest.raises(keras_h5.UnsupportedLayer, match="LSTM"):
        keras_h5.convert(tmp_path / "m.h5", tmp_path / "m.onnx", "t")


# -- trained-model export -----------------------------------------------------------------------
def test_export_matches_torch_and_is_byte_stable() -> None:
    torch.manual_seed(0)
    model = SmallCnn((4, 8), 2)
    for m in model.modules():  # non-trivial batch-norm statistics to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)  # type: ignore[union-attr]
            m.running_var.uniform_(0.5, 2)  # type: ignore[union-attr]
    batch = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    a = to_onnx(model, 32, "image", "out", "t")
    assert check_export(model, a, batch) < 1e-4
    b = to_onnx(model, 32, "image", "out", "t")
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
