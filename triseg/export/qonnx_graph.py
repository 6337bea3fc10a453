"""The student for FPGA flows (FINN / QONNX): each tri-segment map as a QONNX ``MultiThreshold`` node.

The map is a monotone step function of the uint8 values q (clamp(map(q - zp) + zp, 0, 255)), so it
is ``out_bias + count(q >= T_i)`` for a sorted list of thresholds: one threshold at k - 0.5 for every
unit step between q = k - 1 and q = k (the half-integers make ``>=`` and ``>`` agree on integer
inputs). The rest of the graph is the ONNX export's ``integer`` lowering with a fixed batch size
(FINN's convention is 1), shapes inferred with qonnx, and runs in ``qonnx.core.onnx_exec.execute_onnx``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from triseg.approx.config import LayerCodes
from triseg.approx.lut import quint8_table
from triseg.export import onnx_graph
from triseg.export.deps import require
from triseg.export.onnx_graph import GraphBuilder
from triseg.export.request import ExportRequest
from triseg.export.structure import IntGraph

DOMAIN = "qonnx.custom_op.general"
BATCH = 1


def thresholds(codes: LayerCodes, zero_point: int) -> tuple[np.ndarray, float]:
    """MultiThreshold parameters of one map: thresholds of shape (1, N), ascending, and ``out_bias``."""
    table = quint8_table(codes, zero_point).numpy().astype(np.int64)
    steps = np.diff(table)
    if (steps < 0).any():
        raise AssertionError("a tri-segment table must be non-decreasing")
    values = np.repeat(np.arange(1, 256, dtype=np.float32) - np.float32(0.5), steps)
    return values.reshape(1, -1), float(table[0])


def multithreshold_tap(b: GraphBuilder, x: str, layer: str, codes: LayerCodes, zero_point: int) -> str:
    """uint8 -> float -> MultiThreshold (one threshold set for all channels) -> uint8."""
    th, bias = thresholds(codes, zero_point)
    b.opsets[DOMAIN] = 1
    f = b.op("Cast", [x], f"{x}/float", to=b.onnx.TensorProto.FLOAT)
    y = b.op("MultiThreshold", [f, b.const(f"thresholds.{layer}", th)], f"{x}/thresholded", domain=DOMAIN,
             out_dtype="UINT8", out_scale=1.0, out_bias=bias)
    return b.op("Cast", [y], f"{x}/mapped", to=b.onnx.TensorProto.UINT8)


def build(graph: IntGraph, taps: dict[str, LayerCodes], debug_taps: bool = False,
          metadata: dict[str, str] | None = None, batch: int = BATCH) -> Any:
    """A qonnx ``ModelWrapper`` of the student with every tensor's shape inferred."""
    require("onnx")
    wrapper = require("qonnx.core.modelwrapper")
    infer = require("qonnx.transformation.infer_shapes")
    model, _ = onnx_graph.build(graph, taps, "integer", debug_taps, lower_tap=multithreshold_tap, batch=batch,
                                metadata=metadata)
    return wrapper.ModelWrapper(model).transform(infer.InferShapes())


def with_batch(model: Any, batch: int) -> Any:
    """A copy of a qonnx model whose inputs and outputs have first dimension ``batch``, shapes re-inferred."""
    infer = require("qonnx.transformation.infer_shapes")
    out = copy.deepcopy(model)
    for vi in [*out.graph.input, *out.graph.output]:
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    del out.graph.value_info[:]
    return out.transform(infer.InferShapes())


def render(req: ExportRequest) -> bytes:
    """The ``qonnx`` format: the serialized qonnx model of an export request (batch size 1)."""
    meta = onnx_graph.metadata(req.graph, req.layers, "integer", "qonnx", req.teacher.identity(), req.config_file)
    return onnx_graph.to_bytes(build(req.graph, req.layers, req.debug_taps, meta).model, full_check=False)
