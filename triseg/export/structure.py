"""The integer structure of a converted INT8 model, read with torch.fx: what every export format writes.

The model's own forward code is traced with its recorder replaced by a leaf module, so each tap
point becomes a node that names its layer. Converted conv/linear modules are leaves, their weights,
scales, zero points and fused ReLU come from :func:`triseg.quant.int8_layer`; pooling, flatten and the
quantized add are functions in the trace. One forward pass of a single image (fx's ShapeProp) gives
every tensor's shape and its quantization parameters exactly as the INT8 kernels produce them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from triseg import quant
from triseg.errors import TrisegError
from triseg.models.base import TapModel

INPUT_SHAPE = (1, 3, 32, 32)


@dataclass
class IntNode:
    """One operation on uint8 tensors (``quantize`` reads the float input, ``dequantize`` writes logits).

    ``shape`` is the output shape for one image; ``scale``/``zero_point`` the output's quantization
    (None for the float logits); ``attrs`` the kind's parameters.
    """

    kind: str
    inputs: list[str]
    output: str
    shape: tuple[int, ...]
    scale: float | None
    zero_point: int | None
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class IntGraph:
    """A converted model as a list of integer operations in execution order."""

    model: str
    input: str
    output: str
    nodes: list[IntNode]
    taps: dict[str, str]

    def node(self, name: str) -> IntNode:
        """The node that writes tensor ``name``."""
        return next(n for n in self.nodes if n.output == name)

    def qparams(self, name: str) -> tuple[float, int]:
        """(scale, zero point) of a uint8 tensor of the graph."""
        n = self.node(name)
        assert n.scale is not None and n.zero_point is not None, name
        return n.scale, n.zero_point

    def tap_qparams(self, layer: str) -> tuple[float, int]:
        """(scale, zero point) of the activation at ``layer``'s tap."""
        return self.qparams(self.taps[layer])


class _TapMarker(nn.Module):
    """Stands in for the recorder while tracing: ``tap(name, x)`` becomes one graph node."""

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _TapMarker) or super().is_leaf_module(m, qualname)


def _bind(node: fx.Node, names: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments by name (positional ones named in order)."""
    values = dict(defaults)
    values.update(zip(names, node.args))
    values.update(node.kwargs)
    return values


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(e) for e in v]


_MAX_POOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_POOL = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


def _pool_attrs(node: fx.Node, avg: bool) -> dict[str, Any]:
    if avg:
        a = _bind(node, _AVG_POOL, {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
                                    "divisor_override": None})
        if a["divisor_override"] is not None:
            raise TrisegError(f"export: avg_pool2d with divisor_override at {node.name} is not supported")
        dilation = [1, 1]
    else:
        a = _bind(node, _MAX_POOL, {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                                    "return_indices": False})
        if a["return_indices"]:
            raise TrisegError(f"export: max_pool2d with return_indices at {node.name} is not supported")
        dilation = _pair(a["dilation"])
    kernel = _pair(a["kernel_size"])
    stride = kernel if a["stride"] in (None, []) else _pair(a["stride"])
    attrs = {"kernel": kernel, "stride": stride, "padding": _pair(a["padding"]), "dilation": dilation,
             "ceil_mode": bool(a["ceil_mode"])}
    if avg:
        attrs["count_include_pad"] = bool(a["count_include_pad"])
    return attrs


def _meta(node: fx.Node) -> tuple[tuple[int, ...], float | None, int | None]:
    tm = node.meta.get("tensor_meta")
    if tm is None:
        raise TrisegError(f"export: no tensor at {node.name} ({node.target})")
    if tm.is_quantized:
        return tuple(tm.shape), float(tm.qparams["scale"]), int(tm.qparams["zero_point"])
    return tuple(tm.shape), None, None


def trace(model: TapModel, name: str) -> IntGraph:
    """The integer structure of the converted model ``model`` (registered as ``name``)."""
    traced_model = copy.deepcopy(model).cpu().eval()
    traced_model.recorder = _TapMarker()
    try:
        gm = fx.GraphModule(traced_model, _Tracer().trace(traced_model))
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(INPUT_SHAPE))
    except TrisegError:
        raise
    except Exception as exc:
        raise TrisegError(f"export: cannot trace {name} ({type(exc).__name__}: {exc})") from None
    layer_of = {model.tap_name(layer): layer for layer in model.layers()}
    alias: dict[str, str] = {}
    nodes: list[IntNode] = []
    taps: dict[str, str] = {}
    graph_input = graph_output = ""

    def src(n: Any) -> str:
        return alias.get(n.name, n.name)

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            graph_input = node.name
            continue
        if node.op == "output":
            graph_output = src(node.args[0])
            continue
        if node.op == "get_attr":
            raise TrisegError(f"export: tensor attribute {node.target} used in {name}'s forward is not supported")
        shape, scale, zp = _meta(node)

        def add(op: str, inputs: list[str], **attrs: Any) -> None:
            nodes.append(IntNode(op, inputs, node.name, shape, scale, zp, attrs))

        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if isinstance(mod, _TapMarker):
                tap_name, x = node.args
                if tap_name not in layer_of:
                    raise TrisegError(f"export: tap {tap_name} of {name} is not an approximated layer")
                add("tap", [src(x)], layer=layer_of[tap_name])
                taps[layer_of[tap_name]] = node.name
                continue
            if isinstance(mod, (nn.Identity, nn.Dropout)):
                alias[node.name] = src(node.args[0])
                continue
            info = quant.int8_layer(mod)
            if info is None:
                raise TrisegError(f"export: module {node.target} ({type(mod).__name__}) of {name} is not supported")
            if info["kind"] in ("conv", "linear"):
                add(info.pop("kind"), [src(node.args[0])], **info)
            elif info["kind"] in ("quantize", "dequantize"):
                add(info["kind"], [src(node.args[0])])
            else:
                raise TrisegError(f"export: module {node.target} ({info['kind']}) of {name} is not supported")
            continue
        target = node.target
        if target is F.max_pool2d or target is torch.max_pool2d:
            add("maxpool", [src(node.args[0])], **_pool_attrs(node, avg=False))
        elif target is F.avg_pool2d:
            add("avgpool", [src(node.args[0])], **_pool_attrs(node, avg=True))
        elif target is F.adaptive_avg_pool2d:
            size = _bind(node, ("input", "output_size"), {})["output_size"]
            if _pair(size) != [1, 1]:
                raise TrisegError(f"export: adaptive_avg_pool2d to {size} in {name} is not supported (only 1)")
            add("global_avgpool", [src(node.args[0])])
        elif target is torch.flatten:
            a = _bind(node, ("input", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})
            if a["start_dim"] != 1 or a["end_dim"] != -1:
                raise TrisegError(f"export: flatten({a['start_dim']}, {a['end_dim']}) in {name} is not supported")
            add("flatten", [src(node.args[0])])
        elif target in (torch.ops.quantized.add, torch.ops.quantized.add_relu):
            add("add", [src(node.args[0]), src(node.args[1])], relu=target is torch.ops.quantized.add_relu)
        else:
            raise TrisegError(f"export: operation {getattr(target, '__name__', target)} in {name} is not supported")
    missing = [layer for layer in model.layers() if layer not in taps]
    if missing:
        raise TrisegError(f"export: the forward of {name} never taps {', '.join(missing)}")
    return IntGraph(name, graph_input, graph_output, nodes, taps)
