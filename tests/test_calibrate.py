"""Calibration: percentiles, the tmax rule and the state features against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from triseg.approx.calibrate import LayerHistogram, percentile, state_features, tmax_rule

def test_percentile_and_tmax_rule_match_numpy():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 90, 5000)
    counts = torch.bincount(torch.from_numpy(codes), minlength=256)
    nonzero = codes[codes > 0]
    for q in (10, 50, 90, 99, 99.9):
        assert percentile(counts * (torch.arange(256) > 0), q) == int(np.percentile(nonzero, q, method="inverted_cdf"))
    hist = LayerHistogram(counts)
    assert tmax_rule(hist, 127) == int(np.percentile(nonzero, 90, method="inverted_cdf")) + 10
    assert tmax_rule(hist, 127, 75, 2) == int(np.percentile(nonzero, 75, method="inverted_cdf")) + 2
    assert tmax_rule(LayerHistogram(torch.bincount(torch.tensor([200] * 10), minlength=256)), 127) == 127
    f = state_features(hist, 1, 4)
    assert f[0] == 0.5 and f[1] == pytest.approx(nonzero.mean() / 255, rel=1e-6)
    assert f[2] == pytest.approx(nonzero.std() / 128, rel=1e-6)
