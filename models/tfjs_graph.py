"""A TensorFlow.js *graph model* (``model.json`` + weight shards) → ONNX, for CNN detectors.

Written for CenterNet MobileNetV3 as shipped by ``@vladmandic/human`` (``models/centernet``:
a frozen TF graph converted by tfjs-converter, weights float16-quantised). No registry converter
reads tfjs graph models without TensorFlow, so this walks the graph's nodes and writes ONNX op
by op; anything it does not know stops the conversion with the op's name.

Layout: tfjs graphs are NHWC. The ONNX graph transposes its input to NCHW once, keeps every
4-D activation NCHW inside (constants broadcast per channel are reshaped to ``[1, C, 1, 1]``,
axes of ``Mean`` and ``ConcatV2`` are remapped), and transposes each output back to NHWC.

Supported ops: ``Placeholder``, ``Const``, ``Identity``, ``Conv2D``, ``_FusedConv2D`` and
``FusedDepthwiseConv2dNative`` (fused ``BiasAdd`` then optionally ``Relu`` / ``Relu6``),
``DepthwiseConv2dNative``, ``Add``, ``AddV2``, ``Sub``, ``Mul``, ``Relu``, ``Relu6``,
``Sigmoid``, ``Mean`` (over H and W), ``ConcatV2`` (4-D), ``ResizeBilinear`` (constant size,
``align_corners`` false, ``half_pixel_centers`` false → ONNX ``asymmetric``), ``MaxPool``.
``padding: SAME`` is TF's (extra padding at the end) = ONNX ``SAME_UPPER``.

The caller names the output nodes to keep; the rest of the graph (for CenterNet, the top-k box
decoding, which is plain numpy in :mod:`edge.hygiene.people`) is not converted. With
``peaks_of`` set, one more output marks local maxima of that heat map (3x3 max-pool equality,
as CenterNet decodes), so the caller only thresholds.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.errors import UnsupportedModel
from models.onnx_out import finish, save
from models.tfjs_weights import decode_weights

_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1}


class UnsupportedOp(UnsupportedModel):
    """An op (or a use of one) this converter does not convert."""


def _attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "list" in value:
        lst = value["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "b" in value:
        return bool(value["b"])
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    return value


class _Converter:
    def __init__(self, model: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        self.graph_nodes: list[dict[str, Any]] = model["modelTopology"]["node"]
        self.by_name = {n["name"]: n for n in self.graph_nodes}
        self.consts: dict[str, np.ndarray] = dict(weights)
        self.names: dict[str, str] = {}  # tfjs tensor -> onnx tensor (NCHW for 4-D activations)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.counter = 0

    # -- helpers -----------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.fresh(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def constant(self, ref: str) -> np.ndarray | None:
        name = ref.split(":")[0]
        return self.consts.get(name)

    def tensor(self, ref: str) -> str:
        """The ONNX name of a tfjs input reference (``node`` or ``node:k``)."""
        if ref in self.names:
            return self.names[ref]
        raise UnsupportedOp(f"input {ref!r} is not produced by a converted node")

    def operand(self, ref: str) -> str:
        """A binary op's operand: activations as they are, constants made NCHW-broadcastable."""
        value = self.constant(ref)
        if value is None:
            return self.tensor(ref)
        value = value.astype(np.float32)
        if value.ndim == 1 and value.size > 1:
            value = value.reshape(1, -1, 1, 1)
        elif value.ndim == 4:
            value = np.transpose(value, (0, 3, 1, 2))
        elif value.ndim not in (0, 1):
            raise UnsupportedOp(f"constant {ref} of shape {value.shape} in a binary op")
        return self.const(value, "k")

    def weight(self, ref: str, what: str) -> np.ndarray:
        value = self.constant(ref)
        if value is None:
            raise UnsupportedOp(f"{what}: weights {ref!r} are not constant")
        return value.astype(np.float32)

    # -- ops ---------------------------------------------------------------------------------
    def conv(self, n: dict[str, Any], depthwise: bool) -> str:
        ins = [i for i in n["input"] if not i.startswith("^")]
        w = self.weight(ins[1], n["name"])
        if _attr(n, "data_format", "NHWC") != "NHWC":
            raise UnsupportedOp(f"{n['name']}: data_format {_attr(n, 'data_format')}")
        strides = _attr(n, "strides", [1, 1, 1, 1])
        dilations = _attr(n, "dilations", [1, 1, 1, 1]) or [1, 1, 1, 1]
        padding = _attr(n, "padding")
        if padding not in ("SAME", "VALID"):
            raise UnsupportedOp(f"{n['name']}: padding {padding}")
        kh, kw = int(w.shape[0]), int(w.shape[1])
        if depthwise:  # [H, W, C, M] -> [C*M, 1, H, W]
            c, m = int(w.shape[2]), int(w.shape[3])
            kernel = np.transpose(w, (2, 3, 0, 1)).reshape(c * m, 1, kh, kw)
            group = c
        else:  # HWIO -> OIHW
            kernel = np.transpose(w, (3, 2, 0, 1))
            group = 1
        args = [self.tensor(ins[0]), self.const(kernel, "w")]
        fused = _attr(n, "fused_ops", []) if n["op"].startswith(("_Fused", "Fused")) else []
        if fused:
            if fused[0] != "BiasAdd":
                raise UnsupportedOp(f"{n['name']}: fused ops {fused}")
            args.append(self.const(self.weight(ins[2], n["name"]).reshape(-1), "b"))
        y = self.node(
            "Conv",
            args,
            kernel_shape=[kh, kw],
            strides=strides[1:3],
            dilations=dilations[1:3],
            group=group,
            auto_pad="SAME_UPPER" if padding == "SAME" else "VALID",
        )
        for extra in fused[1:]:
            y = self.activation(extra, y, n["name"])
        return y

    def activation(self, op: str, x: str, where: str) -> str:
        if op == "Relu":
            return self.node("Relu", [x])
        if op == "Relu6":
            zero = self.const(np.array(0, np.float32), "zero")
            return self.node("Clip", [x, zero, self.const(np.array(6, np.float32), "six")])
        if op == "Sigmoid":
            return self.node("Sigmoid", [x])
        raise UnsupportedOp(f"{where}: activation {op}")

    def convert_node(self, n: dict[str, Any]) -> None:
        op = n["op"]
        name = n["name"]
        ins = [i for i in n.get("input", []) if not i.startswith("^")]
        if op == "Const":
            if name not in self.consts:
                raise UnsupportedOp(f"constant {name} has no value in the weights")
            return
        if op == "Placeholder":
            return  # the graph input, named by the caller
        if op in ("_FusedConv2D", "Conv2D"):
            y = self.conv(n, depthwise=False)
        elif op in ("FusedDepthwiseConv2dNative", "DepthwiseConv2dNative"):
            y = self.conv(n, depthwise=True)
        elif op in ("Add", "AddV2", "Sub", "Mul"):
            onnx_op = {"AddV2": "Add"}.get(op, op)
            if all(self.constant(i) is not None for i in ins):
                raise UnsupportedOp(f"{name}: {op} of two constants (fold them first)")
            y = self.node(onnx_op, [self.operand(ins[0]), self.operand(ins[1])])
        elif op in ("Relu", "Relu6", "Sigmoid"):
            y = self.activation(op, self.tensor(ins[0]), name)
        elif op == "Identity":
            y = self.tensor(ins[0])
        elif op == "Mean":
            axes = self.constant(ins[1])
            if axes is None or sorted(int(a) for a in axes.reshape(-1)) != [1, 2]:
                raise UnsupportedOp(f"{name}: Mean over axes {axes} (only H, W)")
            keep = bool(_attr(n, "keep_dims", False))
            y = self.node("ReduceMean", [self.tensor(ins[0])], axes=[2, 3], keepdims=int(keep))
            if not keep:
                raise UnsupportedOp(f"{name}: Mean without keep_dims")
        elif op == "ConcatV2":
            axis_value = self.constant(ins[-1])
            if axis_value is None:
                raise UnsupportedOp(f"{name}: non-constant axis")
            axis = _NHWC_TO_NCHW_AXIS[int(axis_value.reshape(-1)[0])]
            y = self.node("Concat", [self.tensor(i) for i in ins[:-1]], axis=axis)
        elif op == "ResizeBilinear":
            if _attr(n, "align_corners", False) or _attr(n, "half_pixel_centers", False):
                raise UnsupportedOp(f"{name}: only align_corners=false, half_pixel_centers=false")
            size = self.constant(ins[1])
            if size is None:
                raise UnsupportedOp(f"{name}: non-constant size")
            x = self.tensor(ins[0])
            nc = self.node(
                "Slice",
                [
                    self.node("Shape", [x]),
                    self.const(np.array([0], np.int64), "s"),
                    self.const(np.array([2], np.int64), "e"),
                ],
            )
            sizes = self.node(
                "Concat", [nc, self.const(size.astype(np.int64).reshape(-1), "hw")], axis=0
            )
            empty = ""
            y = self.node(
                "Resize",
                [x, empty, empty, sizes],
                mode="linear",
                coordinate_transformation_mode="asymmetric",
            )
        elif op == "MaxPool":
            k = _attr(n, "ksize")
            y = self.node(
                "MaxPool",
                [self.tensor(ins[0])],
                kernel_shape=k[1:3],
                strides=_attr(n, "strides")[1:3],
                auto_pad="SAME_UPPER" if _attr(n, "padding") == "SAME" else "VALID",
            )
        else:
            raise UnsupportedOp(f"tfjs op {op} ({name}) is not supported by this converter")
        self.names[name] = y

    def needed(self, outputs: list[str]) -> list[dict[str, Any]]:
        """The nodes the outputs depend on, in graph order."""
        keep: set[str] = set()
        stack = list(outputs)
        while stack:
            name = stack.pop().split(":")[0].lstrip("^")
            if name in keep:
                continue
            if name not in self.by_name:
                raise UnsupportedOp(f"the graph has no node {name!r}")
            keep.add(name)
            stack.extend(self.by_name[name].get("input", []))
        return [n for n in self.graph_nodes if n["name"] in keep]

    def convert(
        self,
        input_name: str,
        input_shape: list[int | None],
        outputs: dict[str, str],
        peaks_of: str | None,
        graph_name: str,
    ) -> onnx.ModelProto:
        x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)
        placeholders = [n["name"] for n in self.graph_nodes if n["op"] == "Placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedOp(f"expected one Placeholder, found {placeholders}")
        self.names[placeholders[0]] = self.node("Transpose", [input_name], perm=[0, 3, 1, 2])
        for n in self.needed(list(outputs)):
            self.convert_node(n)
        graph_outputs = []
        for tf_name, out_name in outputs.items():
            self.nodes.append(
                helper.make_node(
                    "Transpose",
                    [self.tensor(tf_name)],
                    [out_name],
                    perm=[0, 2, 3, 1],
                    name=out_name,
                )
            )
            graph_outputs.append(
                helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [None] * 4)
            )
        if peaks_of is not None:
            heat = self.tensor(peaks_of)
            pooled = self.node(
                "MaxPool", [heat], kernel_shape=[3, 3], strides=[1, 1], auto_pad="SAME_UPPER"
            )
            mask = self.node("Cast", [self.node("Equal", [heat, pooled])], to=TensorProto.FLOAT)
            peaks = self.node("Mul", [heat, mask])
            self.nodes.append(
                helper.make_node("Transpose", [peaks], ["peaks"], perm=[0, 2, 3, 1], name="peaks")
            )
            graph_outputs.append(
                helper.make_tensor_value_info("peaks", TensorProto.FLOAT, [None] * 4)
            )
        graph = helper.make_graph(
            self.nodes, graph_name, [x], graph_outputs, list(self.inits.values())
        )
        return finish(graph)


def load(model_json: Path, shards: list[Path]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    model: dict[str, Any] = json.loads(model_json.read_text(encoding="utf-8"))
    if model.get("format") != "graph-model":
        raise UnsupportedOp(f"{model_json}: format {model.get('format')!r}, not a graph-model")
    data = b"".join(p.read_bytes() for p in shards)
    return model, decode_weights(model["weightsManifest"], data, str(model_json))


def convert_centernet(model_json: Path, weights_bin: Path, out: Path) -> None:
    """CenterNet MobileNetV3 (512x512, 80 COCO classes) → ONNX with ``heatmap``, ``wh``,
    ``peaks`` (all NHWC at 1/4 resolution)."""
    model, weights = load(model_json, [weights_bin])
    onnx_model = _Converter(model, weights).convert(
        "images",
        [None, 512, 512, 3],
        {"tower_0/keypoints": "heatmap", "tower_0/wh": "wh"},
        peaks_of="tower_0/keypoints",
        graph_name="centernet_mobilenetv3",
    )
    save(onnx_model, out)


def box_scales(model_json: Path, weights_bin: Path) -> list[float]:
    """The four strides the graph's decoder multiplies cell indices by (x1, y1, x2, y2)."""
    _, weights = load(model_json, [weights_bin])
    return [float(weights[f"tower_0/mul_{k}/y"]) for k in (3, 4, 5, 6)]
