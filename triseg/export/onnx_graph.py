"""The INT8 teacher or student as a standard ONNX model that onnxruntime's CPU provider runs as it is.

Activations travel as uint8 tensors holding the quantized values q (code = q - zero point), exactly
as in the converted torch model. Three lowerings of a conv / linear layer (``ops``):

* ``integer`` (default): ``ConvInteger`` (weights stored as uint8 w + 128 with zero point 128, which
  onnxruntime runs 6x faster than int8 weights) / ``MatMulInteger`` (exact int32 accumulation), then the
  backend's requantization written out in float32 as fbgemm/x86 do it (see
  :mod:`triseg.approx.intsim`): ``Cast``, ``Add`` of bias / (s_in * s_w), ``Mul`` by
  s_in * s_w / s_out, ``QuantizeLinear`` with scale 1 (round half to even, + zero point, saturate).
* ``qlinear``: ``QLinearConv`` with an int32 bias rounded to the accumulator's scale (a linear layer
  is a 1x1 ``QLinearConv``, because ``QLinearMatMul`` has no bias input).
* ``qdq``: ``DequantizeLinear`` of input and weights, float ``Conv`` / ``Gemm`` with the float bias,
  ``QuantizeLinear``.

Each approximated tap is a lookup on its 256-entry table: ``Cast`` of the uint8 values to int32,
``Gather`` on the table (:func:`triseg.approx.lut.quint8_table`). With ``debug_taps`` every tap's
values after the map (``codes.<layer>``) and, for mapped layers, before it (``codes_in.<layer>``)
are extra graph outputs.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
import torch

from triseg.approx.config import LayerCodes
from triseg.approx.lut import quint8_table
from triseg.export.deps import require
from triseg.export.request import ExportRequest
from triseg.export.structure import IntGraph, IntNode

OPSET = 17
IR_VERSION = 8
ONNX_OPS = ("integer", "qlinear", "qdq")
WEIGHT_OFFSET = 128  # ConvInteger weights as uint8 w + 128 with zero point 128: onnxruntime's int8 path is 6x slower
INPUT, OUTPUT = "input", "logits"
META_PREFIX = "triseg."


def tap_output(layer: str) -> str:
    """Debug output with a tap's values after the map (what the next layer reads)."""
    return f"codes.{layer}"


def tap_input_output(layer: str) -> str:
    """Debug output with a mapped tap's values before the map."""
    return f"codes_in.{layer}"


class GraphBuilder:
    """Collects ONNX nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.onnx = require("onnx")
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.opsets: dict[str, int] = {"": OPSET}
        self._names: set[str] = set()

    def unique(self, name: str) -> str:
        """``name``, or ``name_2``, ``name_3``... if taken."""
        out, i = name, 1
        while out in self._names:
            i += 1
            out = f"{name}_{i}"
        self._names.add(out)
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer; returns its name."""
        name = self.unique(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, domain: str = "", **attrs: Any) -> str:
        """One node with one output; returns the output's name."""
        output = self.unique(output)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [output], name=output, domain=domain, **attrs))
        return output


TapLowering = Callable[[GraphBuilder, str, str, LayerCodes, int], str]


def gather_tap(b: GraphBuilder, x: str, layer: str, codes: LayerCodes, zero_point: int) -> str:
    """The map as ``Gather`` on the layer's 256-entry uint8 table, indexed by the int32 values."""
    table = b.const(f"table.{layer}", quint8_table(codes, zero_point).numpy())
    idx = b.op("Cast", [x], f"{x}/int32", to=b.onnx.TensorProto.INT32)
    return b.op("Gather", [table, idx], f"{x}/mapped", axis=0)


def _f32(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


def _u8(v: int) -> np.ndarray:
    return np.asarray(v, dtype=np.uint8)


def _requant_consts(n: IntNode, s_in: float) -> tuple[np.ndarray | None, np.ndarray]:
    """fbgemm's float32 constants per output channel: bias / (s_in * s_w) and s_in * s_w / s_out."""
    act_w = torch.tensor(s_in, dtype=torch.float32) * n.attrs["w_scale"].float()
    mult = act_w / torch.tensor(n.scale, dtype=torch.float32)
    bias = n.attrs["bias"]
    return (None if bias is None else (bias.float() / act_w).numpy()), mult.numpy()


class _Lowering:
    """Writes one :class:`IntGraph` into a :class:`GraphBuilder`."""

    def __init__(self, b: GraphBuilder, graph: IntGraph, ops: str) -> None:
        self.b, self.graph, self.ops = b, graph, ops
        self.names: dict[str, str] = {graph.input: INPUT}
        self.TP = b.onnx.TensorProto

    def qp(self, tensor: str) -> tuple[float, int]:
        return self.graph.qparams(tensor)

    def requantize_unit(self, f: str, n: IntNode, relu: bool) -> str:
        """round_half_even(f) + zero point, saturated to [zero point if relu else 0, 255], as uint8."""
        assert n.zero_point is not None
        if relu and n.zero_point != 0:
            f = self.b.op("Relu", [f], f"{n.output}/relu")
        return self.b.op("QuantizeLinear", [f, self.b.const(f"{n.output}/one", _f32(1.0)),
                                            self.b.const(f"{n.output}/zp", _u8(n.zero_point))], n.output)

    def quantize(self, n: IntNode, x: str) -> str:
        assert n.scale is not None and n.zero_point is not None
        if self.ops == "integer":
            f = self.b.op("Mul", [x, self.b.const(f"{n.output}/inv_scale", _f32(1.0 / n.scale))], f"{n.output}/scaled")
            return self.requantize_unit(f, n, relu=False)
        return self.b.op("QuantizeLinear", [x, self.b.const(f"{n.output}/scale", _f32(n.scale)),
                                            self.b.const(f"{n.output}/zp", _u8(n.zero_point))], n.output)

    def dequantize(self, n: IntNode, x: str, src: str, output: str | None = None) -> str:
        s, zp = self.qp(src)
        return self.b.op("DequantizeLinear", [x, self.b.const(f"{src}/scale", _f32(s)),
                                              self.b.const(f"{src}/zp", _u8(zp))], output or f"{n.output}/dq")

    def conv_or_linear(self, n: IntNode, x: str, src: str) -> str:
        a, conv = n.attrs, n.kind == "conv"
        s_in, zp_in = self.qp(src)
        w = a["weight"].numpy().astype(np.int8)
        geometry = {}
        if conv:
            pads = [int(p) for p in a["padding"]] * 2
            geometry = {"strides": [int(s) for s in a["stride"]], "pads": pads,
                        "dilations": [int(d) for d in a["dilation"]], "group": int(a["groups"])}
        b = self.b
        if self.ops == "integer":
            x_zp = b.const(f"{n.output}/x_zp", _u8(zp_in))
            if conv:
                w_u8 = b.const(f"{n.output}/w_u8", (w.astype(np.int16) + WEIGHT_OFFSET).astype(np.uint8))
                w_zp = b.const(f"{n.output}/w_zp", _u8(WEIGHT_OFFSET))
                acc = b.op("ConvInteger", [x, w_u8, x_zp, w_zp], f"{n.output}/acc", **geometry)
            else:
                acc = b.op("MatMulInteger", [x, b.const(f"{n.output}/w_t", w.T), x_zp], f"{n.output}/acc")
            f = b.op("Cast", [acc], f"{n.output}/acc_f", to=self.TP.FLOAT)
            bias, mult = _requant_consts(n, s_in)
            shape = (1, -1, 1, 1) if conv else (1, -1)
            if bias is not None:
                f = b.op("Add", [f, b.const(f"{n.output}/bias_acc", bias.reshape(shape))], f"{n.output}/biased")
            f = b.op("Mul", [f, b.const(f"{n.output}/mult", mult.reshape(shape))], f"{n.output}/scaled")
            return self.requantize_unit(f, n, a["relu"])
        w_scale = a["w_scale"].numpy().astype(np.float32)
        w_zp = np.zeros(len(w_scale), dtype=np.int8)
        if self.ops == "qlinear":
            return self.qlinear(n, x, s_in, zp_in, w, w_scale, w_zp, geometry)
        xf = self.dequantize(n, x, src)
        wf = b.op("DequantizeLinear", [b.const(f"{n.output}/w", w), b.const(f"{n.output}/w_scale", w_scale),
                                       b.const(f"{n.output}/w_zp", w_zp)], f"{n.output}/w_f", axis=0)
        inputs = [xf, wf] + ([] if a["bias"] is None else [b.const(f"{n.output}/bias", a["bias"].numpy())])
        if conv:
            f = b.op("Conv", inputs, f"{n.output}/f", **geometry)
        else:
            f = b.op("Gemm", inputs, f"{n.output}/f", transB=1)
        if a["relu"]:
            f = b.op("Relu", [f], f"{n.output}/relu")
        assert n.scale is not None and n.zero_point is not None
        return b.op("QuantizeLinear", [f, b.const(f"{n.output}/scale", _f32(n.scale)),
                                       b.const(f"{n.output}/zp", _u8(n.zero_point))], n.output)

    def qlinear(self, n: IntNode, x: str, s_in: float, zp_in: int, w: np.ndarray, w_scale: np.ndarray,
                w_zp: np.ndarray, geometry: dict[str, Any]) -> str:
        b, a, conv = self.b, n.attrs, n.kind == "conv"
        assert n.scale is not None and n.zero_point is not None
        if not conv:
            x = b.op("Unsqueeze", [x, b.const(f"{n.output}/hw", np.array([2, 3], dtype=np.int64))], f"{n.output}/4d")
            w = w.reshape(*w.shape, 1, 1)
        inputs = [x, b.const(f"{n.output}/x_scale", _f32(s_in)), b.const(f"{n.output}/x_zp", _u8(zp_in)),
                  b.const(f"{n.output}/w", w), b.const(f"{n.output}/w_scale", w_scale),
                  b.const(f"{n.output}/w_zp", w_zp), b.const(f"{n.output}/y_scale", _f32(n.scale)),
                  b.const(f"{n.output}/y_zp", _u8(n.zero_point))]
        if a["bias"] is not None:
            acc_scale = np.float32(s_in) * w_scale
            inputs.append(b.const(f"{n.output}/bias_i32",
                                  np.round(a["bias"].numpy().astype(np.float32) / acc_scale).astype(np.int32)))
        y = b.op("QLinearConv", inputs, f"{n.output}/qconv", **geometry)
        if a["relu"] and n.zero_point != 0:
            y = b.op("Clip", [y, b.const(f"{n.output}/relu_min", _u8(n.zero_point))], f"{n.output}/relu")
        if not conv:
            y = b.op("Squeeze", [y, b.const(f"{n.output}/hw_axes", np.array([2, 3], dtype=np.int64))], n.output)
        return y

    def pool_code_domain(self, n: IntNode, x: str, op: str, **attrs: Any) -> str:
        """Average pooling on the codes (q - zp) in float, rounded half to even back onto the same grid.

        The codes come from ``Cast`` (and ``Sub``), not ``DequantizeLinear``: onnxruntime 1.32 fuses
        DequantizeLinear -> AveragePool -> QuantizeLinear into QLinearAveragePool and then rejects the
        fused node when its ConstantSharing pass has made the scalar scales shape [1].
        """
        assert n.zero_point is not None
        b = self.b
        codes = b.op("Cast", [x], f"{n.output}/float", to=self.TP.FLOAT)
        if n.zero_point:
            codes = b.op("Sub", [codes, b.const(f"{n.output}/zp_f", _f32(n.zero_point))], f"{n.output}/codes")
        mean = b.op(op, [codes], f"{n.output}/mean", **attrs)
        return b.op("QuantizeLinear", [mean, b.const(f"{n.output}/one", _f32(1.0)),
                                       b.const(f"{n.output}/zp", _u8(n.zero_point))], n.output)

    def add(self, n: IntNode, xa: str, xb: str) -> str:
        assert n.scale is not None and n.zero_point is not None
        b = self.b
        fa = self.dequantize(n, xa, n.inputs[0], f"{n.output}/a")
        fb = self.dequantize(n, xb, n.inputs[1], f"{n.output}/b")
        f = b.op("Add", [fa, fb], f"{n.output}/sum")
        if n.attrs["relu"]:
            f = b.op("Relu", [f], f"{n.output}/relu")
        if self.ops == "integer":
            f = b.op("Mul", [f, b.const(f"{n.output}/inv_scale", _f32(1.0 / n.scale))], f"{n.output}/scaled")
            return self.requantize_unit(f, n, relu=False)
        return b.op("QuantizeLinear", [f, b.const(f"{n.output}/scale", _f32(n.scale)),
                                       b.const(f"{n.output}/zp", _u8(n.zero_point))], n.output)

    def node(self, n: IntNode, taps: dict[str, LayerCodes], lower_tap: TapLowering,
             debug: dict[str, tuple[str, tuple[int, ...]]]) -> None:
        """Lower one integer op; a tap's values before and after its map go into ``debug``."""
        x = [self.names[i] for i in n.inputs]
        b, k, a = self.b, n.kind, n.attrs
        if k == "quantize":
            out = self.quantize(n, x[0])
        elif k in ("conv", "linear"):
            out = self.conv_or_linear(n, x[0], n.inputs[0])
        elif k == "maxpool":
            out = b.op("MaxPool", x, n.output, kernel_shape=a["kernel"], strides=a["stride"], pads=a["padding"] * 2,
                       dilations=a["dilation"], ceil_mode=int(a["ceil_mode"]))
        elif k == "avgpool":
            out = self.pool_code_domain(n, x[0], "AveragePool", kernel_shape=a["kernel"], strides=a["stride"],
                                        pads=a["padding"] * 2, ceil_mode=int(a["ceil_mode"]),
                                        count_include_pad=int(a["count_include_pad"]))
        elif k == "global_avgpool":
            out = self.pool_code_domain(n, x[0], "GlobalAveragePool")
        elif k == "flatten":
            out = b.op("Flatten", x, n.output, axis=1)
        elif k == "add":
            out = self.add(n, x[0], x[1])
        elif k == "dequantize":
            out = self.dequantize(n, x[0], n.inputs[0], OUTPUT)
        elif k == "tap":
            layer, out = a["layer"], x[0]
            if layer in taps:
                assert n.zero_point is not None
                debug[tap_input_output(layer)] = (out, n.shape)
                out = lower_tap(b, out, layer, taps[layer], n.zero_point)
            debug[tap_output(layer)] = (out, n.shape)
        else:
            raise AssertionError(f"unknown integer op {k}")
        self.names[n.output] = out


def build(graph: IntGraph, taps: dict[str, LayerCodes], ops: str = "integer", debug_taps: bool = False,
          lower_tap: TapLowering = gather_tap, batch: int | str = "N",
          metadata: dict[str, str] | None = None) -> tuple[Any, GraphBuilder]:
    """The ONNX graph of ``graph`` with the maps ``taps`` (layer -> codes) and its builder.

    ``batch`` is the input's first dimension: a name (dynamic) or a fixed size.
    """
    if ops not in ONNX_OPS:
        raise ValueError(f"ops must be one of {ONNX_OPS}, got {ops!r}")
    b = GraphBuilder()
    onnx, TP = b.onnx, b.onnx.TensorProto
    low = _Lowering(b, graph, ops)
    debug: dict[str, tuple[str, tuple[int, ...]]] = {}
    for n in graph.nodes:
        low.node(n, taps, lower_tap, debug)

    def info(name: str, elem: int, shape: tuple[int, ...]) -> Any:
        return onnx.helper.make_tensor_value_info(name, elem, [batch, *shape[1:]])

    outputs = [info(OUTPUT, TP.FLOAT, graph.node(graph.output).shape)]
    if debug_taps:
        for out_name, (src, shape) in debug.items():
            b.nodes.append(onnx.helper.make_node("Identity", [src], [out_name], name=out_name))
            outputs.append(info(out_name, TP.UINT8, shape))
    g = onnx.helper.make_graph(b.nodes, f"triseg_{graph.model}", [info(INPUT, TP.FLOAT, (1, 3, 32, 32))], outputs,
                               b.initializers)
    model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in b.opsets.items()],
                                   producer_name="triseg")
    model.ir_version = IR_VERSION
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=META_PREFIX + key, value=value)
    return model, b


def metadata(graph: IntGraph, taps: dict[str, LayerCodes], ops: str, fmt: str, teacher: dict[str, Any],
             config_file: str | None) -> dict[str, str]:
    """What verify-export reads back: model, teacher file, maps, lowering and format."""
    return {"model": graph.model, "format": fmt, "ops": ops, "teacher": json.dumps(teacher, sort_keys=True),
            "config_file": config_file or "", "layers": json.dumps({k: v.to_json() for k, v in taps.items()})}


def read_metadata(model: Any) -> dict[str, str]:
    """The ``triseg.*`` metadata of a loaded model, prefix removed."""
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def to_bytes(model: Any, full_check: bool = True) -> bytes:
    """Check the model with onnx's checker (and strict shape inference), then serialize it."""
    onnx = require("onnx")
    onnx.checker.check_model(model, full_check=full_check)
    return model.SerializeToString()


def render(req: ExportRequest) -> bytes:
    """The ``onnx`` format: the checked, serialized model of an export request."""
    meta = metadata(req.graph, req.layers, req.onnx_ops, "onnx", req.teacher.identity(), req.config_file)
    model, _ = build(req.graph, req.layers, req.onnx_ops, req.debug_taps, metadata=meta)
    return to_bytes(model)
