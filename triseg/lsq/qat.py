"""The LSQ fake-quant network: BN folded into every conv, LSQ weights and activations, int32 biases.

Quantization points (what the integer engine computes exactly):

* the network input is quantized once (signed);
* every conv/linear has LSQ weights (signed, one step per tensor; with ``per_channel_weights`` every
  conv has one step per output channel) and a bias quantized to the accumulator scale ``s_in * s_w``
  (round to nearest, straight-through). Folded BN gives the output channels of a conv very
  different ranges, which one step per tensor serves badly at 2-4 bits: per-channel steps are the
  integer-only convention of TFLite and Jacob et al.; the classifier keeps one step, so its int32
  accumulators stay comparable logits;
* every conv or add output is quantized by an LSQ activation quantizer (unsigned after ReLU) unless
  its only consumers are residual adds: such an output stays an int32 accumulator and the add
  rescales both of its inputs to the add's output step (one rounding per add);
* with ``residual_bits`` above the activation width, the adds' outputs (the residual stream) keep
  that width and every conv that reads one re-quantizes it to the activation width with its own
  LSQ step (an integer rescale of codes in the engine), so each conv still multiplies
  ``a_bits``-bit activations;
* max pooling passes codes through; global average pooling feeds the classifier the sum of codes at
  scale ``s / (H * W)``; the classifier output (logits) stays an int32 accumulator.

First/last layer policy (as in the LSQ paper): the input quantizer, the first conv's weights, the
classifier's weights and the activations the classifier reads use ``first_last_bits`` (default 8);
every other weight and activation uses ``--w-num-bits`` / ``--a-num-bits``.

BN folding: BatchNorm is folded into the conv weight and bias with its running statistics when the
float model is converted, and QAT trains the folded parameters, so the trained graph is the
inference graph (no BN statistics drift, nothing to re-fold at export). Without normalisation the
net tolerates a smaller learning rate than its BN original: on ResNet-20, SGD at 0.01 diverges
within five steps, 0.001 (the ``lsq-qat`` default) is stable. ``keep_bn`` instead trains every conv
with its BatchNorm, as the LSQ paper does, and folds BN's running statistics only for inference,
into one weight step per output channel and the bias (:class:`QuantLayer`); the weight codes are
the trained ones, so eval mode and the integer export are exact as before.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from triseg.lsq.models import GraphNet, Op, global_avg_pool, max_pool
from triseg.lsq.ops import POOL_KINDS, handler, op_table
from triseg.lsq.quantizer import LsqQuantizer, check_bits, round_ste

Traced = dict[str, tuple[torch.Tensor, torch.Tensor]]


def bias_scale(s_in: torch.Tensor, s_w: torch.Tensor) -> torch.Tensor:
    """The accumulator scale ``s_in * s_w`` (no gradient): the scale of the int32 bias and output, one
    per output channel when the weights have per-channel steps."""
    return (s_in * s_w.flatten() if s_w.ndim else s_in * s_w).detach()


class QuantLayer(nn.Module):
    """A conv or linear layer with LSQ weights and a bias on the accumulator grid.

    Without ``bn`` the conv's BN is already folded into ``weight`` and ``bias``. With ``bn`` (``keep_bn``)
    the layer trains as conv + BatchNorm (batch statistics, learned scale and shift) and, in eval mode
    and at export, folds BN's running statistics into one weight step per output channel and the bias:
    the weight codes stay the trained ones (a negative BN scale flips their sign), so the inference
    graph is exact integer arithmetic again.
    """

    def __init__(self, kind: str, weight: torch.Tensor, bias: torch.Tensor | None, bits: int,
                 stride: int = 1, padding: int = 0, per_channel: bool = False,
                 bn: nn.BatchNorm2d | None = None, step_init: str = "lsq") -> None:
        super().__init__()
        if (bias is None) == (bn is None):
            raise ValueError("a layer has either a bias (BN folded) or a BatchNorm, not both or neither")
        self.kind, self.stride, self.padding = kind, stride, padding
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.bn = bn
        self.wq = LsqQuantizer(bits, signed=True, per_sample=False, per_channel=per_channel, init=step_init)
        self.wq.init_step(weight)
        self.in_q: LsqQuantizer | None = None  # set by to_qat when the input arrives wider than --a-num-bits

    def _bn_scale(self) -> torch.Tensor:
        """BN's per-channel factor ``gamma / sqrt(running_var + eps)``, shaped to scale weight channels."""
        assert self.bn is not None
        return (self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)).view(-1, 1, 1, 1)

    def _folded_step(self) -> torch.Tensor:
        """The weight step with BN's factor folded in: one signed step per output channel."""
        return self.wq.step * self._bn_scale()

    def integer_view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weight codes, positive weight step, real bias) of the inference layer; with BN the step is one
        per output channel and the sign of BN's scale moves into the codes (a flipped channel's codes run
        from ``-Qp`` to ``-Qn = Qp + 1``: still ``2**bits`` values, mirrored)."""
        codes = self.wq.codes(self.weight)
        if self.bn is None:
            assert self.bias is not None
            return codes, self.wq.step, self.bias
        step = self._folded_step()
        bias = self.bn.bias - self.bn.running_mean * self._bn_scale().flatten()
        return codes * torch.sign(step), step.abs(), bias

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding) if self.kind == "conv" else F.linear(x, w, b)

    def forward(self, x: torch.Tensor, s_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and its accumulator scale (after re-quantizing the input when the layer has ``in_q``)."""
        if self.in_q is not None:
            x, s_in = self.in_q(x), self.in_q.step.detach()
        if self.bn is not None and self.training:
            y = self.bn(self._op(x, self.wq(self.weight), None))
            return y, bias_scale(s_in, self._folded_step().abs())
        if self.bn is None:
            assert self.bias is not None
            w, step, bias = self.wq(self.weight), self.wq.step, self.bias
        else:
            codes, step, bias = self.integer_view()
            w = codes * step
        scale = bias_scale(s_in, step)
        b = round_ste(bias / scale) * scale
        return self._op(x, w, b), scale


class QuantNet(nn.Module):
    """The fake-quant network; :meth:`trace` exposes every tensor with its scale."""

    def __init__(self, ops: list[Op], layers: dict[str, QuantLayer], acts: dict[str, LsqQuantizer],
                 input_q: LsqQuantizer, meta: dict) -> None:
        super().__init__()
        self.ops = ops
        self.layers = nn.ModuleDict(layers)
        self.acts = nn.ModuleDict(acts)
        self.input_q = input_q
        self.meta = meta

    def trace(self, x: torch.Tensor) -> Traced:
        """Every op's output and scale: codes * step for quantized outputs, acc * scale otherwise."""
        env: Traced = {"input": (self.input_q(x), self.input_q.step.detach())}
        for op in self.ops:
            y, s = handler(QAT_OPS, op.kind, op.name)(self, op, env)
            if op.relu:
                y = F.relu(y)
            if op.name in self.acts:
                q = self.acts[op.name]
                y, s = q(y), q.step.detach()
            env[op.name] = (y, s)
        return env

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trace(x)[self.ops[-1].name][0]

    def steps(self) -> list[nn.Parameter]:
        """All learned step sizes."""
        return [p for n, p in self.named_parameters() if n.endswith(".step") or n == "input_q.step"]

    def param_groups(self, weight_decay: float) -> list[dict]:
        """SGD parameter groups: weight decay on weights and biases, never on step sizes or kept BN."""
        free = {id(p) for p in self.steps()} | {id(p) for n, p in self.named_parameters() if ".bn." in n}
        return [{"params": [p for p in self.parameters() if id(p) not in free], "weight_decay": weight_decay},
                {"params": [p for p in self.parameters() if id(p) in free], "weight_decay": 0.0}]


def _layer(net: QuantNet, op: Op, env: Traced) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv or linear: the output at its accumulator scale."""
    return net.layers[op.name](*env[op.inputs[0]])


def _add(net: QuantNet, op: Op, env: Traced) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum of both real values; the add's output quantizer gives it its scale."""
    v, s = env[op.inputs[0]]
    return v + env[op.inputs[1]][0], s


def _maxpool(net: QuantNet, op: Op, env: Traced) -> tuple[torch.Tensor, torch.Tensor]:
    """Max pooling keeps the input's codes and scale."""
    v, s = env[op.inputs[0]]
    return max_pool(op, v), s


def _avgpool(net: QuantNet, op: Op, env: Traced) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of codes is their sum at scale ``s / (H * W)``."""
    v, s = env[op.inputs[0]]
    return global_avg_pool(op, v), s / (v.shape[2] * v.shape[3])


QAT_OPS: dict[str, Callable[[QuantNet, Op, Traced], tuple[torch.Tensor, torch.Tensor]]] = op_table({
    "conv": _layer, "linear": _layer, "add": _add, "maxpool": _maxpool, "avgpool": _avgpool,
})


def _classifier_feeder(ops: list[Op]) -> str:
    """The op whose quantized output the final linear layer reads (through pooling ops)."""
    by_name = {op.name: op for op in ops}
    name = ops[-1].inputs[0]
    while by_name[name].kind in POOL_KINDS:
        name = by_name[name].inputs[0]
    return name


def _code_source(by_name: dict[str, Op], name: str) -> str:
    """The op whose codes tensor ``name`` carries (max pooling passes codes through)."""
    while name in by_name and by_name[name].kind == "maxpool":
        name = by_name[name].inputs[0]
    return name


def to_qat(net: GraphNet, w_bits: int, a_bits: int, first_last_bits: int = 8,
           per_channel_weights: bool = False, keep_bn: bool = False, residual_bits: int | None = None,
           weight_step_init: str = "lsq", act_step_init: str = "mse") -> QuantNet:
    """Fold BN and wrap every layer with LSQ quantizers (see the module docstring for the policy);
    ``per_channel_weights`` gives every conv one weight step per output channel; ``keep_bn`` trains
    each conv with its BatchNorm and folds it only for inference (:class:`QuantLayer`);
    ``residual_bits`` (default ``a_bits``) is the width of the residual adds' outputs, and a conv that
    reads a wider tensor re-quantizes it to ``a_bits`` first; ``weight_step_init`` and ``act_step_init``
    are the rules (:data:`~triseg.lsq.quantizer.STEP_INITS`) that start the weight and activation steps
    (defaults as ``lsq-qat``'s)."""
    residual_bits = a_bits if residual_bits is None else residual_bits
    for bits, option in ((w_bits, "--w-num-bits"), (a_bits, "--a-num-bits"), (first_last_bits, "--first-last-bits"),
                         (residual_bits, "--residual-bits")):
        check_bits(bits, option)
    consumers: dict[str, list[Op]] = {}
    for op in net.ops:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op)
    feeder = _classifier_feeder(net.ops)
    by_name = {op.name: op for op in net.ops}
    layers: dict[str, QuantLayer] = {}
    acts: dict[str, LsqQuantizer] = {}
    for op in net.ops:
        if op.kind == "conv":
            mod = net.layers[op.name]
            if keep_bn:
                weight, bias, bn = mod.conv.weight.detach().clone(), None, copy.deepcopy(mod.bn)
            else:
                (weight, bias), bn = mod.folded(), None
            bits = first_last_bits if op.inputs[0] == "input" else w_bits
            layers[op.name] = QuantLayer("conv", weight, bias, bits, mod.conv.stride[0], mod.conv.padding[0],
                                         per_channel_weights, bn, weight_step_init)
            src = acts.get(_code_source(by_name, op.inputs[0]))
            if src is not None and src.bits > a_bits:
                layers[op.name].in_q = LsqQuantizer(a_bits, signed=src.signed, per_sample=True, init=act_step_init)
        elif op.kind == "linear":
            mod = net.layers[op.name]
            layers[op.name] = QuantLayer("linear", mod.weight.detach().clone(), mod.bias.detach().clone(),
                                         first_last_bits, step_init=weight_step_init)
        users = consumers.get(op.name, [])
        if op.kind in ("conv", "add") and users and not all(u.kind == "add" for u in users):
            bits = first_last_bits if op.name == feeder else residual_bits if op.kind == "add" else a_bits
            acts[op.name] = LsqQuantizer(bits, signed=not op.relu, per_sample=True, init=act_step_init)
    meta = {"model": net.arch, "small_input": net.small_input,
            "num_classes": int(layers[net.ops[-1].name].weight.shape[0]),
            "w_bits": w_bits, "a_bits": a_bits, "first_last_bits": first_last_bits,
            "per_channel_weights": per_channel_weights, "keep_bn": keep_bn, "residual_bits": residual_bits,
            "weight_step_init": weight_step_init, "act_step_init": act_step_init}
    input_q = LsqQuantizer(first_last_bits, signed=True, per_sample=True, init=act_step_init)
    return QuantNet(net.ops, layers, acts, input_q, meta)
