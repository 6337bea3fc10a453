"""Learned Step Size Quantization (Esser et al., ICLR 2020).

``x_hat = round(clamp(x / s, Qn, Qp)) * s`` with a straight-through round and the step ``s`` learned
with its gradient scaled by ``g = 1 / sqrt(N * Qp)`` (N = the weights sharing the step: all of the
tensor's, or one output channel's with a per-channel step; features per sample for activations).
Steps start at ``2 * mean|x| / sqrt(Qp)`` over the values sharing them (the paper's rule, ``"lsq"``), or at
the step of least quantization error (``"mse"``). Symmetric, no zero point.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from triseg.errors import TrisegError

MIN_BITS, MAX_BITS = 2, 8
MIN_STEP = 1e-8


def bad_bits(bits: object) -> str | None:
    """Why ``bits`` is not a supported width, or None (an :func:`triseg.options.option` check)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        return f"must be from {MIN_BITS} to {MAX_BITS} bits"
    return None


def check_bits(bits: int, option: str) -> int:
    """``bits`` if it is a supported width, else a one-line error naming ``option``."""
    problem = bad_bits(bits)
    if problem:
        raise TrisegError(f"{option} {problem}, got {bits}")
    return bits


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """(Qn, Qp): the smallest and largest integer code."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged (bit for bit) in the forward pass; its gradient multiplied by ``scale``."""
    return _GradScale.apply(x, scale)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (half to even) with the identity as gradient; exact in the forward pass
    because ``round(x) - x`` and the sum back are exact in floating point (Sterbenz)."""
    return (x.round() - x).detach() + x


def lsq(x: torch.Tensor, step: torch.Tensor, qn: int, qp: int, g: float) -> torch.Tensor:
    """Fake-quantize ``x`` with step ``step`` (gradient scaled by ``g``)."""
    s = grad_scale(step, g)
    return round_ste(torch.clamp(x / s, qn, qp)) * s


def _codes(x: torch.Tensor, step: torch.Tensor, qn: int, qp: int) -> torch.Tensor:
    """The integer codes (as floats) of ``x`` at ``step``: the forward pass of :func:`lsq` before the scaling."""
    return torch.clamp(x / step, qn, qp).round()


def lsq_init(x: torch.Tensor, qn: int, qp: int, per_channel: bool) -> torch.Tensor:
    """The LSQ paper's step ``2 * mean|x| / sqrt(Qp)``: a scalar, or ``(C, 1, ...)`` per channel."""
    if per_channel:
        return 2 * x.abs().flatten(1).mean(1).view(-1, *[1] * (x.ndim - 1)) / math.sqrt(qp)
    return torch.tensor(2 * x.abs().mean().item() / math.sqrt(qp), dtype=torch.float64)


MSE_GRID_RATIO = 1.08  # neighbouring multiples of the coarse grid tried by "mse"
MSE_FINE = torch.logspace(-math.log10(MSE_GRID_RATIO), math.log10(MSE_GRID_RATIO), 17)  # around the coarse best


def mse_grid(top: float) -> torch.Tensor:
    """The multiples of the :func:`lsq_init` step that :func:`mse_init` tries first: geometric,
    :data:`MSE_GRID_RATIO` apart, from 0.05 to ``top`` (at least 2)."""
    top = max(top, 2.0)
    n = math.ceil(math.log(top / 0.05) / math.log(MSE_GRID_RATIO)) + 1
    return torch.logspace(math.log10(0.05), math.log10(top), n)


def mse_init(x: torch.Tensor, qn: int, qp: int, per_channel: bool) -> torch.Tensor:
    """The step of least mean squared quantization error (per channel when ``per_channel``): the best multiple
    of :func:`lsq_init` on :func:`mse_grid` up to the step that clips nothing, refined within one grid interval
    (:data:`MSE_FINE`). The paper's rule is far from it for activations, which are sparse after a ReLU: on
    calibrated ResNet-20 the least-error activation step is 0.1x to 21x the paper's (docs/lsq.md)."""
    base = lsq_init(x, qn, qp, per_channel).clamp_min(MIN_STEP)
    dims = tuple(range(1, x.ndim)) if per_channel else tuple(range(x.ndim))
    no_clip = x.amax(dims) / qp
    if qn:
        no_clip = torch.maximum(no_clip, x.amin(dims) / qn)

    def least_error(multiples: list[torch.Tensor]) -> torch.Tensor:
        """Of the candidate multiples (scalars, or one per channel), the one of least error."""
        cands = torch.stack([m.expand(no_clip.shape) for m in multiples])
        steps = (base * (c.view_as(base) if per_channel else c) for c in cands)
        errors = torch.stack([(_codes(x, step, qn, qp) * step - x).square().mean(dims) for step in steps])
        return cands.gather(0, errors.argmin(0, keepdim=True)).squeeze(0)

    coarse = least_error(list(mse_grid((no_clip / base.reshape(no_clip.shape)).max().item())))
    best = least_error([coarse * f for f in MSE_FINE])
    return base * (best.view_as(base) if per_channel else best.item())


STEP_INITS = {"lsq": lsq_init, "mse": mse_init}


class LsqQuantizer(nn.Module):
    """An LSQ quantizer with one step, or one per output channel (dim 0: weights only); the step
    initialises itself on the first tensor it sees, by the rule ``init`` (a :data:`STEP_INITS` key)."""

    def __init__(self, bits: int, signed: bool, per_sample: bool, per_channel: bool = False,
                 init: str = "lsq") -> None:
        super().__init__()
        if per_sample and per_channel:
            raise ValueError("a quantizer is per sample (activations) or per channel (weights), not both")
        if init not in STEP_INITS:
            raise ValueError(f"unknown step initialisation {init!r}")
        self.bits, self.signed, self.per_sample, self.per_channel = bits, signed, per_sample, per_channel
        self.init = init
        self.qn, self.qp = qrange(bits, signed)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def init_step(self, x: torch.Tensor) -> None:
        """The step from ``x`` by this quantizer's rule, per output channel (shape ``(C, 1, ...)``) when per
        channel."""
        with torch.no_grad():
            step = STEP_INITS[self.init](x.detach().float(), self.qn, self.qp, self.per_channel).clamp_min(MIN_STEP)
            if self.per_channel:
                self.step = nn.Parameter(step)
            else:
                self.step.fill_(step.item())
            self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            self.init_step(x)
        n = x[0].numel() if self.per_sample or self.per_channel else x.numel()
        return lsq(x, self.step, self.qn, self.qp, 1.0 / math.sqrt(n * self.qp))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes of ``x`` (as floats), exactly as :meth:`forward` rounds them."""
        return _codes(x, self.step, self.qn, self.qp)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}" + (", per_channel=True" if self.per_channel else "")


def keep_steps_positive(model: nn.Module) -> None:
    """Reflect every LSQ step of ``model`` that an update carried through zero (and keep it at least
    ``MIN_STEP``); call it after each optimizer update.

    A step is a scale and must stay positive, but SGD can carry it through zero (measured: one output
    channel's weight step of a W4A4 ResNet-20 ended at -0.0011 after 6 epochs), and a negative step has no
    integer export. Fake-quant with step -s equals fake-quant with s up to the one code by which the signed
    range is asymmetric, so the reflection keeps what the network computes, where a floor would not.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LsqQuantizer):
                m.step.abs_().clamp_(min=MIN_STEP)
