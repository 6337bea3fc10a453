"""The search space of one model: approximable layers, their tmax and state features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from triseg.approx.calibrate import (TMAX_MARGIN, TMAX_PERCENTILE, LayerHistogram, collect_histograms,
                                     state_features, tmax_rule)
from triseg.approx.config import MIN_TMAX, LayerCodes, approximable, t1_range, t2_range, v1_range, v2_range
from triseg.data import Split, batches


@dataclass
class SearchSpace:
    """Layers a search may approximate, with calibration facts about each."""

    layers: list[str]
    tmax: dict[str, int]
    skipped: dict[str, str]
    features: torch.Tensor
    histograms: dict[str, LayerHistogram]
    top_code: int
    dynamic: bool = False

    def tmax_range(self) -> range:
        """The tmax a searched-tmax strategy may choose: [10, the backend's top code]."""
        return range(MIN_TMAX, self.top_code + 1)

    def random_config(self, gen: torch.Generator) -> dict[str, LayerCodes]:
        """A uniformly sampled legal config (each code uniform given the earlier ones)."""

        def pick(r: range) -> int:
            return r.start + int(torch.randint(len(r), (1,), generator=gen))

        out = {}
        for layer in self.layers:
            tmax = pick(self.tmax_range()) if self.dynamic else self.tmax[layer]
            t1 = pick(t1_range(tmax))
            t2 = pick(t2_range(t1, tmax))
            out[layer] = LayerCodes(t1, pick(v1_range(t1, t2)), t2, pick(v2_range(t2, tmax)), tmax)
        return out


def build_space(model: nn.Module, train: Split, calib_batches: int, batch_size: int, top_code: int,
                seed: int = 0, tmax_percentile: float = TMAX_PERCENTILE, tmax_margin: int = TMAX_MARGIN,
                dynamic: bool = False) -> SearchSpace:
    """Calibrate on ``calib_batches`` training batches and apply the tmax rule to every layer.

    With ``dynamic`` (a searched tmax) every layer is searchable and the rule's tmax, raised to at
    least 10, is only the starting point.
    """
    all_layers = model.layers()
    taps = [model.tap_name(layer) for layer in all_layers]
    gen = torch.Generator().manual_seed(seed)
    inputs = (x for i, (x, _) in enumerate(batches(train, batch_size, shuffle=True, gen=gen)) if i < calib_batches)
    hists = collect_histograms(model, taps, inputs, total=calib_batches)
    by_layer = {layer: hists[tap] for layer, tap in zip(all_layers, taps)}
    tmax = {layer: tmax_rule(h, top_code, tmax_percentile, tmax_margin) for layer, h in by_layer.items()}
    if dynamic:
        tmax = {layer: max(t, MIN_TMAX) for layer, t in tmax.items()}
    layers = [layer for layer in all_layers if approximable(tmax[layer])]
    skipped = {layer: f"tmax {tmax[layer]} < 10 leaves no legal map" for layer in all_layers if layer not in layers}
    feats = [state_features(by_layer[layer], all_layers.index(layer), len(all_layers)) for layer in layers]
    return SearchSpace(layers, {k: tmax[k] for k in layers}, skipped,
                       torch.tensor(feats, dtype=torch.float32).reshape(-1, 4), by_layer, top_code, dynamic)
