"""Integer simulation of a converted INT8 model in float arithmetic (runs on CPU or GPU).

A fake-quant (QAT) model rounds conv + bias in float, while the INT8 kernels accumulate integers and
requantize; the two disagree by one code on a few percent of activations, and a tri-segment map
turns such a one-code difference at a threshold into a jump of a whole segment. This module rebuilds
the backend's arithmetic instead (fbgemm's ``ReQuantizeOutput`` with a float bias):

    raw   = sum((q_in - zp_in) * w_q)                      exact: integer values in float64
    raw_f = float32(raw) + float32(bias / (s_in * s_w))
    q_out = clamp(round_half_even(raw_f * (s_in * s_w / s_out)) + zp_out, relu ? zp_out : 0, 255)

Activations travel as dequantized float tensors ``(q - zp) * s``, so the models' own forward code
(pooling, flatten, tap points) runs unchanged, and tap edits use the float path of the LUT.

Average pooling keeps its input's quantization and rounds the mean back onto the grid (channels-last
tensors, which every conv and add emits: ``zp + round_half_even(mean(q - zp))``). The simulation
pools the float values and rounds where the result is read: at the next conv / linear and at the
dequantize stub (NiN's logits are pooled codes). Averages of 2x2 or 8x8 codes land exactly on a
half code, so :func:`grid_codes` resolves float error before rounding.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from triseg import quant


SNAP = 4096.0


def grid_codes(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Integer codes (float64) of an activation on the grid of ``scale``, as the kernels round them.

    ``x / scale`` is first snapped to 1/4096 of a code: float32 error (about 1e-5 of a code) would break
    exact ties of averaged codes, which round half to even; averages of up to 2048 codes stay on their
    side of a tie.
    """
    return torch.round(torch.round(x.double() * (SNAP / scale)) / SNAP)


def _requantize(acc: torch.Tensor, info: dict, s_in: float, shape: tuple[int, ...]) -> torch.Tensor:
    act_w = (torch.tensor(s_in, dtype=torch.float32) * info["w_scale"]).to(acc.device)
    mult = (act_w / torch.tensor(info["scale"], dtype=torch.float32)).view(shape)
    raw_f = acc.float()
    if info["bias"] is not None:
        raw_f = raw_f + (info["bias"].to(acc.device) / act_w).view(shape)
    q = torch.round(raw_f * mult) + info["zero_point"]
    q = q.clamp(info["zero_point"] if info["relu"] else 0, 255)
    return (q - info["zero_point"]) * info["scale"]


class SimQuantize(nn.Module):
    """Input quantization: q = clamp(round(x / s) + zp, 0, 255), emitted as (q - zp) * s."""

    def __init__(self, info: dict) -> None:
        super().__init__()
        self.scale, self.zero_point = info["scale"], info["zero_point"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = (torch.round(x.float() * (1.0 / self.scale)) + self.zero_point).clamp(0, 255)
        return (q - self.zero_point) * self.scale


class SimLinearOrConv(nn.Module):
    """A quantized conv / linear reproduced with exact integer accumulation."""

    def __init__(self, info: dict, s_in: float) -> None:
        super().__init__()
        self.info, self.s_in = info, s_in
        self.register_buffer("weight", info["weight"].double())
        self.scale, self.zero_point = info["scale"], info["zero_point"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = grid_codes(x, self.s_in)
        info = self.info
        if info["kind"] == "conv":
            acc = F.conv2d(codes, self.weight, None, info["stride"], info["padding"], info["dilation"], info["groups"])
            return _requantize(acc, info, self.s_in, (1, -1, 1, 1))
        return _requantize(F.linear(codes, self.weight), info, self.s_in, (1, -1))


class SimDequantize(nn.Module):
    """The output stub: its input rounded onto the input's grid (a pooled tensor is not on it yet)."""

    def __init__(self, s_in: float) -> None:
        super().__init__()
        self.s_in = s_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grid_codes(x, self.s_in).float() * self.s_in


class SimAdd(nn.Module):
    """Quantized add(+ReLU): dequantize both inputs, add in float32, requantize."""

    def __init__(self, info: dict) -> None:
        super().__init__()
        self.scale, self.zero_point = info["scale"], info["zero_point"]

    def _requant(self, c: torch.Tensor) -> torch.Tensor:
        q = (torch.round(c * (1.0 / self.scale)) + self.zero_point).clamp(0, 255)
        return (q - self.zero_point) * self.scale

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._requant(a.float() + b.float())

    def add_relu(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._requant(torch.relu(a.float() + b.float()))


@torch.no_grad()
def input_scales(int8_model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """The input scale of every quantized conv / linear and dequantize stub, read from one forward pass."""
    scales: dict[str, float] = {}
    hooks = []
    for name, mod in int8_model.named_modules():
        info = quant.int8_layer(mod)
        if info is not None and info["kind"] in ("conv", "linear", "dequantize"):
            def hook(m, args, name=name):
                scales[name] = float(args[0].q_scale())
            hooks.append(mod.register_forward_pre_hook(hook))
    recorder, int8_model.recorder = getattr(int8_model, "recorder", None), None
    try:
        int8_model(example)
    finally:
        int8_model.recorder = recorder
        for h in hooks:
            h.remove()
    return scales


def simulate(int8_model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """A float copy of a converted model whose arithmetic reproduces the INT8 kernels."""
    example = example if example is not None else torch.zeros(1, 3, 32, 32)
    scales = input_scales(int8_model, example)
    sim = copy.deepcopy(int8_model)
    sim.recorder = None
    for name, mod in list(sim.named_modules()):
        info = quant.int8_layer(mod)
        if info is None:
            continue
        kind = info["kind"]
        if kind == "quantize":
            new: nn.Module = SimQuantize(info)
        elif kind == "dequantize":
            new = SimDequantize(scales[name])
        elif kind == "add":
            new = SimAdd(info)
        elif name in scales:
            new = SimLinearOrConv(info, scales[name])
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(sim.get_submodule(parent) if parent else sim, attr, new)
    return sim.eval()
