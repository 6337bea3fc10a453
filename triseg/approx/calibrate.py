"""Calibration: per-layer histograms of INT8 activation codes, the tmax rule, layer state features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from tqdm import tqdm

from triseg.recorder import Recorder, attach

NUM_CODES = 256
TMAX_PERCENTILE = 90.0
TMAX_MARGIN = 10


@dataclass
class LayerHistogram:
    """Counts of codes 0..255 at one tap (``negative`` counts codes below zero)."""

    counts: torch.Tensor
    negative: int = 0

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.negative

    def nonzero(self) -> torch.Tensor:
        """Counts of the positive codes (index = code; index 0 is set to 0)."""
        c = self.counts.clone()
        c[0] = 0
        return c


def percentile(counts: torch.Tensor, q: float) -> int:
    """The q-th percentile (0-100) of codes given by ``counts``, numpy's 'inverted_cdf' method."""
    total = int(counts.sum())
    if total == 0:
        return 0
    cdf = torch.cumsum(counts, 0)
    target = q / 100.0 * total
    return int(torch.searchsorted(cdf.double(), torch.tensor([target], dtype=torch.float64)).item())


def tmax_rule(hist: LayerHistogram, top_code: int, q: float = TMAX_PERCENTILE, margin: int = TMAX_MARGIN) -> int:
    """The q-th percentile of the non-zero codes + margin (default p90 + 10), clamped to [0, top_code]."""
    return max(0, min(top_code, percentile(hist.nonzero(), q) + margin))


def code_stats(counts: torch.Tensor) -> dict[str, float]:
    """Mean, std and p90 of the codes given by ``counts``."""
    total = counts.sum().double()
    if total == 0:
        return {"mean": 0.0, "std": 0.0, "p90": 0.0}
    codes = torch.arange(len(counts), dtype=torch.float64)
    mean = (codes * counts).sum() / total
    var = ((codes - mean) ** 2 * counts).sum() / total
    return {"mean": float(mean), "std": float(var.sqrt()), "p90": float(percentile(counts, 90))}


def state_features(hist: LayerHistogram, index: int, num_layers: int) -> list[float]:
    """SimpleStateEncoder: depth ratio l/L, mean/255, std/128, p90/255 of the non-zero codes."""
    s = code_stats(hist.nonzero())
    return [(index + 1) / num_layers, s["mean"] / 255.0, s["std"] / 128.0, s["p90"] / 255.0]


@torch.no_grad()
def collect_histograms(model: nn.Module, tap_names: list[str],
                       inputs: Iterable[torch.Tensor], total: int | None = None) -> dict[str, LayerHistogram]:
    """Histograms of the codes at ``tap_names`` over the given input batches (no edits applied)."""
    hists = {name: LayerHistogram(torch.zeros(NUM_CODES, dtype=torch.long)) for name in tap_names}
    previous = model.recorder
    recorder = attach(model, Recorder())
    try:
        for x in tqdm(inputs, total=total, desc="calibrate", leave=False, mininterval=2.0):
            model(x)
            for name in tap_names:
                codes = recorder.records[name].codes.flatten().long()
                hists[name].negative += int((codes < 0).sum())
                hists[name].counts += torch.bincount(codes.clamp(0, NUM_CODES - 1)[codes >= 0], minlength=NUM_CODES)
    finally:
        attach(model, previous)
    return hists
