"""KD and attention transfer against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from triseg.approx.losses import at_loss, attention_map, kd_loss

def test_kd_against_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.5, 2.5, 0.0]])
    T = 2.0
    ps, pt = np.exp(s.numpy() / T), np.exp(t.numpy() / T)
    ps, pt = ps / ps.sum(), pt / pt.sum()
    hand = float((pt * (np.log(pt) - np.log(ps))).sum() * T * T)
    assert kd_loss(s, t, T).item() == pytest.approx(hand, rel=1e-5)
    assert kd_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_transfer_against_hand_computation():
    fs = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])  # (1, 2 channels, 1, 2)
    ft = torch.tensor([[[[0.0, 1.0]], [[1.0, 1.0]]]])
    a_s = np.array([1 + 1, 0 + 4], dtype=float)
    a_t = np.array([0 + 1, 1 + 1], dtype=float)
    a_s, a_t = a_s / np.linalg.norm(a_s), a_t / np.linalg.norm(a_t)
    hand = float(((a_s - a_t) ** 2).mean())
    assert at_loss([attention_map(fs)], [attention_map(ft)]).item() == pytest.approx(hand, rel=1e-5)
    fc = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(attention_map(fc), torch.tensor([[0.6, 0.8]]))
