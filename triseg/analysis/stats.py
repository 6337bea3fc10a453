"""Summary numbers of weights, activations and code histograms: streaming moments and percentiles."""

from __future__ import annotations

import math

import torch
from torch import nn

from triseg.approx.calibrate import LayerHistogram, percentile, tmax_rule

PERCENTILES = (10.0, 50.0, 90.0, 99.0, 99.9)


class RunningStats:
    """Mean, variance, min, max and share of zeros of a stream of tensors (Chan's merge, float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.zeros = 0

    def update(self, x: torch.Tensor) -> None:
        """Add every element of ``x``."""
        x = x.detach().flatten().double()
        n = x.numel()
        if n == 0:
            return
        mean = float(x.mean())
        m2 = float(((x - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.zeros += int((x == 0).sum())

    def as_dict(self) -> dict[str, float]:
        """mean, std, variance (population), min, max, zero_share and the element count."""
        if self.count == 0:
            return {"count": 0, "mean": 0.0, "std": 0.0, "variance": 0.0, "min": 0.0, "max": 0.0, "zero_share": 0.0}
        var = self.m2 / self.count
        return {"count": self.count, "mean": self.mean, "std": math.sqrt(var), "variance": var,
                "min": self.min, "max": self.max, "zero_share": self.zeros / self.count}


def _weight_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Conv/Linear weights inside ``module`` (float, QAT or converted INT8, dequantized); BN excluded."""
    out = []
    for mod in module.modules():
        w = getattr(mod, "weight", None)
        if callable(w) and not isinstance(w, torch.Tensor):  # converted quantized conv/linear
            w = w()
            out.append(w.dequantize() if w.is_quantized else w)
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            out.append(w)
    return out


def weight_stats(model: nn.Module, layers: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Per layer, stats of the conv/linear weights of the module the tap sees; layers without any are skipped."""
    stats, skipped = {}, {}
    for layer in layers:
        path = model.TAP_MODULES[layer]
        tensors = _weight_tensors(model.get_submodule(path))
        if not tensors:
            skipped[layer] = f"module {path} has no conv/linear weights (the tap follows an add)"
            continue
        rs = RunningStats()
        for w in tensors:
            rs.update(w)
        stats[layer] = {**rs.as_dict(), "module": path, "shapes": [list(w.shape) for w in tensors]}
    return stats, skipped


def code_percentiles(hist: LayerHistogram, top_code: int) -> dict[str, object]:
    """Percentiles of the positive codes, and the tmax that the p90 + 10 rule gives."""
    nz = hist.nonzero()
    return {
        "percentiles": {f"p{q:g}": percentile(nz, q) for q in PERCENTILES},
        "tmax_rule": tmax_rule(hist, top_code),
        "activations": hist.total,
        "positive": int(nz.sum()),
        "zero": int(hist.counts[0]),
        "negative": hist.negative,
    }
