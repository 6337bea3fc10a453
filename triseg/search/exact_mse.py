"""Exact minimum-MSE maps: per layer, the legal tri-segment map with the least squared code error
over the calibration histogram, with no student evaluation.

For thresholds (t1, t2) the error is  sum_{c<=t1} h_c c^2 + sum_{t1<c<=t2} h_c (c-v1)^2 + sum_{t2<c<=tmax} h_c (c-v2)^2.
Prefix sums of h, h*c and h*c^2 give each segment's error for any value in O(1); the error is a convex
quadratic in the value, so the best integer value is the floor or the ceiling of the segment mean,
clamped to its legal range. Every legal (t1, t2) is enumerated, all in exact int64 arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch

from triseg.approx.config import T2_T1_GAP, T2_TMAX_GAP, LayerCodes, t1_range
from triseg.approx.lut import map_codes
from triseg.search.base import Score
from triseg.search.space import SearchSpace


def _best_value(n: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, lo: torch.Tensor,
                hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per segment: the integer v in [lo, hi] minimising s2 - 2 v s1 + v^2 n, and that error."""
    floor = torch.where(n > 0, torch.div(s1, n.clamp(min=1), rounding_mode="floor"), lo)
    cands = torch.stack([floor.clamp(lo, hi), (floor + 1).clamp(lo, hi)])
    costs = s2 - 2 * cands * s1 + cands * cands * n
    pick = costs.argmin(0, keepdim=True)
    return cands.gather(0, pick)[0], costs.gather(0, pick)[0]


def exact_mse_codes(counts: torch.Tensor, tmax: int) -> tuple[LayerCodes, int]:
    """The legal map of least squared error for codes distributed as ``counts`` (index = code), and that error.

    Ties go to the smallest t1, then t2, then value.
    """
    h = counts.to(torch.int64)[: tmax + 1]
    c = torch.arange(len(h), dtype=torch.int64)
    p0, p1, p2 = (torch.cumsum(h * c**k, 0) for k in range(3))
    t1s, t2s = [], []
    for t1 in t1_range(tmax):
        t2 = torch.arange(t1 + T2_T1_GAP, tmax - T2_TMAX_GAP + 1)
        t1s.append(torch.full_like(t2, t1))
        t2s.append(t2)
    t1, t2 = torch.cat(t1s), torch.cat(t2s)
    v1, e1 = _best_value(p0[t2] - p0[t1], p1[t2] - p1[t1], p2[t2] - p2[t1], t1 + 1, t2 - 1)
    v2, e2 = _best_value(p0[tmax] - p0[t2], p1[tmax] - p1[t2], p2[tmax] - p2[t2], t2 + 1, torch.full_like(t2, tmax))
    total = p2[t1] + e1 + e2
    i = int(total.argmin())
    return LayerCodes(int(t1[i]), int(v1[i]), int(t2[i]), int(v2[i]), tmax), int(total[i])


def squared_error(counts: torch.Tensor, c: LayerCodes) -> int:
    """The squared code error of map ``c`` over the histogram (direct sum, for checks)."""
    codes = torch.arange(len(counts), dtype=torch.int64)
    return int((counts.to(torch.int64) * (map_codes(codes, c) - codes) ** 2).sum())


def exact_mse_config(space: SearchSpace) -> dict[str, LayerCodes]:
    """The exact minimum-MSE map of every layer of the space."""
    return {layer: exact_mse_codes(space.histograms[layer].counts, space.tmax[layer])[0] for layer in space.layers}


class ExactMSEStrategy:
    """Proposes the exact minimum-MSE config every time (one evaluation is enough: use --episodes 1)."""

    name = "exact-mse"

    def __init__(self, space: SearchSpace) -> None:
        self.config = exact_mse_config(space)

    def ask(self, episode: int) -> dict[str, LayerCodes]:
        return dict(self.config)

    def tell(self, episode: int, config: dict[str, LayerCodes], score: Score) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
