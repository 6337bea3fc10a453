"""LSQ models as small op graphs: one definition drives the float net, the BN-folded QAT net and the
integer export.

A model is a list of :class:`Op` over named tensors (``"input"`` is the image batch). Kinds
(:data:`triseg.lsq.ops.KINDS`): ``conv`` (Conv2d + BatchNorm2d), ``linear``, ``add`` (two inputs),
``maxpool`` and ``avgpool`` (global average + flatten). ``relu`` applies after the op. Each op's
output is named after the op. An op of any other kind is an error wherever the graph is run.

Models: ``resnet_cifar10`` (ResNet-20, He et al. 2016, 1x1-conv shortcuts when the shape changes),
``resnet18`` / ``resnet34`` (ImageNet layout; 7x7/2 stem + max pool for ImageNet, a 3x3/1 stem
without pooling for 32x32 inputs) and ``tiny_vgg`` (six 3x3 convs, three max pools).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from triseg.errors import TrisegError
from triseg.lsq.ops import handler, op_table


@dataclass(frozen=True)
class Op:
    """One node: ``kind`` applied to ``inputs``, output named ``name``; pool geometry for maxpool."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    relu: bool = False
    kernel: int = 0
    stride: int = 0
    padding: int = 0


class ConvBN(nn.Module):
    """Conv2d without bias followed by BatchNorm2d."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2 if padding is None else padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the single conv equal to conv + BN in eval mode (running statistics)."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = self.conv.weight * scale.view(-1, 1, 1, 1)
        return weight.detach().clone(), (bn.bias - bn.running_mean * scale).detach().clone()


def max_pool(op: Op, x: torch.Tensor) -> torch.Tensor:
    """The float semantics of a ``maxpool`` op."""
    return F.max_pool2d(x, op.kernel, op.stride, op.padding)


def global_avg_pool(op: Op, x: torch.Tensor) -> torch.Tensor:
    """The float semantics of an ``avgpool`` op: global average, flattened."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class GraphNet(nn.Module):
    """A float network: ``layers`` holds the conv/linear modules, ``ops`` the wiring."""

    def __init__(self, ops: list[Op], layers: dict[str, nn.Module], name: str, small_input: bool) -> None:
        super().__init__()
        self.ops = ops
        self.layers = nn.ModuleDict(layers)
        self.arch = name
        self.small_input = small_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {"input": x}
        for op in self.ops:
            y = handler(FLOAT_OPS, op.kind, op.name)(self, op, [env[i] for i in op.inputs])
            env[op.name] = F.relu(y) if op.relu else y
        return env[self.ops[-1].name]


FloatHandler = Callable[[GraphNet, Op, list[torch.Tensor]], torch.Tensor]
FLOAT_OPS: dict[str, FloatHandler] = op_table({
    "conv": lambda net, op, args: net.layers[op.name](args[0]),
    "linear": lambda net, op, args: net.layers[op.name](args[0]),
    "add": lambda net, op, args: args[0] + args[1],
    "maxpool": lambda net, op, args: max_pool(op, args[0]),
    "avgpool": lambda net, op, args: global_avg_pool(op, args[0]),
})


class _Builder:
    """Collects ops and modules while a model is described."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.layers: dict[str, nn.Module] = {}

    def conv(self, name: str, src: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True,
             padding: int | None = None) -> str:
        self.layers[name] = ConvBN(cin, cout, k, stride, padding)
        self.ops.append(Op("conv", name, (src,), relu))
        return name

    def pool(self, kind: str, name: str, src: str, kernel: int = 0, stride: int = 0, padding: int = 0) -> str:
        self.ops.append(Op(kind, name, (src,), False, kernel, stride, padding))
        return name

    def block(self, prefix: str, src: str, cin: int, cout: int, stride: int) -> str:
        """A basic residual block: conv3x3-BN-ReLU, conv3x3-BN, + shortcut, ReLU."""
        h = self.conv(f"{prefix}_conv1", src, cin, cout, 3, stride)
        h = self.conv(f"{prefix}_conv2", h, cout, cout, 3, relu=False)
        skip = src if stride == 1 and cin == cout else self.conv(f"{prefix}_shortcut", src, cin, cout, 1, stride,
                                                                  relu=False)
        self.ops.append(Op("add", f"{prefix}_add", (h, skip), relu=True))
        return f"{prefix}_add"

    def head(self, src: str, cin: int, num_classes: int) -> None:
        self.pool("avgpool", "avgpool", src)
        self.layers["fc"] = nn.Linear(cin, num_classes)
        self.ops.append(Op("linear", "fc", ("avgpool",)))


def _resnet(blocks: tuple[int, ...], widths: tuple[int, ...], num_classes: int, imagenet_stem: bool) -> _Builder:
    b = _Builder()
    if imagenet_stem:
        x = b.pool("maxpool", "stem_pool", b.conv("stem", "input", 3, widths[0], 7, 2, padding=3), 3, 2, 1)
    else:
        x = b.conv("stem", "input", 3, widths[0], 3)
    cin = widths[0]
    for s, (n, width) in enumerate(zip(blocks, widths), start=1):
        for i in range(n):
            x = b.block(f"layer{s}_{i}", x, cin, width, 2 if i == 0 and s > 1 else 1)
            cin = width
    b.head(x, cin, num_classes)
    return b


def _tiny_vgg(num_classes: int, imagenet_stem: bool) -> _Builder:
    b = _Builder()
    x, cin = "input", 3
    if imagenet_stem:
        x, cin = b.pool("maxpool", "stem_pool", b.conv("stem", x, 3, 32, 7, 2, padding=3), 3, 2, 1), 32
    for s, width in enumerate((32, 64, 128), start=1):
        for i in range(2):
            x, cin = b.conv(f"conv{s}_{i}", x, cin, width, 3), width
        x = b.pool("maxpool", f"pool{s}", x, 2, 2)
    b.head(x, cin, num_classes)
    return b


MODELS: dict[str, Callable[[int, bool], _Builder]] = {
    "resnet_cifar10": lambda n, big: _resnet((3, 3, 3), (16, 32, 64), n, big),
    "resnet18": lambda n, big: _resnet((2, 2, 2, 2), (64, 128, 256, 512), n, big),
    "resnet34": lambda n, big: _resnet((3, 4, 6, 3), (64, 128, 256, 512), n, big),
    "tiny_vgg": _tiny_vgg,
}


def build_model(name: str, num_classes: int = 10, small_input: bool = True) -> GraphNet:
    """A fresh float model; ``small_input`` selects the 32x32 stem (CIFAR) over the ImageNet stem."""
    if name not in MODELS:
        raise TrisegError(f"unknown LSQ model {name!r}; choose one of {', '.join(MODELS)}")
    b = MODELS[name](num_classes, not small_input)
    return GraphNet(b.ops, b.layers, name, small_input)
