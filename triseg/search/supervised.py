"""The original tool's supervised method: tri-segment maps learned by gradient descent on KD.

Each layer's map is a differentiable module with parameters t1_base, dt12, dt2m, v1, v2:
t1 = softplus(t1_base), t2 = t1 + softplus(dt12), tmax = t2 + softplus(dt2m) keep the order, and
every code is rounded to an integer with a straight-through estimator. Codes c > 0 are mapped by soft
gates g_k = sigmoid((c - t_k - 1/2) / beta):  y = v1 (g1 - g2) + v2 (g2 - g_max) + c g_max, so at
low beta (or ``beta=None``, hard gates) the module equals the integer map exactly. The loss is
KD(student, teacher) - alpha * coverage (the soft share of activations in (0, tmax]).

The student is the integer simulation of the INT8 model (:func:`triseg.approx.intsim.simulate`),
whose forward pass reproduces the INT8 kernels bit for bit. Its ``torch.round`` calls have zero
gradient, which blocks every path from a tap to the logits, so training runs inside
:class:`STERound`: the forward pass is unchanged and the rounding passes gradients straight through
(``round_grad='none'`` keeps the zero gradients, to measure what they do). Per-layer gradient norms and
code trajectories go to TensorBoard and to the returned history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from tqdm import tqdm

from triseg.approx.calibrate import code_stats
from triseg.approx.config import CODES, MIN_TMAX, LayerCodes
from triseg.approx.losses import kd_loss
from triseg.data import Split, batches
from triseg.errors import TrisegError
from triseg.options import POSITIVE, Options, at_least, between, option
from triseg.recorder import Recorder, attach
from triseg.search.legal import project
from triseg.search.space import SearchSpace

def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class STERound(TorchFunctionMode):
    """Within this mode every ``torch.round`` (e.g. inside the integer simulation) is :func:`ste_round`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.round, torch.Tensor.round) and not kwargs:
            return ste_round(args[0])
        return func(*args, **kwargs)


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class SoftTriSegment(nn.Module):
    """One layer's differentiable map on integer codes."""

    def __init__(self, t1: float, t2: float, tmax: float, v1: float, v2: float, learn_tmax: bool = True) -> None:
        super().__init__()
        self.fixed_tmax = None if learn_tmax else float(tmax)
        self.t1_base = nn.Parameter(torch.tensor(_inv_softplus(t1)))
        self.dt12 = nn.Parameter(torch.tensor(_inv_softplus(t2 - t1)))
        self.dt2m = nn.Parameter(torch.tensor(_inv_softplus(tmax - t2)))
        self.v1 = nn.Parameter(torch.tensor(float(v1)))
        self.v2 = nn.Parameter(torch.tensor(float(v2)))

    @classmethod
    def from_tmax(cls, tmax: float, learn_tmax: bool = True) -> "SoftTriSegment":
        """The original initialisation (t1 = 0.35 tmax, t2 = 0.7 tmax, values at segment middles)."""
        tmax = max(float(tmax), float(MIN_TMAX))
        t1, t2 = 0.35 * tmax, 0.7 * tmax
        return cls(t1, t2, tmax, (t1 + t2) / 2, (t2 + tmax) / 2, learn_tmax)

    @classmethod
    def from_codes(cls, c: LayerCodes) -> "SoftTriSegment":
        return cls(c.t1, c.t2, c.tmax, c.v1, c.v2)

    def real_codes(self) -> dict[str, torch.Tensor]:
        """The unrounded t1, v1, t2, v2, tmax."""
        t1 = F.softplus(self.t1_base)
        t2 = t1 + F.softplus(self.dt12)
        tmax = t2 + F.softplus(self.dt2m) if self.fixed_tmax is None else torch.tensor(self.fixed_tmax)
        return {"t1": t1, "v1": self.v1, "t2": t2, "v2": self.v2, "tmax": tmax}

    def forward(self, c: torch.Tensor, beta: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mapped codes and the soft share of codes in (0, tmax]; ``beta=None`` uses hard gates."""
        r = {k: ste_round(v) for k, v in self.real_codes().items()}

        def gate(t: torch.Tensor) -> torch.Tensor:
            z = c - t - 0.5
            return (z > 0).to(c.dtype) if beta is None else torch.sigmoid(z / beta)

        g1, g2, gm = gate(r["t1"]), gate(r["t2"]), gate(r["tmax"])
        pos = c > 0
        y = torch.where(pos, r["v1"] * (g1 - g2) + r["v2"] * (g2 - gm) + c * gm, c)
        return y, (pos * (1 - gm)).mean()

    def legal(self, top_code: int) -> LayerCodes:
        """The learned codes rounded, tmax clamped to [10, top_code], the rest projected into their ranges."""
        r = {k: float(v.detach()) for k, v in self.real_codes().items()}
        tmax = int(min(max(round(r["tmax"]), MIN_TMAX), top_code))
        return project(r["t1"], r["v1"], r["t2"], r["v2"], tmax)


class SoftMaps(nn.Module):
    """The soft maps of every layer and the recorder edit that applies them at the taps."""

    def __init__(self, maps: dict[str, SoftTriSegment]) -> None:
        super().__init__()
        self.layers = list(maps)
        self.maps = nn.ModuleDict({k.replace(".", "__"): m for k, m in maps.items()})
        self.beta: float | None = None
        self.coverage: list[torch.Tensor] = []

    def __getitem__(self, layer: str) -> SoftTriSegment:
        return self.maps[layer.replace(".", "__")]

    def recorder(self, model: nn.Module) -> Recorder:
        """A recorder applying the soft maps (codes = x / scale, rounded) and collecting coverage."""

        def edit(layer: str):
            def apply(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
                y, cov = self[layer](torch.round(x / scale), self.beta)
                self.coverage.append(cov)
                return y * scale
            return apply

        return Recorder({model.tap_name(layer): edit(layer) for layer in self.layers}, keep=set())

    def take_coverage(self) -> torch.Tensor:
        """Mean coverage over the layers of the last forward pass (and reset)."""
        cov, self.coverage = torch.stack(self.coverage).mean(), []
        return cov

    def config(self, top_code: int) -> dict[str, LayerCodes]:
        return {layer: self[layer].legal(top_code) for layer in self.layers}


@dataclass
class SupervisedConfig(Options):
    """Optimisation settings (the original's: Adam, 3-5 epochs, beta annealed by 0.85 per epoch)."""

    epochs: int = option(5, "passes over the training split", check=POSITIVE)
    steps_per_epoch: int | None = option(None, "cap on batches per epoch (default: all)", check=POSITIVE)
    lr: float = option(0.05, "Adam learning rate, in codes", check=between(0, 1000, low_open=True))
    alpha: float = option(0.05, "weight of the coverage term", check=at_least(0))
    beta0: float = option(1.0, "initial gate temperature in codes", check=between(1e-4, 1e4))
    beta_min: float = option(0.2, "floor of the temperature", check=between(1e-4, 1e4))
    beta_decay: float = option(0.85, "temperature factor per epoch", check=between(0, 1, low_open=True))
    round_grad: str = option("ste", "gradient of the simulation's rounding: straight-through or none (zero)",
                             choices=("ste", "none"))
    tmax: str = option("learn", "learn tmax from p90 (the original) or fix it at the search's rule",
                       choices=("learn", "fixed"))
    log_every: int = option(20, "log gradients and codes every N steps", check=POSITIVE)


@dataclass
class SupervisedOutcome:
    """Legal configs at the end of each epoch, the final one, and the measured trajectories."""

    epoch_configs: list[dict[str, LayerCodes]]
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0


def initial_maps(space: SearchSpace, tmax: str = "learn") -> SoftMaps:
    """Soft maps initialised at tmax = the calibration p90 of the non-zero codes, learned (the original), or
    with tmax fixed at the search's rule (p90 + 10) so that coverage matches the searches."""
    if tmax == "fixed":
        return SoftMaps({layer: SoftTriSegment.from_tmax(space.tmax[layer], learn_tmax=False)
                         for layer in space.layers})
    return SoftMaps({layer: SoftTriSegment.from_tmax(code_stats(space.histograms[layer].nonzero())["p90"])
                     for layer in space.layers})


def train_supervised(sim: nn.Module, space: SearchSpace, train: Split, s: SupervisedConfig, batch_size: int = 128,
                     kd_T: float = 2.0, seed: int = 0, writer=None,
                     teacher: nn.Module | None = None) -> SupervisedOutcome:
    """Learn the maps on ``sim`` (the INT8 model's integer simulation) against the unmapped model.

    ``teacher`` (default: ``sim`` without maps) gives the target logits; the INT8 model itself is faster.
    """
    teacher = sim if teacher is None else teacher
    maps = initial_maps(space, s.tmax)
    opt = torch.optim.Adam(maps.parameters(), lr=s.lr)
    gen = torch.Generator().manual_seed(seed)
    recorder = maps.recorder(sim)
    out = SupervisedOutcome([])
    per_epoch = len(train) // batch_size
    steps = per_epoch if s.steps_per_epoch is None else min(per_epoch, s.steps_per_epoch)
    bar = tqdm(total=s.epochs * steps, desc="supervised", mininterval=2.0, dynamic_ncols=True)
    prev = maps.config(space.top_code)
    for epoch in range(1, s.epochs + 1):
        maps.beta = max(s.beta_min, s.beta0 * s.beta_decay ** (epoch - 1))
        for i, (x, _) in enumerate(batches(train, batch_size, shuffle=True, gen=gen, drop_last=True)):
            if i >= steps:
                break
            with torch.no_grad():
                attach(sim, None)
                attach(teacher, None)
                target = teacher(x)
            attach(sim, recorder)
            if s.round_grad == "ste":
                with STERound():
                    student = sim(x)
            else:
                student = sim(x)
            attach(sim, None)
            kd = kd_loss(student.float(), target.float(), kd_T)
            cov = maps.take_coverage()
            loss = kd - s.alpha * cov
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise TrisegError(f"supervised training diverged (loss {loss_value}) at step "
                                  f"{out.steps + 1}: lower --lr or raise --beta0")
            opt.zero_grad()
            loss.backward()
            grads = {layer: {name: float(p.grad) if p.grad is not None else 0.0
                             for name, p in maps[layer].named_parameters()} for layer in maps.layers}
            opt.step()
            out.steps += 1
            config = maps.config(space.top_code)
            moved = sum(config[k] != prev[k] for k in config)
            prev = config
            if out.steps % s.log_every == 0 or i == steps - 1:
                row = {"step": out.steps, "epoch": epoch, "beta": maps.beta, "kd": float(kd.detach()),
                       "coverage": float(cov.detach()), "loss": loss_value,
                       "layers_changed_since_last_step": moved,
                       "grad_norm": {k: math.sqrt(sum(g * g for g in v.values())) for k, v in grads.items()},
                       "grads": grads,
                       "codes": {k: {f: round(float(v.detach()), 3) for f, v in maps[k].real_codes().items()}
                                 for k in maps.layers},
                       "legal_codes": {k: vars(c) for k, c in config.items()}}
                out.history.append(row)
                if writer is not None:
                    for key in ("kd", "coverage", "loss", "beta"):
                        writer.add_scalar(f"supervised/{key}", row[key], out.steps)
                    for layer in maps.layers:
                        writer.add_scalar(f"grad_norm/{layer}", row["grad_norm"][layer], out.steps)
                        for f in CODES:
                            writer.add_scalar(f"codes/{layer}/{f}", row["codes"][layer][f], out.steps)
            bar.update()
            bar.set_postfix(kd=f"{float(kd.detach()):.4f}", cov=f"{float(cov.detach()):.3f}", refresh=False)
        out.epoch_configs.append(maps.config(space.top_code))
    bar.close()
    return out
