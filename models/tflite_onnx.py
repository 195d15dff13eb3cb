"""A small TFLite → ONNX converter for float models built from common vision ops.

The registry has no converter that handles these graphs (``tflite2onnx`` 0.4 stops at
``LEAKY_RELU``; ``tf2onnx`` needs TensorFlow), so this reads the flatbuffer with the ``tflite``
package and writes ONNX op by op. Tensors stay NHWC as in TFLite; convolutions and pools are
wrapped in NHWC↔NCHW transposes (ONNX Runtime's optimiser cancels adjacent pairs).

Supported: ``DEQUANTIZE`` of float16 constants (folded to float32 initialisers), ``CONV_2D``,
``MAX_POOL_2D``, ``AVERAGE_POOL_2D``, ``FULLY_CONNECTED``, ``ADD``, ``SUB``, ``MUL``,
``LEAKY_RELU``, ``RESHAPE``, ``STRIDED_SLICE`` (begin/end/shrink masks), ``GREATER_EQUAL``,
``LESS``, ``CAST``, ``CONCATENATION``, with fused activations NONE / RELU / RELU6. Anything else
stops the conversion with the op's name — no silent approximations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper
from tflite.ActivationFunctionType import ActivationFunctionType as Act
from tflite.BuiltinOperator import BuiltinOperator
from tflite.Padding import Padding
from tflite.TensorType import TensorType

from models.errors import UnsupportedModel
from models.onnx_out import finish, save

_OP_NAMES = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
_NP_TYPES = {
    TensorType.FLOAT32: np.float32,
    TensorType.FLOAT16: np.float16,
    TensorType.INT32: np.int32,
    TensorType.INT64: np.int64,
    TensorType.UINT8: np.uint8,
    TensorType.BOOL: np.bool_,
}
_ONNX_TYPES = {
    TensorType.FLOAT32: TensorProto.FLOAT,
    TensorType.INT32: TensorProto.INT32,
    TensorType.INT64: TensorProto.INT64,
    TensorType.BOOL: TensorProto.BOOL,
}


class UnsupportedOp(UnsupportedModel):
    """An op (or a use of one) this converter does not convert."""


def _options(op: Any, cls: Any) -> Any:
    table = op.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


class _Converter:
    def __init__(self, buf: bytes) -> None:
        self.model = tflite.Model.GetRootAsModel(buf, 0)
        self.graph = self.model.Subgraphs(0)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.consts: dict[int, np.ndarray] = {}
        self.counter = 0

    # -- tensors -----------------------------------------------------------------------------
    def tname(self, index: int) -> str:
        raw: bytes = self.graph.Tensors(index).Name()
        return f"t{index}_" + raw.decode().split("/")[-1].replace(";", "_")

    def shape(self, index: int) -> list[int]:
        t = self.graph.Tensors(index)
        return [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []

    def buffer(self, index: int) -> np.ndarray | None:
        if index in self.consts:
            return self.consts[index]
        t = self.graph.Tensors(index)
        data = self.model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data is None or len(data) == 0:
            return None
        dtype = _NP_TYPES.get(t.Type())
        if dtype is None:
            raise UnsupportedOp(f"tensor {self.tname(index)}: type {t.Type()}")
        return np.frombuffer(data.tobytes(), dtype=dtype).reshape(self.shape(index))

    def const(self, value: np.ndarray, hint: str) -> str:
        self.counter += 1
        name = f"c{self.counter}_{hint}"
        self.inits[name] = numpy_helper.from_array(value, name)
        return name

    def input(self, index: int) -> str:
        value = self.consts.get(index)
        if value is None:
            value = self.buffer(index)
            if value is not None and value.dtype == np.float16:
                value = value.astype(np.float32)
        if value is not None:
            name = self.tname(index)
            if name not in self.inits:
                self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
            return name
        return self.tname(index)

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        self.counter += 1
        out = output or f"n{self.counter}_{op}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.counter}", **attrs))
        return out

    def activation(self, x: str, fused: int, output: str) -> None:
        if fused == Act.NONE:
            self.node("Identity", [x], output)
        elif fused == Act.RELU:
            self.node("Relu", [x], output)
        elif fused == Act.RELU6:
            self.node(
                "Clip",
                [
                    x,
                    self.const(np.array(0, np.float32), "zero"),
                    self.const(np.array(6, np.float32), "six"),
                ],
                output,
            )
        else:
            raise UnsupportedOp(f"fused activation {fused}")

    # -- ops ---------------------------------------------------------------------------------
    def convert_op(self, op: Any) -> None:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        name = _OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        ins = [op.Inputs(i) for i in range(op.InputsLength())]
        outs = [op.Outputs(i) for i in range(op.OutputsLength())]
        out = self.tname(outs[0])
        if name == "DEQUANTIZE":
            value = self.buffer(ins[0])
            if value is None or value.dtype != np.float16:
                raise UnsupportedOp("DEQUANTIZE of a non-constant or non-float16 tensor")
            self.consts[outs[0]] = value.astype(np.float32)
        elif name == "CONV_2D":
            o = _options(op, tflite.Conv2DOptions)
            w = self.buffer(ins[1])
            if w is None:
                raise UnsupportedOp("CONV_2D with non-constant weights")
            w = np.transpose(w.astype(np.float32), (0, 3, 1, 2))  # OHWI -> OIHW
            args = [
                self.node("Transpose", [self.input(ins[0])], perm=[0, 3, 1, 2]),
                self.const(w, "w"),
            ]
            if len(ins) > 2 and ins[2] >= 0:
                args.append(self.input(ins[2]))
            y = self.node(
                "Conv",
                args,
                kernel_shape=list(w.shape[2:]),
                strides=[o.StrideH(), o.StrideW()],
                dilations=[o.DilationHFactor(), o.DilationWFactor()],
                auto_pad="SAME_UPPER" if o.Padding() == Padding.SAME else "VALID",
            )
            y = self.node("Transpose", [y], perm=[0, 2, 3, 1])
            self.activation(y, o.FusedActivationFunction(), out)
        elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            o = _options(op, tflite.Pool2DOptions)
            x = self.node("Transpose", [self.input(ins[0])], perm=[0, 3, 1, 2])
            y = self.node(
                "MaxPool" if name == "MAX_POOL_2D" else "AveragePool",
                [x],
                kernel_shape=[o.FilterHeight(), o.FilterWidth()],
                strides=[o.StrideH(), o.StrideW()],
                auto_pad="SAME_UPPER" if o.Padding() == Padding.SAME else "VALID",
            )
            y = self.node("Transpose", [y], perm=[0, 2, 3, 1])
            self.activation(y, o.FusedActivationFunction(), out)
        elif name == "FULLY_CONNECTED":
            o = _options(op, tflite.FullyConnectedOptions)
            x = self.input(ins[0])
            if len(self.shape(ins[0])) != 2:
                x = self.node(
                    "Reshape",
                    [x, self.const(np.array([-1, self.shape(ins[1])[1]], np.int64), "shape")],
                )
            args = [x, self.input(ins[1])]
            if len(ins) > 2 and ins[2] >= 0:
                args.append(self.input(ins[2]))
            y = self.node("Gemm", args, transB=1)
            self.activation(y, o.FusedActivationFunction(), out)
        elif name in ("ADD", "SUB", "MUL"):
            cls = {"ADD": tflite.AddOptions, "SUB": tflite.SubOptions, "MUL": tflite.MulOptions}[
                name
            ]
            fused = _options(op, cls).FusedActivationFunction() if op.BuiltinOptions() else Act.NONE
            y = self.node(name.capitalize(), [self.input(ins[0]), self.input(ins[1])])
            self.activation(y, fused, out)
        elif name == "LEAKY_RELU":
            alpha = _options(op, tflite.LeakyReluOptions).Alpha()
            self.node("LeakyRelu", [self.input(ins[0])], out, alpha=float(alpha))
        elif name == "RESHAPE":
            shape = np.array(self.shape(outs[0]), dtype=np.int64)
            shape[0] = -1 if shape.size else shape[0]
            self.node("Reshape", [self.input(ins[0]), self.const(shape, "shape")], out)
        elif name == "STRIDED_SLICE":
            self.strided_slice(op, ins, out)
        elif name in ("GREATER_EQUAL", "LESS"):
            onnx_op = "GreaterOrEqual" if name == "GREATER_EQUAL" else "Less"
            self.node(onnx_op, [self.input(ins[0]), self.input(ins[1])], out)
        elif name == "CAST":
            to = _ONNX_TYPES[self.graph.Tensors(outs[0]).Type()]
            self.node("Cast", [self.input(ins[0])], out, to=to)
        elif name == "CONCATENATION":
            o = _options(op, tflite.ConcatenationOptions)
            y = self.node("Concat", [self.input(i) for i in ins], axis=o.Axis())
            self.activation(y, o.FusedActivationFunction(), out)
        else:
            raise UnsupportedOp(f"TFLite op {name} is not supported by this converter")

    def strided_slice(self, op: Any, ins: list[int], out: str) -> None:
        o = _options(op, tflite.StridedSliceOptions)
        if o.EllipsisMask() or o.NewAxisMask():
            raise UnsupportedOp("STRIDED_SLICE with ellipsis or new-axis masks")
        begin, end, strides = (self.buffer(i) for i in ins[1:4])
        if begin is None or end is None or strides is None:
            raise UnsupportedOp("STRIDED_SLICE with non-constant begin/end/strides")
        big = np.iinfo(np.int64).max
        starts, ends, axes, steps, squeeze = [], [], [], [], []
        for axis in range(len(begin)):
            b = 0 if o.BeginMask() >> axis & 1 else int(begin[axis])
            e = big if o.EndMask() >> axis & 1 else int(end[axis])
            if o.ShrinkAxisMask() >> axis & 1:
                e = b + 1
                squeeze.append(axis)
            starts.append(b)
            ends.append(e)
            axes.append(axis)
            steps.append(int(strides[axis]))
        y = self.node(
            "Slice",
            [
                self.input(ins[0]),
                self.const(np.array(starts, np.int64), "starts"),
                self.const(np.array(ends, np.int64), "ends"),
                self.const(np.array(axes, np.int64), "axes"),
                self.const(np.array(steps, np.int64), "steps"),
            ],
        )
        if squeeze:
            self.node("Squeeze", [y, self.const(np.array(squeeze, np.int64), "axes")], out)
        else:
            self.node("Identity", [y], out)

    def convert(self, graph_name: str) -> onnx.ModelProto:
        for i in range(self.graph.OperatorsLength()):
            self.convert_op(self.graph.Operators(i))
        g = self.graph

        def info(index: int, name: str) -> onnx.ValueInfoProto:
            t = g.Tensors(index)
            return helper.make_tensor_value_info(name, _ONNX_TYPES[t.Type()], self.shape(index))

        inputs = [
            info(g.Inputs(i), g.Tensors(g.Inputs(i)).Name().decode())
            for i in range(g.InputsLength())
        ]
        for i in range(g.InputsLength()):  # graph inputs keep their TFLite names
            self.nodes.insert(
                0, helper.make_node("Identity", [inputs[i].name], [self.tname(g.Inputs(i))])
            )
        outputs = []
        for i in range(g.OutputsLength()):
            index = g.Outputs(i)
            name = g.Tensors(index).Name().decode()
            self.nodes.append(helper.make_node("Identity", [self.tname(index)], [name]))
            outputs.append(info(index, name))
        graph = helper.make_graph(
            self.nodes, graph_name, inputs, outputs, list(self.inits.values())
        )
        return finish(graph)


def convert(tflite_path: Path, out: Path, graph_name: str) -> None:
    model = _Converter(tflite_path.read_bytes()).convert(graph_name)
    save(model, out)
